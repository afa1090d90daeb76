"""``bundle.json`` and ``status.json``: what a bundle says, checked field by field after its
signatures (a signed manifest is still input: every field has a type and a size limit).

``bundle.json`` follows CNAB's thick-bundle shape (name, version, the artifacts with digests,
the files flat under ``artifacts/``) with meshota's targeting: each deployment names one
artifact and selects devices by static group, by device identity, by device type and by
sub-mesh (the device's ``mesh_id`` inventory attribute). docs/bundles.md has both schemas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ._errors import BundleError

__all__ = [
    "BUNDLE_SCHEMA",
    "STATUS_SCHEMA",
    "ManifestLimits",
    "check_bundle_manifest",
    "check_mix_and_match",
    "check_status_manifest",
]

BUNDLE_SCHEMA = "meshota-bundle/1"
STATUS_SCHEMA = "meshota-status/1"
_SHA = re.compile(r"[0-9a-f]{64}")
# what a device may report (bridge.api DEVICE_STATUSES) plus "pending": nothing reported yet
_STATUSES = {
    "pending", "downloading", "installing", "rebooting", "success", "failure", "already-installed",
    "noartifact", "aborted", "decommissioned",
    "pause_before_installing", "pause_before_rebooting", "pause_before_committing",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ManifestLimits:
    name_max: int = 255
    artifacts_max: int = 256
    deployments_max: int = 256
    selectors_max: int = 100_000  # groups + devices + device types + sub-meshes of one deployment
    identity_max: int = 4096  # one device's identity data (JSON text)
    statuses_max: int = 1_000_000
    log_messages_max: int = 1000
    log_field_max: int = 4096


def _str(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise BundleError(f"{what} must be a string of 1..{limit} characters")
    return value


def _strs(value: Any, what: str, limit: int, count: int) -> list[str]:
    if not isinstance(value, list) or len(value) > count:
        raise BundleError(f"{what} must be an array of at most {count} strings")
    return [_str(v, f"each of {what}", limit) for v in value]


def check_bundle_manifest(m: dict[str, Any], lim: ManifestLimits | None = None) -> None:
    """Refuse a ``bundle.json`` that is not well-formed (types, sizes, references)."""
    lim = lim or ManifestLimits()
    if m.get("schema") != BUNDLE_SCHEMA or m.get("kind") != "deployment":
        raise BundleError(f"bundle.json: schema must be {BUNDLE_SCHEMA!r} and kind 'deployment'")
    _str(m.get("id"), "bundle.json id", 64)
    _str(m.get("name"), "bundle.json name", lim.name_max)
    artifacts = m.get("artifacts")
    if not isinstance(artifacts, list) or not 1 <= len(artifacts) <= lim.artifacts_max:
        raise BundleError(f"bundle.json artifacts must be an array of 1..{lim.artifacts_max}")
    names: dict[str, list[str]] = {}
    for a in artifacts:
        if not isinstance(a, dict):
            raise BundleError("bundle.json: each artifact is an object")
        name = _str(a.get("name"), "artifact name", lim.name_max)
        digest = _str(a.get("digest"), "artifact digest", 80)
        if not digest.startswith("sha256:") or not _SHA.fullmatch(digest[7:]):
            raise BundleError(f"artifact {name}: digest must be sha256:<64 hex>")
        if a.get("path") != f"artifacts/{digest[7:]}.mender":
            raise BundleError(f"artifact {name}: path must be artifacts/<sha256>.mender")
        if not isinstance(a.get("size"), int) or a["size"] < 0:
            raise BundleError(f"artifact {name}: size must be a non-negative integer")
        types = _strs(a.get("device_types"), f"artifact {name} device_types", lim.name_max, 64)
        if not types:
            raise BundleError(f"artifact {name}: device_types is empty")
        names.setdefault(name, []).extend(types)
    deployments = m.get("deployments")
    if not isinstance(deployments, list) or not 1 <= len(deployments) <= lim.deployments_max:
        raise BundleError(f"bundle.json deployments must be an array of 1..{lim.deployments_max}")
    keys = set()
    for d in deployments:
        if not isinstance(d, dict):
            raise BundleError("bundle.json: each deployment is an object")
        key = _str(d.get("key"), "deployment key", 64)
        if key in keys:
            raise BundleError(f"deployment key {key} appears twice")
        keys.add(key)
        _str(d.get("name"), f"deployment {key} name", lim.name_max)
        artifact = _str(d.get("artifact_name"), f"deployment {key} artifact_name", lim.name_max)
        if artifact not in names:
            raise BundleError(
                f"deployment {key} names artifact {artifact!r}, which the bundle does not carry"
            )
        if not isinstance(d.get("force", False), bool):
            raise BundleError(f"deployment {key}: force must be a boolean")
        target = d.get("target")
        if not isinstance(target, dict):
            raise BundleError(f"deployment {key}: target must be an object")
        total = 0
        for field, limit in (
            ("groups", 1024),
            ("devices", lim.identity_max),
            ("device_types", 255),
            ("submeshes", 255),
        ):
            total += len(
                _strs(target.get(field, []), f"deployment {key} target.{field}", limit, lim.selectors_max)
            )
        if total > lim.selectors_max:
            raise BundleError(f"deployment {key}: more than {lim.selectors_max} selectors")
        if not target.get("groups") and not target.get("devices"):
            raise BundleError(f"deployment {key}: target names no group and no device")
        phases = d.get("phases", [])
        if not isinstance(phases, list) or len(phases) > 64 or not all(isinstance(p, dict) for p in phases):
            raise BundleError(f"deployment {key}: phases must be an array of at most 64 objects")
        if not isinstance(d.get("retries", 0), int) or isinstance(d.get("retries", 0), bool):
            raise BundleError(f"deployment {key}: retries must be an integer")
        for field in ("gates", "install"):
            if d.get(field) is not None and not isinstance(d[field], dict):
                raise BundleError(f"deployment {key}: {field} must be an object")
    check_mix_and_match(m)


def check_mix_and_match(m: dict[str, Any]) -> None:
    """At most one artifact per device type and group (or device): Uptane's one target per ECU."""
    types_of: dict[str, set[str]] = {}
    for a in m["artifacts"]:
        types_of.setdefault(a["name"], set()).update(a["device_types"])
    seen: dict[tuple[str, str, str], str] = {}
    for d in m["deployments"]:
        types = types_of[d["artifact_name"]]
        wanted = set(d["target"].get("device_types") or types)
        selectors = [("group", g) for g in d["target"].get("groups", [])]
        selectors += [("device", i) for i in d["target"].get("devices", [])]
        for kind, value in selectors:
            for device_type in sorted(types & wanted):
                slot = (kind, value, device_type)
                if slot in seen:
                    raise BundleError(
                        f"mix-and-match: {kind} {value!r} device type {device_type!r} gets two targets "
                        f"({seen[slot]!r} and {d['artifact_name']!r})"
                    )
                seen[slot] = d["artifact_name"]


