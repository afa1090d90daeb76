"""``meshota demo``'s server side gets the streaming cores' progress reports (wire/SPEC.md §7) from
the product's own GroupStreamRoot objects, and the management API's mesh view shows them as a tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mesh_sim.server import ApiServer
from meshota.demo import _simulated_with


def _walk(rep: dict[str, Any], depth: int = 0) -> list[tuple[int, dict[str, Any]]]:
    out = [(depth, rep)]
    for n in rep["nodes"]:
        if n["report"] is not None:
            out += _walk(n["report"], depth + 1)
    return out


def test_the_demo_feeds_the_mesh_view_from_the_real_roots(tmp_path: Path) -> None:
    server = ApiServer(tmp_path / "server")
    try:
        assert _simulated_with(server, tmp_path, 12, 1, tmp_path / "out") == 0
        r = server.call("GET", "/api/meshota/v1/management/mesh", token=server.user_token)
        assert r.status == 200
        streams = json.loads(r.body)["reported_by_roots"]
    finally:
        server.close()
    (stream,) = streams  # one artifact, one signed map: one stream, resumed by every relay
    assert stream["artifact_name"] == "demo-firmware-2.0"
    (top,) = stream["roots"]
    reports = _walk(top)
    assert max(d for d, _ in reports) >= 1, "no relay's report under the root's"
    devices = set(server.device_ids.values())
    listed = {n["id"] for _, rep in reports for n in rep["nodes"]}
    # every node of the mesh appears, named by its server device id, and all finished
    assert listed == devices
    for _, rep in reports:
        assert rep["root"] in devices and rep["reported_by"] == f"root {rep['root']}"
        assert rep["final"] and rep["complete"] and rep["bytes_on_air"] > 0 and rep["frames_on_air"] > 0
        assert all(n["missing"] == 0 and n["held"] == rep["blocks"] for n in rep["nodes"])
    # the root sent at least the image once
    image = (tmp_path / "demo-firmware-2.0.mender").stat().st_size
    assert top["bytes_on_air"] > image
