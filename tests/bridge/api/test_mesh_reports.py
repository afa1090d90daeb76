"""A root's stream progress report (bridge/api/_mesh_reports.py, wire/SPEC.md §7) through the real
HTTP API on SQLite and PostgreSQL: stored only for a stream and nodes the root may speak for,
newest per (root, stream), bounded per root, shown by the mesh view as a tree per stream."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.api import _mesh_reports
from bridge.api._throttle import TokenBuckets
from firmware_proto.aio.device_http import HttpDevice
from tests.support.mender import ADMIN, RunningServer, make_artifact
from tests.support.ui import (
    ADMIN_B,
    UiFleet,
    add_devices,
    check_in,
    post_mesh_report,
    report,
    start_ui_server,
    stream_of,
)
from wire.mesh_report import FINAL, FINAL_COMPLETE, MAX_RECORD, MeshNode, MeshReport, encode_mesh_report

EXT = "/api/meshota/v1/management"


def _report(sid: bytes, aid: str, nodes: list[tuple[str, int, int]], *, flags: int = 0) -> bytes:
    listed = tuple(MeshNode(d, s, m) for d, s, m in nodes)
    return encode_mesh_report(
        MeshReport(sid, aid, "the root's own name for it", flags, 2, 70, 50_000, 60, len(listed) + 1, listed)
    )


async def _http_report(url: str, token: str, body: bytes) -> int:
    dev = HttpDevice(url, "02:00:00:00:00:09")
    dev.token = token
    try:
        assert dev.mesh_report_room() == MAX_RECORD
        return await dev.mesh_report(body)
    finally:
        await dev.aclose()


def _deploy(api: httpx.Client, tmp: Path, group: str, name: str, upload: bool) -> str:
    if upload:
        art = make_artifact(tmp, name)
        files = {"artifact": ("a.mender", art.read_bytes(), "application/octet-stream")}
        assert api.post("/api/management/v1/deployments/artifacts", files=files).status_code == 201
    r = api.post(
        f"/api/management/v1/deployments/deployments/group/{group}",
        json={"name": group, "artifact_name": name},
    )
    assert r.status_code == 201, r.text
    return str(r.headers["location"].rsplit("/", 1)[-1])


def _reports(api: httpx.Client) -> list[dict[str, Any]]:
    r = api.get(f"{EXT}/mesh")
    assert r.status_code == 200, r.text
    return list(r.json()["reported_by_roots"])


def test_report_stored_checked_nested_and_bounded(
    running: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = running.url
    fleet = UiFleet(running.server, url, "", tokens={ADMIN[0]: running.token})
    root, relay, leaf = add_devices(fleet, 3, group="g1", admin=ADMIN)
    (stranger,) = add_devices(fleet, 1, group="g2", admin=ADMIN)
    with running.client() as api:
        dep = _deploy(api, tmp_path, "g1", "release-2", upload=True)
        _deploy(api, tmp_path, "g2", "release-2", upload=False)
        (undeployed,) = add_devices(fleet, 1, group="g1", admin=ADMIN)  # joined g1 after the deployment
        for d in (root, relay, leaf, stranger):
            assert check_in(url, d) is not None
        aid = api.get("/api/management/v1/deployments/deployments/" + dep).json()["artifacts"][0]
        sid = stream_of(url, root, aid)
        assert _reports(api) == []

        # refused, nothing stored: each names what is wrong
        refusals = [
            (None, _report(sid, aid, []), 401, "token"),
            (root, b"M\x01garbage", 400, "mesh report"),
            (root, _report(b"\x01" * 8, aid, []), 403, "no chunk map the server signed"),
            (root, _report(sid, "no-such-artifact", []), 403, "not deployed through this root"),
            (root, _report(sid, aid, [(stranger.id, 0, 3)]), 403, "not in this root's group g1"),
            (root, _report(sid, aid, [("not-a-device", 0, 3)]), 403, "no accepted device"),
            (root, _report(sid, aid, [(undeployed.id, 0, 3)]), 403, "no deployment of artifact"),
            (stranger, _report(sid, aid, [(leaf.id, 0, 3)]), 403, "not in this root's group g2"),
        ]
        for dev, body, status, message in refusals:
            r = post_mesh_report(url, dev, body)
            assert r.status_code == status and message in r.json()["error"], (message, r.text)
        assert _reports(api) == []

        # the root reports itself and the relay; the relay reports the leaf: a tree of one stream
        assert (
            post_mesh_report(url, root, _report(sid, aid, [(relay.id, 0, 12), (root.id, 1, 0)])).status_code
            == 204
        )
        assert post_mesh_report(url, relay, _report(sid, aid, [(leaf.id, 3, 70)])).status_code == 204
        (stream,) = _reports(api)
        assert stream["stream_id"] == sid.hex() and stream["artifact_id"] == aid
        assert stream["artifact_name"] == "release-2"  # the server's name, not the root's
        (top,) = stream["roots"]
        assert top["root"] == root.id and top["reported_by"] == f"root {root.id}"
        assert (top["bytes_on_air"], top["frames_on_air"], top["blocks"], top["members"]) == (
            50_000,
            60,
            70,
            3,
        )
        nodes = {n["id"]: n for n in top["nodes"]}
        assert (nodes[relay.id]["state"], nodes[relay.id]["missing"], nodes[relay.id]["held"]) == (
            "receiving",
            12,
            58,
        )
        assert nodes[root.id]["state"] == "done" and nodes[root.id]["report"] is None
        sub = nodes[relay.id]["report"]
        assert sub["root"] == relay.id and sub["nodes"][0]["id"] == leaf.id
        assert sub["nodes"][0]["state"] == "needs-head" and sub["nodes"][0]["held"] == 0

        # a user whose role reaches group g2 only sees no report of g1's roots; one on g1 sees them
        for group in ("g1", "g2"):
            role = {"name": f"see-{group}", "permissions": ["devices:read"], "groups": [group]}
            assert api.post("/api/management/v1/useradm/roles", json=role).status_code in (200, 201)
            email, password = f"{group}@example.com", "secret-pass-1"
            user = {"email": email, "password": password, "roles": [f"see-{group}"]}
            assert api.post("/api/management/v1/useradm/users", json=user).status_code == 201
            login = httpx.post(f"{url}/api/management/v1/useradm/auth/login", auth=(email, password))
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {login.text}"}) as limited:
                seen = [t["root"] for st in _reports(limited) for t in st["roots"]]
            assert seen == ([root.id] if group == "g1" else []), group

        # newer replaces older per (root, stream)
        final = _report(sid, aid, [(relay.id, 1, 0)], flags=FINAL | FINAL_COMPLETE)
        assert post_mesh_report(url, root, final).status_code == 204
        (stream,) = _reports(api)
        top = next(t for t in stream["roots"] if t["root"] == root.id)
        assert top["final"] and top["complete"] and [n["missing"] for n in top["nodes"]] == [0]

        # a root that reports too often is throttled (per-peer cap), others are not
        monkeypatch.setattr(running.server.context, "mesh_reports_by_root", TokenBuckets(1, 3600.0, 10))
        assert post_mesh_report(url, root, final).status_code == 204
        r = post_mesh_report(url, root, final)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert post_mesh_report(url, relay, _report(sid, aid, [(leaf.id, 1, 0)])).status_code == 204
        monkeypatch.setattr(running.server.context, "mesh_reports_by_root", TokenBuckets(100, 1.0, 10))

        # at most STREAMS_PER_ROOT streams per root: the oldest goes
        monkeypatch.setattr(_mesh_reports, "STREAMS_PER_ROOT", 1)
        sid2 = stream_of(url, root, aid, chunk_size=512)
        assert post_mesh_report(url, root, _report(sid2, aid, [])).status_code == 204
        mine = [
            (s["stream_id"], t["root"]) for s in _reports(api) for t in s["roots"] if t["root"] == root.id
        ]
        assert mine == [(sid2.hex(), root.id)]


def test_reports_stay_in_their_organisation(tmp_path: Path) -> None:
    fleet = start_ui_server(tmp_path)
    try:
        root, node = add_devices(fleet, 2, group="g1")
        (root_b,) = add_devices(fleet, 1, group="g1", admin=ADMIN_B, tenant=fleet.tenant_b_token)
        with fleet.api() as api:
            dep = _deploy(api, tmp_path, "g1", "release-2", upload=True)
            for d in (root, node):
                assert check_in(fleet.url, d) is not None
            aid = api.get("/api/management/v1/deployments/deployments/" + dep).json()["artifacts"][0]
            sid = stream_of(fleet.url, root, aid)
            assert post_mesh_report(fleet.url, root, _report(sid, aid, [(node.id, 0, 1)])).status_code == 204
            assert len(_reports(api)) == 1
        # organisation B's root cannot speak for A's stream or A's nodes, and B's admin sees nothing of A
        r = post_mesh_report(fleet.url, root_b, _report(sid, aid, [(node.id, 0, 1)]))
        assert r.status_code == 403 and "not deployed through this root" in r.json()["error"]
        with fleet.api(ADMIN_B) as api_b:
            assert _reports(api_b) == []
    finally:
        fleet.server.stop()


def test_final_report_of_a_root_that_is_no_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A root streams for its nodes without being a target itself (``meshota demo --live``): its
    final report usually arrives after the last node's success; taken for FINAL_GRACE seconds."""
    fleet = start_ui_server(tmp_path)
    try:
        (node,) = add_devices(fleet, 1, group="g1")
        (root,) = add_devices(fleet, 1, group=None)
        with fleet.api() as api:
            dep = _deploy(api, tmp_path, "g1", "release-2", upload=True)
            assert check_in(fleet.url, node) == dep
            aid = api.get("/api/management/v1/deployments/deployments/" + dep).json()["artifacts"][0]
            sid = stream_of(fleet.url, root, aid)  # the chunk-map rule: still being deployed to node
            # the root's own HTTP device session (firmware_proto's HttpDevice, as RootRunner sends it)
            assert (
                asyncio.run(_http_report(fleet.url, root.token, _report(sid, aid, [(node.id, 0, 5)]))) == 204
            )
            report(fleet.url, node, dep, "success")  # every target finished
            final = _report(sid, aid, [(node.id, 1, 0)], flags=FINAL | FINAL_COMPLETE)
            monkeypatch.setattr(_mesh_reports, "FINAL_GRACE", -1.0)
            r = post_mesh_report(fleet.url, root, final)
            assert r.status_code == 403 and "not deployed through this root" in r.json()["error"]
            monkeypatch.setattr(_mesh_reports, "FINAL_GRACE", 600.0)
            assert post_mesh_report(fleet.url, root, final).status_code == 204
            (stream,) = _reports(api)
            (top,) = stream["roots"]
            assert top["root"] == root.id and top["final"] and top["complete"]
            assert [(n["id"], n["state"]) for n in top["nodes"]] == [(node.id, "done")]
    finally:
        fleet.server.stop()
