"""Remote access with the real mender-connect 2.1 (and mender-client 3.4 handing it the JWT over
a private D-Bus system bus: tests/support/mender_connect.py).

Users: the admin creates an owner (RBAC_ROLE_DEVICE_OWNER: grants) and a support user
(RBAC_ROLE_SUPPORT: ``remoteaccess:use``). Without the owner's grant no session opens (403, and
mender-connect never hears of one); with it, ``echo hello`` runs through the shell and a file
goes up and comes back through file transfer; when the grant expires the session is cut; every
session is an audit entry with who, when, how long and bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import select
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from bridge.api import ApiLimits, Settings
from bridge.http import BackgroundServer
from tests.support.mender import Db, admin_token, require_binary, start_server
from tests.support.mender_connect import DeviceHost, start_device_host

MM = "/api/meshota/v1/management/remote_access/devices"
RECHECK = 1.0  # the server re-reads a session's grant this often (ApiLimits.remote_recheck)
OWNER = ("owner@example.com", "owner-secret-1")
SUPPORT = ("support@example.com", "support-secret-1")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, host: DeviceHost | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    logs = "" if host is None else "\n".join(f"--- {n}\n{host.log(n)[-3000:]}" for n in host.logs)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def login(url: str, user: tuple[str, str]) -> str:
    r = httpx.post(f"{url}/api/management/v1/useradm/auth/login", auth=user, timeout=30)
    assert r.status_code == 200, r.text
    return r.text


@pytest.fixture
def remote(db: Db, tmp_path: Path) -> Iterator[dict[str, Any]]:
    require_binary("mender-connect")
    server = start_server(
        db, tmp_path, Settings(limits=ApiLimits(remote_recheck=RECHECK, remote_reply_timeout=4.0))
    )
    host: DeviceHost | None = None
    try:
        token = admin_token(server)
        api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        for (email, password), role in ((OWNER, "RBAC_ROLE_DEVICE_OWNER"), (SUPPORT, "RBAC_ROLE_SUPPORT")):
            r = api.post(
                "/api/management/v1/useradm/users",
                json={"email": email, "password": password, "roles": [role]},
            )
            assert r.status_code == 201, r.text
        mac = "02:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:5])
        host = start_device_host(tmp_path / "device", server.url, mac)
        dev = wait_for(
            "the device's auth request",
            lambda: next(iter(api.get("/api/management/v2/devauth/devices").json()), None),
            host=host,
        )
        r = api.put(
            f"/api/management/v2/devauth/devices/{dev['id']}/auth/{dev['auth_sets'][0]['id']}/status",
            json={"status": "accepted"},
        )
        assert r.status_code == 204, r.text
        share = tmp_path / "share"
        share.mkdir()
        share.chmod(0o777)  # mender-connect's shell and file transfer run as "nobody"
        # the device-side setting: the owner runs mender-connect, with its own limits
        host.start_connect(
            {
                "ShellCommand": "/bin/bash",  # Debian sh (dash) refuses the --login it is started with
                "User": "nobody",
                "Sessions": {"ExpireAfter": 600, "MaxPerUser": 2},
                "ReconnectIntervalSeconds": 1,
                "PortForward": {"Disable": True},
                "MenderClient": {"Disable": True},
            }
        )
        yield {
            "server": server,
            "api": api,
            "host": host,
            "device": dev["id"],
            "owner": login(server.url, OWNER),
            "support": login(server.url, SUPPORT),
            "share": share,
        }
    finally:
        if host is not None:
            host.close()
        server.stop()


def connected(server: BackgroundServer, device_id: str) -> bool:
    return device_id in server.context.remote.devices


def ws_url(server: BackgroundServer, device_id: str) -> str:
    return (
        server.url.replace("http://", "ws://")
        + f"/api/management/v1/deviceconnect/devices/{device_id}/connect"
    )


def msg(proto: int, typ: str, body: bytes = b"", props: dict[str, Any] | None = None) -> bytes:
    hdr: dict[str, Any] = {"proto": proto, "typ": typ}
    if props:
        hdr["props"] = props
    return bytes(msgpack.packb({"hdr": hdr, "body": body}, use_bin_type=True))


def ft(typ: str, body: Any = None, offset: int | None = None) -> bytes:
    """A file-transfer message as Go peers encode it: ``props.offset`` an int64 (0xd3), which
    mender-connect insists on."""
    hdr = b"\x83" + _p("proto") + _p(2) + _p("typ") + _p(typ) + _p("props")
    if offset is None:
        hdr += b"\x80"
    else:
        hdr += b"\x81" + _p("offset") + b"\xd3" + struct.pack(">q", offset)
    raw = body if isinstance(body, bytes) else b"" if body is None else _p(body)
    return b"\x82" + _p("hdr") + hdr + _p("body") + _p(raw)


def _p(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def unpack(data: bytes | str) -> dict[str, Any]:
    assert isinstance(data, bytes)
    doc = msgpack.unpackb(data, raw=False)
    assert isinstance(doc, dict)
    return doc


async def shell_until(ws: ClientConnection, needle: bytes, timeout: float = 20) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            doc = unpack(await ws.recv())
            if doc["hdr"]["proto"] == 1 and doc["hdr"].get("typ") == "shell":
                seen += doc.get("body") or b""
    return seen


def audit_sessions(api: httpx.Client, device_id: str) -> list[dict[str, Any]]:
    logs = api.get("/api/management/v1/auditlogs/logs", params={"per_page": 500}).json()
    return [e for e in logs if e.get("action") == "remote.session" and e["object"]["id"] == device_id]


def test_refused_without_grant_then_shell_and_files_with_one(remote: dict[str, Any]) -> None:
    server: BackgroundServer = remote["server"]
    api: httpx.Client = remote["api"]
    host: DeviceHost = remote["host"]
    device: str = remote["device"]
    wait_for("mender-connect's link", lambda: connected(server, device), host=host)
    url = ws_url(server, device)
    support = {"Authorization": f"Bearer {remote['support']}"}

    async def refused() -> int:
        with pytest.raises(websockets.InvalidStatus) as info:
            async with connect(url, additional_headers=support):
                pass
        return info.value.response.status_code

    # 1. off by default: no grant, no session (and the device's link carries nothing)
    assert asyncio.run(refused()) == 403
    assert server.context.remote.session_count == 0
    assert server.context.remote.devices[device].sessions == {}

    # the support user cannot grant; the owner can
    r = httpx.put(f"{server.url}{MM}/{device}", json={"duration": 600}, headers=support, timeout=30)
    assert r.status_code == 403, r.text
    owner = {"Authorization": f"Bearer {remote['owner']}"}
    r = httpx.put(f"{server.url}{MM}/{device}", json={"duration": 600}, headers=owner, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True and r.json()["protocols"] == ["diagnostics", "filetransfer", "shell"]

    # 2. with the grant: a shell
    async def shell() -> bytes:
        async with connect(url, additional_headers=support) as ws:
            await ws.send(msg(1, "new", props={"terminal_width": 80, "terminal_height": 24}))
            await ws.send(msg(1, "shell", b"echo hel''lo-from-$((6*7))\n"))
            out = await shell_until(ws, b"hello-from-42")
            await ws.send(msg(1, "stop"))
            return out

    assert b"hello-from-42" in asyncio.run(shell())
    (entry,) = wait_for("the session's audit entry", lambda: audit_sessions(api, device))
    assert entry["actor"]["email"] == SUPPORT[0] and entry["actor"]["type"] == "user"
    change = json.loads(entry["change"])
    assert change["protocols"] == ["shell"] and change["end_reason"] == "user closed"
    assert change["bytes_to_device"] > 0 and change["bytes_to_user"] > len(b"hello-from-42")
    assert 0 <= change["duration"] < 30 and change["started"] > 0

    # 3. file transfer: upload a file, then download it again
    content = bytes(range(256)) * 64 + b"tail"  # 16 KiB + 4: several chunks
    target = str(remote["share"] / "pushed.bin")

    async def transfer() -> bytes:
        async with connect(url, additional_headers=support) as ws:
            await ws.send(ft("put_file", {"path": target, "size": len(content), "mode": 0o644}))
            first = unpack(await ws.recv())  # mender-connect: ack at offset 0, send the chunks
            assert first["hdr"]["typ"] == "ack" and first["hdr"]["props"]["offset"] == 0
            sent = 0
            while sent < len(content):
                part = content[sent : sent + 4096]
                await ws.send(ft("file_chunk", part, sent))
                sent += len(part)
            await ws.send(ft("file_chunk", b"", sent))
            async with asyncio.timeout(20):
                while True:
                    doc = unpack(await ws.recv())
                    if doc["hdr"].get("typ") == "error":
                        raise AssertionError(doc)
                    if (doc["hdr"].get("props") or {}).get("offset") == len(content):
                        break
            await ws.send(ft("get_file", {"path": target}))
            got = b""
            async with asyncio.timeout(20):
                while True:
                    doc = unpack(await ws.recv())
                    hdr = doc["hdr"]
                    if hdr.get("typ") == "error":
                        raise AssertionError(doc)
                    if hdr.get("typ") != "file_chunk":
                        continue
                    body = doc.get("body") or b""
                    got += body
                    await ws.send(ft("ack", None, hdr["props"]["offset"] + len(body)))
                    if not body:
                        return got

    assert asyncio.run(transfer()) == content
    assert (remote["share"] / "pushed.bin").read_bytes() == content
    entries = wait_for(
        "two audited sessions", lambda: len(audit_sessions(api, device)) == 2 and audit_sessions(api, device)
    )
    change = json.loads(entries[0]["change"])  # newest first
    assert change["protocols"] == ["filetransfer"]
    assert change["bytes_to_device"] > len(content) and change["bytes_to_user"] > len(content)
    logs = api.get("/api/management/v1/auditlogs/logs", params={"per_page": 500}).json()
    actions = [e["action"] for e in logs if e["object"]["id"] == device]
    assert actions.count("remote.session_refused") == 1 and actions.count("remote.grant") == 1
    assert actions.count("remote.session_open") == 2


def test_session_cut_when_grant_expires_or_is_revoked(remote: dict[str, Any]) -> None:
    server: BackgroundServer = remote["server"]
    api: httpx.Client = remote["api"]
    host: DeviceHost = remote["host"]
    device: str = remote["device"]
    wait_for("mender-connect's link", lambda: connected(server, device), host=host)
    url = ws_url(server, device)
    support = {"Authorization": f"Bearer {remote['support']}"}
    owner = {"Authorization": f"Bearer {remote['owner']}"}

    def grant(seconds: float) -> None:
        r = httpx.put(f"{server.url}{MM}/{device}", json={"duration": seconds}, headers=owner, timeout=30)
        assert r.status_code == 200, r.text

    async def hold_shell(action: Callable[[], None] | None = None) -> tuple[float, int | None]:
        """Open a shell, see it work, then (after ``action``, if any) keep typing until the server
        cuts the session: (seconds from the open, or from the action's end, to the cut; close code)."""
        async with connect(url, additional_headers=support) as ws:
            began = time.monotonic()
            await ws.send(msg(1, "new", props={"terminal_width": 80, "terminal_height": 24}))
            await ws.send(msg(1, "shell", b"echo still-$((1+1))\n"))
            # mender-connect may still be stopping the previous shell (it does so synchronously)
            await shell_until(ws, b"still-2", timeout=45)
            if action is not None:
                await asyncio.to_thread(action)
                began = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(30):
                    while True:  # the user keeps typing; the server cuts the session
                        await ws.send(msg(1, "shell", b"true\n"))
                        await asyncio.sleep(0.2)
                        while True:
                            try:
                                async with asyncio.timeout(0.05):
                                    await ws.recv()
                            except TimeoutError:
                                break
            rcvd = closed.value.rcvd
            return time.monotonic() - began, None if rcvd is None else rcvd.code

    # a 4-second grant: the session ends at its expiry, with close code 4001
    grant(4)
    held, code = asyncio.run(hold_shell())
    assert code == 4001 and 1 < held < 8, (held, code)
    (entry,) = wait_for("the cut session's audit entry", lambda: audit_sessions(api, device))
    change = json.loads(entry["change"])
    assert change["end_reason"] == "remote-access grant expired" and change["duration"] < 8
    sid = change["session_id"]
    wait_for(
        "mender-connect stopping the shell",
        lambda: (
            f"session {sid}" in host.log("mender-connect") and "stopping shell" in host.log("mender-connect")
        ),
        host=host,
    )

    # expired: refused again
    async def refused() -> int:
        with pytest.raises(websockets.InvalidStatus) as info:
            async with connect(url, additional_headers=support):
                pass
        return info.value.response.status_code

    assert asyncio.run(refused()) == 403

    # a long grant, revoked by the owner while the session runs: cut within the re-check interval
    grant(600)

    def revoke() -> None:
        r = httpx.delete(f"{server.url}{MM}/{device}", headers=owner, timeout=30)
        assert r.status_code == 204, r.text

    held, code = asyncio.run(hold_shell(revoke))
    assert code == 4001 and held < RECHECK + 3, (held, code)
    entries = wait_for(
        "two audited sessions", lambda: len(audit_sessions(api, device)) == 2 and audit_sessions(api, device)
    )
    assert json.loads(entries[0]["change"])["end_reason"] == "remote-access grant revoked"
    assert server.context.remote.session_count == 0

    # the device is rejected while a session runs: cut at the next re-check, and no new session
    grant(600)
    dev = api.get(f"/api/management/v2/devauth/devices/{device}").json()

    def reject() -> None:
        r = api.put(
            f"/api/management/v2/devauth/devices/{device}/auth/{dev['auth_sets'][0]['id']}/status",
            json={"status": "rejected"},
        )
        assert r.status_code == 204, r.text

    held, code = asyncio.run(hold_shell(reject))
    assert code == 4001 and held < RECHECK + 3, (held, code)
    entries = wait_for(
        "three audited sessions",
        lambda: len(audit_sessions(api, device)) == 3 and audit_sessions(api, device),
    )
    assert json.loads(entries[0]["change"])["end_reason"] == "device no longer accepted"
    assert asyncio.run(refused()) == 403


def test_mender_cli_cp_through_the_http_file_routes(remote: dict[str, Any], tmp_path: Path) -> None:
    """The real mender-cli 1.9 ``cp`` (PUT .../upload, GET .../download) against the real
    mender-connect: refused without a grant, byte-exact with one."""
    server: BackgroundServer = remote["server"]
    api: httpx.Client = remote["api"]
    host: DeviceHost = remote["host"]
    device: str = remote["device"]
    wait_for("mender-connect's link", lambda: connected(server, device), host=host)
    support = {"Authorization": f"Bearer {remote['support']}"}
    state = httpx.get(f"{server.url}/api/management/v1/deviceconnect/devices/{device}", headers=support)
    assert state.status_code == 200 and state.json()["status"] == "connected", state.text

    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(70_000))  # 18 chunks: more than one ack window of mender-connect's
    local.chmod(0o640)
    remote_path = str(remote["share"] / "via-cli.bin")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [
            require_binary("mender-cli"),
            "--server",
            server.url,
            "--token-value",
            remote["support"],
            *args,
        ]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)

    refused = cli("cp", str(local), f"{device}:{remote_path}")
    assert refused.returncode != 0 and "not granted" in refused.stdout + refused.stderr, refused
    assert not Path(remote_path).exists()

    owner = {"Authorization": f"Bearer {remote['owner']}"}
    r = httpx.put(
        f"{server.url}{MM}/{device}", json={"duration": 600, "protocols": ["filetransfer"]}, headers=owner
    )
    assert r.status_code == 200, r.text
    up = cli("cp", str(local), f"{device}:{remote_path}")
    assert up.returncode == 0, up
    assert Path(remote_path).read_bytes() == local.read_bytes()
    assert Path(remote_path).stat().st_mode & 0o777 == 0o640
    back = tmp_path / "back.bin"
    down = cli("cp", f"{device}:{remote_path}", str(back))
    assert down.returncode == 0, down
    assert back.read_bytes() == local.read_bytes()

    # a missing file is a 404 with the device's reason; the grant does not cover the shell
    r = httpx.get(
        f"{server.url}/api/management/v1/deviceconnect/devices/{device}/download",
        params={"path": str(remote["share"] / "missing")},
        headers=support,
        timeout=60,
    )
    assert r.status_code == 404 and "no such file" in r.json()["error"].lower(), r.text

    entries = wait_for(
        "three audited transfers",
        lambda: len(audit_sessions(api, device)) == 3 and audit_sessions(api, device),
    )
    changes = [json.loads(e["change"]) for e in entries]
    assert [c["direction"] for c in changes] == ["download", "download", "upload"]  # newest first
    assert changes[2]["bytes_to_device"] > 70_000 and changes[1]["bytes_to_user"] > 70_000
    assert changes[0]["end_reason"].startswith("failed: on the device")
    assert all(e["actor"]["email"] == SUPPORT[0] for e in entries)


