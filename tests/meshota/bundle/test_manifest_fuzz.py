"""Hypothesis: whatever a signed manifest or an archive holds, the checks answer with BundleError
(one line) or accept it; never another exception."""

from __future__ import annotations

import copy
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshota.bundle import BundleError
from meshota.bundle._archive import open_archive
from meshota.bundle._manifest import check_bundle_manifest, check_status_manifest

SHA = "ab" * 32
GOOD_BUNDLE: dict[str, Any] = {
    "schema": "meshota-bundle/1",
    "kind": "deployment",
    "id": "b1",
    "name": "n",
    "version": 1,
    "artifacts": [
        {
            "name": "fw",
            "digest": f"sha256:{SHA}",
            "size": 1,
            "device_types": ["t"],
            "path": f"artifacts/{SHA}.mender",
        }
    ],
    "deployments": [
        {"key": "d", "name": "d", "artifact_name": "fw", "force": False, "phases": [],
         "target": {"groups": ["g"], "devices": [], "device_types": ["t"], "submeshes": []}}
    ],
}  # fmt: skip
GOOD_STATUS: dict[str, Any] = {
    "schema": "meshota-status/1",
    "kind": "status",
    "site": "s",
    "version": 1,
    "statuses": [{"deployment": "d", "device": "{}", "status": "success", "substate": None, "log": []}],
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutated(good: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    m = copy.deepcopy(good)
    path = data.draw(st.sampled_from(_paths(m)))
    node = m
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = data.draw(json_values)
    return m


def test_the_good_manifests_pass() -> None:
    check_bundle_manifest(copy.deepcopy(GOOD_BUNDLE))
    assert len(check_status_manifest(copy.deepcopy(GOOD_STATUS))) == 1


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_bundle_manifest_garbage(data: st.DataObject) -> None:
    try:
        check_bundle_manifest(_mutated(GOOD_BUNDLE, data))
    except BundleError as exc:
        assert "\n" not in exc.message


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_status_manifest_garbage(data: st.DataObject) -> None:
    try:
        check_status_manifest(_mutated(GOOD_STATUS, data))
    except BundleError as exc:
        assert "\n" not in exc.message


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=4096), names=st.lists(st.text(min_size=1, max_size=40), max_size=4))
def test_archive_garbage(tmp_path: Path, raw: bytes, names: list[str]) -> None:
    path = tmp_path / "x.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    for data in (raw, buf.getvalue(), buf.getvalue()[: len(raw)]):
        path.write_bytes(data)
        try:
            open_archive(path).close()
        except BundleError as exc:
            assert "\n" not in exc.message


@pytest.mark.parametrize("field", ["schema", "kind"])
def test_schema_and_kind_are_checked(field: str) -> None:
    with pytest.raises(BundleError, match="schema must be"):
        check_bundle_manifest({**GOOD_BUNDLE, field: GOOD_STATUS[field]})
    with pytest.raises(BundleError, match="schema must be"):
        check_status_manifest({**GOOD_STATUS, field: GOOD_BUNDLE[field]})