def check_status_manifest(m: dict[str, Any], lim: ManifestLimits | None = None) -> list[dict[str, Any]]:
    """Refuse a ``status.json`` that is not well-formed; its status records."""
    lim = lim or ManifestLimits()
    if m.get("schema") != STATUS_SCHEMA or m.get("kind") != "status":
        raise BundleError(f"status.json: schema must be {STATUS_SCHEMA!r} and kind 'status'")
    _str(m.get("site"), "status.json site", lim.name_max)
    records = m.get("statuses")
    if not isinstance(records, list) or len(records) > lim.statuses_max:
        raise BundleError(f"status.json statuses must be an array of at most {lim.statuses_max}")
    for r in records:
        if not isinstance(r, dict):
            raise BundleError("status.json: each status is an object")
        _str(r.get("deployment"), "status deployment", 64)
        _str(r.get("device"), "status device", lim.identity_max)
        if not isinstance(r.get("status"), str) or r["status"] not in _STATUSES:
            raise BundleError(f"status.json: unknown status {r.get('status')!r}")
        if r.get("substate") is not None:
            _str(r["substate"], "status substate", 200)
        log = r.get("log")
        if log is not None:
            if not isinstance(log, list) or len(log) > lim.log_messages_max:
                raise BundleError(
                    f"status.json: a log is an array of at most {lim.log_messages_max} messages"
                )
            for msg in log:
                if not isinstance(msg, dict):
                    raise BundleError("status.json: each log message is an object")
                for k in ("timestamp", "level", "message"):
                    if not isinstance(msg.get(k), str) or len(msg[k]) > lim.log_field_max:
                        raise BundleError(
                            f"status.json: log message {k} must be a string of at most "
                            f"{lim.log_field_max} characters"
                        )
    return records
