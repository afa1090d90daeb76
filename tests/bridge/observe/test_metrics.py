"""bridge.observe: the metrics registry, the probe endpoint, and /metrics on the HTTP API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from bridge.observe import Metrics, ProbeServer
from tests.support.mender import Db, device_key, device_login, start_server


def _value(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start!r} not in metrics:\n{text}")


def test_requests_counted_by_route_pattern_status_and_transport() -> None:
    m = Metrics()
    m.observe_request("/api/devices/v1/inventory/device/attributes", "PUT", 200, "mqtt", 0.004)
    m.observe_request("/api/devices/v1/inventory/device/attributes", "PUT", 200, "mqtt", 0.3)
    m.observe_request("unmatched", "GET", 404, "http", 0.0001)
    text = m.render().decode()
    assert _value(text, 'meshota_requests_total{method="PUT",route="/api/devices/v1/inventory/device/'
                  'attributes",status="200",transport="mqtt"}') == 2  # fmt: skip
    assert _value(text, 'meshota_requests_total{method="GET",route="unmatched",status="404"') == 1
    assert _value(text, 'meshota_request_seconds_bucket{le="0.005",route="/api/devices/v1/inventory/'
                  'device/attributes",transport="mqtt"}') == 1  # fmt: skip


def test_gauge_sources_are_read_at_scrape_time_and_summed() -> None:
    m = Metrics()
    depth = [3]
    remove = m.gauge_source("meshota_queue_depth", lambda: depth[0], "backlog")
    m.gauge_source("meshota_queue_depth", lambda: 4, "backlog")
    m.gauge_source("meshota_queue_depth", lambda: 1 / 0, "backlog")  # a broken source is skipped
    assert _value(m.render().decode(), 'meshota_queue_depth{queue="backlog"}') == 7
    depth[0] = 10
    assert _value(m.render().decode(), 'meshota_queue_depth{queue="backlog"}') == 14
    remove()
    assert _value(m.render().decode(), 'meshota_queue_depth{queue="backlog"}') == 4
    with pytest.raises(ValueError, match="unknown gauge"):
        m.gauge_source("meshota_nonsense", lambda: 1)


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return out


def test_probe_server_paths_and_bad_requests() -> None:
    async def run() -> None:
        m = Metrics()
        m.gauge_source("meshota_mqttsn_sessions", lambda: 42)
        ready = [False]
        async with ProbeServer(m, ready=lambda: ready[0]) as srv:
            port = srv.address[1]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                assert (await c.get("/healthz")).status_code == 200
                assert (await c.get("/readyz")).status_code == 503
                ready[0] = True
                assert (await c.get("/readyz")).status_code == 200
                r = await c.get("/metrics")
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
                assert _value(r.text, "meshota_mqttsn_sessions ") == 42
                assert (await c.get("/nope")).status_code == 404
                assert (await c.post("/metrics")).status_code == 405
            assert (await _raw(port, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
            # a head over 4 KiB: refused, the server goes on
            huge = b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\n\r\n"
            assert (await _raw(port, huge)).startswith(b"HTTP/1.1 400")
            assert (await _raw(port, b"HEAD /healthz HTTP/1.1\r\n\r\n")).endswith(b"\r\n\r\n")

    asyncio.run(run())


def test_http_api_serves_metrics_of_its_requests(tmp_path: Path) -> None:
    server = start_server(Db(f"sqlite:///{tmp_path / 'm.db'}", None, "sqlite"), tmp_path)
    try:
        assert httpx.get(f"{server.url}/api/devices/v1/nothing-here").status_code == 404
        assert device_login(server.url, device_key("ecdsa"), "02:00:00:00:00:01").status_code == 401
        text = httpx.get(f"{server.url}/metrics").text
        assert _value(text, 'meshota_requests_total{method="GET",route="unmatched",status="404",'
                      'transport="http"}') >= 1  # fmt: skip
        assert _value(text, 'meshota_requests_total{method="POST",route="/api/devices/v1/authentication/'
                      'auth_requests",status="401",transport="http"}') >= 1  # fmt: skip
    finally:
        server.stop()
