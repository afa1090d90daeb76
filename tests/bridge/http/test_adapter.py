"""The ASGI/uvicorn adapter: chunked bodies, errors, body limit, HTTPS."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.api import Settings
from bridge.http import BackgroundServer, ServerConfig
from bridge.store import DEFAULT_ORG_ID, tenant_scope
from tests.support.mender import Db, admin_token, auth_body, device_key


def sqlite(tmp_path: Path) -> Db:
    return Db(f"sqlite:///{tmp_path / 'db.sqlite'}", None, "sqlite")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BackgroundServer]:
    config = ServerConfig(sqlite(tmp_path).url, tmp_path / "art", port=0,
                          settings=Settings(max_body=64 * 1024))  # fmt: skip
    with BackgroundServer(config) as srv:
        yield srv


def test_chunked_request_body(server: BackgroundServer) -> None:
    body, sig = auth_body(device_key("rsa"), "02:00:00:00:00:01")

    def chunks() -> Iterator[bytes]:  # a generator makes httpx send Transfer-Encoding: chunked
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    r = httpx.post(f"{server.url}/api/devices/v1/authentication/auth_requests",
                   content=chunks(), headers={"X-MEN-Signature": sig})  # fmt: skip
    assert r.status_code == 401  # parsed and signature-checked: the device is now pending
    assert r.json()["error"] == "device authentication pending"


def test_method_not_allowed_and_body_limit(server: BackgroundServer) -> None:
    r = httpx.delete(f"{server.url}/api/devices/v1/authentication/auth_requests")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    big = httpx.post(f"{server.url}/api/devices/v1/authentication/auth_requests",
                     content=b"x" * (65 * 1024))  # fmt: skip
    assert big.status_code == 413 and "exceeds" in big.json()["error"]


def test_https_with_given_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    config = ServerConfig(sqlite(tmp_path).url, tmp_path / "art", port=0, tls_cert=cert, tls_key=key)
    with BackgroundServer(config) as srv:
        assert srv.url.startswith("https://")
        token = admin_token_https(srv, cert)
        assert token.count(".") == 2


def admin_token_https(srv: BackgroundServer, cert: Path) -> str:
    from bridge.api import create_user

    async def add() -> None:
        with tenant_scope(DEFAULT_ORG_ID):  # test set-up acts in the default organisation
            async with srv.context.store.transaction() as conn:
                await create_user(conn, "ops@example.com", "long-password")

    srv.run_coroutine(add())
    r = httpx.post(f"{srv.url}/api/management/v1/useradm/auth/login",
                   auth=("ops@example.com", "long-password"),
                   verify=ssl.create_default_context(cafile=str(cert)))  # fmt: skip
    assert r.status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/", verify=True)  # not a publicly trusted certificate
    return r.text


def test_admin_token_helper_over_http(tmp_path: Path) -> None:
    config = ServerConfig(sqlite(tmp_path).url, tmp_path / "art", port=0)
    with BackgroundServer(config) as srv:
        assert admin_token(srv).count(".") == 2


def test_health_and_readiness_probes(server: BackgroundServer) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.head(f"{server.url}/readyz").status_code == 200
    assert httpx.post(f"{server.url}/readyz").status_code == 404  # only GET/HEAD are probes

    store = server.app.state["store"]
    server.app.state["store"] = None  # no store to ask: not ready
    try:
        r = httpx.get(f"{server.url}/readyz")
        assert r.status_code == 503 and r.json() == {"status": "not ready"}
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    finally:
        server.app.state["store"] = store


def test_readiness_probe_failure_is_503_not_500() -> None:
    import asyncio

    from bridge.http._app import HttpAdapter

    async def broken() -> bool:
        raise OSError("database is gone")

    async def never() -> Any:
        raise AssertionError("not started in this test")

    app = HttpAdapter(never, ready=broken)
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def probe(path: str) -> int:
        sent.clear()
        scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
        await app(scope, receive, send)
        return int(sent[0]["status"])

    app.router = object()  # type: ignore[assignment]  # "started": the probe decides
    assert asyncio.run(probe("/readyz")) == 503
    assert asyncio.run(probe("/healthz")) == 200
