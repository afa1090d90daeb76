"""``meshota up`` end to end, as an operator runs it: one process, real children, real clients.

One slow test walks the whole life of a data directory: first start (keys, PSK file, admin user),
a real mender-client 3.4 over HTTP and an MQTT-SN node over DTLS through a relay each complete a
deployment; the gateway child is killed with SIGKILL and comes back (logged) and the node works
again; SIGTERM arrives while an artifact upload is in flight and the upload is still answered
201; a second start on the same directory creates nothing and finds everything.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from firmware_proto.aio.device_mqttsn import MqttSnDevice
from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.aio.relay_udp import RelayUdp
from firmware_proto.dtls_client import PskClientConfig
from meshota.cli._args import parse_hostport
from tests.support.mender import make_artifact
from tests.support.up import ADMIN_PASSWORD, UpProcess, mender_daemon, wait_for
from wire.dtls_credentials import load_psk_file

NODE_MAC = "02:00:00:00:cc:01"
NODE_KEY = ec.generate_private_key(ec.SECP256R1())  # the same auth set across sessions


def _api(up: UpProcess) -> httpx.Client:
    url = up.addresses["http"]
    token = httpx.post(
        f"{url}/api/management/v1/useradm/auth/login", auth=(up.addresses["admin_user"], ADMIN_PASSWORD)
    )
    assert token.status_code == 200, token.text
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token.text}"}, timeout=30)


def _accept(api: httpx.Client, mac: str) -> str:
    def pending() -> dict[str, Any] | None:
        for dev in api.get("/api/management/v2/devauth/devices").json():
            if dev["identity_data"].get("mac") == mac:
                return dict(dev)
        return None

    dev = wait_for(f"device {mac}", pending)
    if dev["status"] != "accepted":
        aid = dev["auth_sets"][-1]["id"]
        path = f"/api/management/v2/devauth/devices/{dev['id']}/auth/{aid}/status"
        r = api.put(path, json={"status": "accepted"})
        assert r.status_code == 204, r.text
    return str(dev["id"])


def _deploy(api: httpx.Client, name: str, device: str) -> str:
    doc = {"name": f"{name}-{device[:6]}", "artifact_name": name, "devices": [device]}
    r = api.post("/api/management/v1/deployments/deployments", json=doc)
    assert r.status_code == 201, r.text
    return str(r.headers["location"].rsplit("/", 1)[1])


def _stats(api: httpx.Client, dep: str) -> dict[str, int]:
    return dict(api.get(f"/api/management/v1/deployments/deployments/{dep}/statistics").json())


@pytest.fixture
def up(tmp_path: Path) -> Iterator[UpProcess]:
    process = UpProcess(tmp_path)
    try:
        yield process
    finally:
        process.stop()


async def _node_session(
    up: UpProcess, psk: bytes, body: Any, name: str = "node-1", mac: str = NODE_MAC
) -> Any:
    """A node on DTLS (PSK ``name``) through a relay; ``body(device)`` runs inside the session."""
    relay = RelayUdp(parse_hostport(up.addresses["dtls"], "dtls"), ("127.0.0.1", 0))
    await relay.start()
    try:
        client = DtlsUdpClient(
            relay.listen_address, name, dtls=PskClientConfig(name, psk), retry_interval=1.0
        )
        async with client:
            device = MqttSnDevice(client, name, mac, NODE_KEY, block_size=512, timeout=10)
            async with device:
                return await body(device)
    finally:
        relay.close()


async def _node_deployment(up: UpProcess, psk: bytes, api: httpx.Client, artifact: bytes) -> str:
    async def body(device: MqttSnDevice) -> str:
        assert await device.authenticate() == 401
        node_id = await asyncio.to_thread(_accept, api, NODE_MAC)
        assert await device.authenticate() == 200
        dep = await asyncio.to_thread(_deploy, api, "up-art-1", node_id)
        found = await device.next_deployment("initial", "test-device")
        assert found is not None and found["id"] == dep
        assert await device.put_status(dep, "downloading") == 204
        assert await device.fetch_artifact(found["artifact"]["source"]["uri"]) == artifact
        assert await device.put_status(dep, "installing") == 204
        assert await device.put_status(dep, "success") == 204
        return dep

    return str(await _node_session(up, psk, body))


def _slow_upload(url: str, token: str, artifact: bytes, started: threading.Event, out: list[Any]) -> None:
    def chunks() -> Iterator[bytes]:
        boundary_head = (
            b'--XyZ\r\nContent-Disposition: form-data; name="artifact"; filename="a.mender"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        yield boundary_head
        started.set()
        step = max(1, len(artifact) // 10)  # ten pieces, 0.4 s apart: in flight for 4 s
        for i in range(0, len(artifact), step):
            time.sleep(0.4)
            yield artifact[i : i + step]
        yield b"\r\n--XyZ--\r\n"

    r = httpx.post(
        f"{url}/api/management/v1/deployments/artifacts",
        content=chunks(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=XyZ"},
        timeout=60,
    )
    out.append(r.status_code)


@pytest.mark.integration
def test_up_life_of_a_data_directory(up: UpProcess, tmp_path: Path) -> None:
    up.start()
    first = up.output()
    assert "first start" in first and "keys/psk.txt" in first and "deployment-key.pub.pem" in first
    assert ADMIN_PASSWORD not in first  # taken from the environment, so never printed
    assert set(up.addresses) >= {"http", "broker", "udp", "dtls", "admin_user", "psk_file"}
    assert httpx.get(f"{up.addresses['http']}/healthz").status_code == 200
    assert httpx.get(f"{up.addresses['http']}/readyz").status_code == 200
    login_page = httpx.get(f"{up.addresses['http']}/ui/login")  # the admin UI on the API port (docs/ui.md)
    assert login_page.status_code == 200 and 'name="password"' in login_page.text
    for pid in (up.child_pid("server"), up.child_pid("gateway")):  # no secret in any argv
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert ADMIN_PASSWORD.encode() not in argv
        for line in (up.data / "broker" / "credentials").read_text().splitlines():
            assert line.split(":", 1)[1].encode() not in argv

    api = _api(up)
    artifact_path = make_artifact(tmp_path / "a", "up-art-1", dest_dir=tmp_path / "dest",
                                  content=b"installed through meshota up\n")  # fmt: skip
    artifact = artifact_path.read_bytes()
    files = {"artifact": ("a.mender", artifact, "application/octet-stream")}
    assert api.post("/api/management/v1/deployments/artifacts", files=files).status_code == 201

    # 1. mender-client 3.4 over HTTP
    mac = "02:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:5])
    with mender_daemon(tmp_path / "mender", up.addresses["http"], mac) as mender:
        dev = _accept(api, mac)
        dep = _deploy(api, "up-art-1", dev)

        def done() -> bool:
            mender.send_signal(signal.SIGUSR1)
            s = _stats(api, dep)
            return s["success"] + s["failure"] == 1

        wait_for("mender-client deployment", done, timeout=120, step=1)
        assert _stats(api, dep)["success"] == 1
        assert (tmp_path / "dest" / "hello.txt").read_bytes() == b"installed through meshota up\n"

    # 2. an MQTT-SN node over DTLS through a relay, keyed by the PSK file the first start wrote
    psk = load_psk_file(up.addresses["psk_file"])["node-1"]
    node_dep = asyncio.run(_node_deployment(up, psk, api, artifact))
    assert _stats(api, node_dep)["success"] == 1

    # 3. the gateway dies hard: restarted, logged, and the node works again
    old = up.child_pid("gateway")
    os.kill(old, signal.SIGKILL)
    wait_for("gateway restart", lambda: "gateway restarted" in up.output())
    assert f"gateway (pid {old}) killed by SIGKILL" in up.output() and "restart 1 in" in up.output()

    async def again(device: MqttSnDevice) -> int:
        return await device.authenticate()

    assert asyncio.run(_node_session(up, psk, again)) == 200

    # 4. a new node: its line in the PSK file, SIGHUP to meshota up, and it is in
    psk_file = Path(up.addresses["psk_file"])
    key2 = os.urandom(16)
    psk_file.write_text(psk_file.read_text() + f"node-2,{key2.hex()}\n")
    assert up.proc is not None
    up.proc.send_signal(signal.SIGHUP)
    wait_for("PSK file reloaded", lambda: "--psk-file reloaded: 2 identities" in up.output())
    wait_for("server restarted", lambda: "server restarted (pid" in up.output())
    assert asyncio.run(_node_session(up, key2, again, "node-2", "02:00:00:00:cc:02")) == 401  # pending

    # 5. SIGTERM while an upload is in flight: it is answered, and kept
    token = api.headers["Authorization"].removeprefix("Bearer ")
    second = make_artifact(tmp_path / "b", "up-art-2", dest_dir=tmp_path / "never").read_bytes()
    started, result = threading.Event(), []
    args = (up.addresses["http"], token, second, started, result)
    uploader = threading.Thread(target=_slow_upload, args=args)
    uploader.start()
    assert started.wait(10)
    assert up.proc is not None
    up.proc.send_signal(signal.SIGTERM)
    wait_for("gateway stopped", lambda: "gateway stopped" in up.output())
    assert uploader.is_alive()  # the server is told to stop while the upload is in flight
    assert up.stop() == 0
    uploader.join(30)
    assert result == [201], up.output()
    log = up.output()
    assert log.index("gateway stopped (") < log.index("server stopped (") < log.index("mosquitto stopped (")
    assert "close_notify" in log

    # 6. second start on the same directory: nothing new created, everything found
    up.start()
    second_log = up.output()
    assert "first start" not in second_log and "password (shown once" not in second_log
    names = {a["name"] for a in _api(up).get("/api/management/v1/deployments/artifacts").json()}
    assert names == {"up-art-1", "up-art-2"}
