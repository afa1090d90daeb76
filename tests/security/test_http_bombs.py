"""Memory and nesting bombs against the HTTP server while a device is being served.

Three connections each declaring a 300 MiB JSON body, chunked bodies without a length that
never end, deeply nested JSON (unauthenticated) in a loop: each is refused (413/400) before it
costs memory, and a device's normal API calls keep succeeding promptly meanwhile.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.http import BackgroundServer
from tests.support.mender import Db, accept, admin_token, device_key, device_login, start_server

INV = "/api/devices/v1/inventory/device/attributes"
AUTH = "/api/devices/v1/authentication/auth_requests"


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def _raw(url: str, head: bytes, body: Iterator[bytes] | None = None) -> bytes:
    """Send a request head and as much of ``body`` as the server takes; the status line back."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        sock.settimeout(0.05)
        answer = b""
        for chunk in body or ():
            try:
                answer = sock.recv(4096)
                if answer:
                    break
            except TimeoutError:
                pass
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server answered and closed
        sock.settimeout(30)
        while b"\r\n" not in answer:
            more = sock.recv(4096)
            if not more:
                break
            answer += more
    return answer.split(b"\r\n", 1)[0]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[BackgroundServer, str]]:
    srv = start_server(Db(f"sqlite:///{tmp_path / 'db.sqlite'}", None, "sqlite"), tmp_path)
    try:
        mgmt = httpx.Client(
            base_url=srv.url, headers={"Authorization": f"Bearer {admin_token(srv)}"}, timeout=30
        )
        key = device_key("ecdsa")
        assert device_login(srv.url, key, "02:00:00:00:b0:01").status_code == 401
        accept(mgmt)
        token = device_login(srv.url, key, "02:00:00:00:b0:01").text
        yield srv, token
    finally:
        srv.stop()


def test_device_served_while_body_bombs_run(served: tuple[BackgroundServer, str]) -> None:
    srv, token = served
    stop = threading.Event()
    refusals: list[bytes] = []
    port = srv.url.rsplit(":", 1)[1]

    def declared_300_mib() -> None:
        head = (f"PATCH {INV} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {300 << 20}\r\n\r\n").encode()  # fmt: skip
        while not stop.is_set():
            refusals.append(_raw(srv.url, head, iter([b"[" * 65536] * 64)))

    def chunked_forever() -> None:
        head = f"POST {AUTH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        chunk = b"10000\r\n" + b" " * 65536 + b"\r\n"
        while not stop.is_set():
            refusals.append(_raw(srv.url, head, iter([chunk] * 10_000)))

    def nested() -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post(AUTH, content=b"[" * 500_000, headers={"X-MEN-Signature": "x"})
                refusals.append(f"HTTP/1.1 {r.status_code}".encode())

    attackers = [
        threading.Thread(target=f, daemon=True) for f in (declared_300_mib,) * 3 + (chunked_forever, nested)
    ]
    before = _rss()
    for t in attackers:
        t.start()
    device = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                          timeout=30)  # fmt: skip
    slowest = 0.0
    try:
        for i in range(20):
            t0 = time.monotonic()
            r = device.patch(INV, json=[{"name": "n", "value": str(i)}])
            slowest = max(slowest, time.monotonic() - t0)
            assert r.status_code == 200, r.text
        peak = _rss() - before
    finally:
        stop.set()
        for t in attackers:
            t.join(timeout=60)
        device.close()
    print(f"device calls: 20, slowest {slowest * 1000:.0f} ms; RSS growth {peak / 2**20:.1f} MiB; "
          f"attack requests refused: {len(refusals)}")  # fmt: skip
    statuses = {line.split(b" ")[1] for line in refusals if line.count(b" ") >= 1}
    # body bombs are 413; the nested-JSON document is 400 (depth) or 413 (over its route's body
    # limit, which the auth route's 16 KiB cap is) — refused either way, before any work
    assert statuses and statuses <= {b"413", b"400"}, statuses
    assert b"413" in statuses
    assert slowest < 5.0, slowest  # generous: a blocked loop or swapping server takes far longer
    assert peak < 200 << 20, peak  # unbounded buffering: 3 x 300 MiB


def test_declared_length_over_limit_is_413_before_the_body(served: tuple[BackgroundServer, str]) -> None:
    srv, _ = served
    head = f"PATCH {INV} HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 30}\r\n\r\n".encode()
    assert _raw(srv.url, head).startswith(b"HTTP/1.1 413")  # not a byte of the body sent


def test_mender_style_413_body(served: tuple[BackgroundServer, str]) -> None:
    srv, _ = served
    r = httpx.post(f"{srv.url}{AUTH}", content=b"x" * ((1 << 20) + 1), timeout=30)
    assert r.status_code == 413
    body = r.json()
    assert set(body) == {"error", "request_id"} and "exceeds 1048576 bytes" in body["error"]
    assert r.headers["x-men-requestid"] == body["request_id"]