def test_mender_cli_terminal_in_a_pty(remote: dict[str, Any]) -> None:
    """The real mender-cli 1.9 ``terminal`` (in a pseudo-terminal, as a user runs it) reaches
    the real mender-connect's shell through the session websocket once the owner granted it."""
    server: BackgroundServer = remote["server"]
    host: DeviceHost = remote["host"]
    device: str = remote["device"]
    wait_for("mender-connect's link", lambda: connected(server, device), host=host)

    def terminal() -> tuple[int, str]:
        master, slave = pty.openpty()
        argv = [require_binary("mender-cli"), "--server", server.url, "--token-value", remote["support"]]
        proc = subprocess.Popen([*argv, "terminal", device], stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        seen = b""
        # mender-connect 2.1 stops a previous shell synchronously (~4 s) before it starts the next;
        # under load the first prompt has been seen to take longer than 30 s
        deadline = time.monotonic() + 60
        sent = False
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                ready, _, _ = select.select([master], [], [], 0.2)
                if ready:
                    try:
                        seen += os.read(master, 4096)
                    except OSError:
                        break
                if not sent and b"$" in seen:
                    os.write(master, b"echo term-$((20+22))\r")
                    sent = True
                if b"term-42" in seen:
                    os.write(master, b"exit\r")
                    sent = True
            # still connected after 15 s: killed below, the caller's assertions decide
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
        return proc.returncode, seen.decode("utf-8", "replace")

    code, out = terminal()
    assert code > 0 and "term-42" not in out, (code, out)  # no grant: refused, mender-cli exits by itself
    owner = {"Authorization": f"Bearer {remote['owner']}"}
    r = httpx.put(f"{server.url}{MM}/{device}", json={"duration": 600, "protocols": ["shell"]}, headers=owner)
    assert r.status_code == 200, r.text
    code, out = terminal()
    assert "term-42" in out, out


def test_device_side_setting_off_wins_over_a_server_grant(remote: dict[str, Any]) -> None:
    """The owner's device-side switch: mender-connect.conf ``Terminal.Disable`` and
    ``FileTransfer.Disable``. A server grant alone then opens a session that reaches nothing."""
    server: BackgroundServer = remote["server"]
    host: DeviceHost = remote["host"]
    device: str = remote["device"]
    wait_for("mender-connect's link", lambda: connected(server, device), host=host)
    host.stop("mender-connect")
    wait_for("the old link to drop", lambda: not connected(server, device), host=host)
    host.start_connect(
        {
            "ShellCommand": "/bin/bash",
            "User": "nobody",
            "Terminal": {"Disable": True},
            "FileTransfer": {"Disable": True},
            "PortForward": {"Disable": True},
            "MenderClient": {"Disable": True},
        }
    )
    wait_for("the new link", lambda: connected(server, device), host=host)
    owner = {"Authorization": f"Bearer {remote['owner']}"}
    r = httpx.put(f"{server.url}{MM}/{device}", json={"duration": 600}, headers=owner, timeout=30)
    assert r.status_code == 200, r.text
    support = {"Authorization": f"Bearer {remote['support']}"}

    async def shell() -> list[dict[str, Any]]:
        got = []
        async with connect(ws_url(server, device), additional_headers=support) as ws:
            await ws.send(msg(1, "new", props={"terminal_width": 80, "terminal_height": 24}))
            await ws.send(msg(1, "shell", b"echo never-$((1+1))\n"))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    while True:
                        got.append(unpack(await ws.recv()))
        return got

    replies = asyncio.run(shell())
    assert not any(b"never-2" in (d.get("body") or b"") for d in replies), replies
    # mender-connect answers each shell message with an error: no terminal handler
    assert [(d["hdr"]["typ"], d["hdr"]["props"]["status"]) for d in replies] == [("new", 2), ("shell", 2)]
    assert all(b"unknown message protocol" in d["body"] for d in replies)
    r = httpx.get(
        f"{server.url}/api/management/v1/deviceconnect/devices/{device}/download",
        params={"path": "/etc/hostname"},
        headers=support,
        timeout=60,
    )
    # ... and ignores file transfer: the HTTP route gives up after remote_reply_timeout
    assert r.status_code == 504 and "file transfer enabled" in r.text, r.text
