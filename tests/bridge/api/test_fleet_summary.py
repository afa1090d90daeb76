"""The aggregate routes behind the admin UI (bridge/api/_fleet_summary.py), on SQLite and PostgreSQL:
fleet summary counts, a device's deployment history, the mesh by sub-mesh. Who may call them is
tests/bridge/service/test_matrix.py."""

from __future__ import annotations

from pathlib import Path

from tests.support.mender import ADMIN, RunningServer, device_key, make_artifact
from tests.support.ui import UiFleet, add_devices, auth_request, check_in, report

EXT = "/api/meshota/v1/management"


def test_summary_history_and_mesh(running: RunningServer, tmp_path: Path) -> None:
    fleet = UiFleet(running.server, running.url, "", tokens={ADMIN[0]: running.token})
    grouped = add_devices(fleet, 3, group="g1", admin=ADMIN)
    loose = add_devices(fleet, 1, admin=ADMIN, artifact_name="release-0")
    assert auth_request(running.url, device_key("ecdsa"), "pending-one", "").status_code == 401
    with running.client() as api:
        summary = api.get(f"{EXT}/fleet/summary").json()
        counts = {"accepted": 4, "pending": 1, "rejected": 0, "preauthorized": 0, "noauth": 0, "offline": 0}
        assert summary["devices"] == {**counts, "total": 5}
        assert summary["versions"] == [
            {"artifact_name": "release-1", "devices": 3},
            {"artifact_name": "release-0", "devices": 1},
        ]
        assert summary["failures_7d"] == 0
        assert api.get(f"{EXT}/fleet/summary", params={"offline_after": "5"}).status_code == 400

        artifact = make_artifact(tmp_path, "release-2")
        files = {"artifact": ("a.mender", artifact.read_bytes(), "application/octet-stream")}
        assert api.post("/api/management/v1/deployments/artifacts", files=files).status_code == 201
        r = api.post(
            "/api/management/v1/deployments/deployments/group/g1",
            json={"name": "d", "artifact_name": "release-2"},
        )
        assert r.status_code == 201, r.text
        dep = r.headers["location"].rsplit("/", 1)[-1]
        assert check_in(running.url, grouped[0]) == dep
        report(running.url, grouped[0], dep, "failure")
        assert check_in(running.url, grouped[1]) == dep

        history = api.get(f"{EXT}/devices/{grouped[0].id}/deployments").json()
        assert [(h["deployment_id"], h["status"], h["artifact_name"]) for h in history] == [
            (dep, "failure", "release-2")
        ]
        assert api.get(f"{EXT}/devices/{loose[0].id}/deployments").json() == []
        assert api.get(f"{EXT}/devices/no-such-device/deployments").status_code == 404
        assert api.get(f"{EXT}/fleet/summary").json()["failures_7d"] == 1

        mesh = api.get(f"{EXT}/mesh").json()
        assert mesh["reported_by_roots"] == []  # no root reported (tests/bridge/api/test_mesh_reports.py)
        (g1,) = mesh["sub_meshes"]
        assert g1["group"] == "g1" and g1["nodes_total"] == 3
        assert g1["status_counts"] == {"failure": 1, "pending": 2}
        statuses = {n["id"]: n["status"] for n in g1["nodes"]}
        assert statuses[grouped[0].id] == "failure" and set(statuses) == {d.id for d in grouped}
