"""Issue 6 end to end: an MQTT-SN node (DTLS PSK, through a relay) against the real gateway, real
mosquitto (ACL + passwords from ``meshota.broker_config``), the real bridge and server — and an
HTTP device doing exactly the same. The management API must show both the same way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from firmware_proto.aio.device_http import HttpDevice
from firmware_proto.aio.device_mqttsn import MqttSnDevice, RequestIds
from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.device_api import DeviceApi, DeviceApiRefused, DeviceApiTimeout
from firmware_proto.dtls_client import PskClientConfig
from mqttsn import GatewayConfig
from tests.support.mender import make_artifact
from tests.support.mqtt_stack import ServerSide, gateway_side, server_side

PSKS = {"node-mq": bytes.fromhex("00112233445566778899aabbccddeeff")}
MACS = {"mqtt": "02:00:00:00:aa:01", "http": "02:00:00:00:aa:02"}
BLOCK = 512
TOPIC_TABLE = 16  # 8 response ids + auth, inventory, next, status, log, download
STATUSES = ("downloading", "installing", "rebooting", "success")
LOG = [{"timestamp": "2024-05-01T10:00:00Z", "level": "info", "message": "installed"}]


def _inventory() -> list[dict[str, Any]]:
    return [
        {"name": "device_type", "value": "test-device"},
        {"name": "artifact_name", "value": "v1"},
        {"name": "transport", "value": "same-for-both"},
    ]


async def _device_flow(dev: DeviceApi, accepted: asyncio.Event) -> dict[str, Any]:
    """What a Mender client does; every status code the server answered, in order."""
    codes: dict[str, Any] = {"auth_pending": await dev.authenticate()}
    await accepted.wait()
    codes["auth"] = await dev.authenticate()
    codes["put_inventory"] = await dev.put_inventory(_inventory())
    codes["patch_inventory"] = await dev.patch_inventory([{"name": "patched", "value": 7}])
    return codes


async def _deployment_flow(dev: DeviceApi) -> tuple[dict[str, Any], bytes]:
    found = await dev.next_deployment("v1", "test-device")
    assert found is not None
    codes: dict[str, Any] = {"next": sorted(found), "artifact_name": found["artifact"]["artifact_name"]}
    data = await dev.fetch_artifact(found["artifact"]["source"]["uri"])
    for status in STATUSES[:-1]:
        codes[f"status-{status}"] = await dev.put_status(found["id"], status)
    codes["log"] = await dev.put_log(found["id"], LOG)
    codes["status-success"] = await dev.put_status(found["id"], "success")
    codes["next-after"] = await dev.next_deployment("v2", "test-device")
    return codes, data


def _view(side: ServerSide, mender_id: str, deployment: str, mac: str) -> dict[str, Any]:
    """The management API's picture of one device, minus ids, keys and timestamps."""
    dev = side.mgmt.get(f"/api/management/v2/devauth/devices/{mender_id}").json()
    inv = side.mgmt.get(f"/api/management/v1/inventory/devices/{mender_id}").json()
    devices = side.mgmt.get(f"/api/management/v1/deployments/deployments/{deployment}/devices").json()
    mine = next(d for d in devices if d["id"] == mender_id)
    log = side.mgmt.get(f"/api/management/v1/deployments/deployments/{deployment}/devices/{mender_id}/log")
    return {
        "status": dev["status"],
        "identity": {k: ("<mac>" if v == mac else v) for k, v in dev["identity_data"].items()},
        "auth_sets": [a["status"] for a in dev["auth_sets"]],
        "inventory": sorted(
            (a["name"], "<mac>" if a["value"] == mac else a["value"], a.get("scope", ""))
            for a in inv["attributes"]
            if not a["name"].endswith("_ts")
        ),
        "deployment": {k: v for k, v in mine.items() if k in ("status", "substate", "log")},
        "log": (log.status_code, log.text),
    }


@pytest.mark.integration
def test_mqttsn_node_and_http_device_look_the_same(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path, "v2", content=b"payload " * 700)
    with server_side(tmp_path, PSKS, block_size=BLOCK) as side:
        upload = {"artifact": ("v2.mender", artifact.read_bytes(), "application/octet-stream")}
        assert side.mgmt.post("/api/management/v1/deployments/artifacts", files=upload).status_code == 201
        asyncio.run(_scenario(side, artifact.read_bytes()))


async def _scenario(side: ServerSide, artifact: bytes) -> None:
    async with gateway_side(side, PSKS, GatewayConfig(max_topics_per_session=TOPIC_TABLE)) as gw:
        client = DtlsUdpClient(
            gw.relay_address, "node-mq", dtls=PskClientConfig("node-mq", PSKS["node-mq"]), retry_interval=1.0
        )
        async with client, MqttSnDevice(client, "node-mq", MACS["mqtt"], block_size=BLOCK, timeout=10) as mq:
            http = HttpDevice(side.url, MACS["http"], block_size=BLOCK)
            accepted = asyncio.Event()
            flows = [
                asyncio.create_task(_device_flow(mq, accepted)),
                asyncio.create_task(_device_flow(http, accepted)),
            ]
            while len(side.mender_ids()) < 2:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(side.accept_pending)
            accepted.set()
            mq_codes, http_codes = await asyncio.gather(*flows)
            assert mq_codes == http_codes == {
                "auth_pending": 401, "auth": 200, "put_inventory": 200, "patch_inventory": 200,
            }  # fmt: skip
            ids = side.mender_ids()
            r = side.mgmt.post(
                "/api/management/v1/deployments/deployments",
                json={
                    "name": "e2e",
                    "artifact_name": "v2",
                    "devices": [ids[MACS["mqtt"]], ids[MACS["http"]]],
                },
            )
            assert r.status_code == 201, r.text
            deployment = r.headers["location"].rsplit("/", 1)[1]
            seen_before = len(side.seen)
            (mq_dep, mq_data), (http_dep, http_data) = await asyncio.gather(
                _deployment_flow(mq), _deployment_flow(http)
            )
            assert mq_data == http_data == artifact
            assert mq_dep == http_dep
            assert mq_dep["status-success"] == 204 and mq_dep["next-after"] is None
            # the MQTT-SN node downloaded block-wise: every server-side range is at most one block
            ranges = [
                rng for _, p, rng, rid in side.seen[seen_before:] if "/download/" in p and rid in "01234567"
            ]
            assert len(ranges) == -(-len(artifact) // BLOCK)
            assert all(
                int(b) - int(a) + 1 <= BLOCK for a, b in (x.removeprefix("bytes=").split("-") for x in ranges)
            )
            stats = side.mgmt.get(
                f"/api/management/v1/deployments/deployments/{deployment}/statistics"
            ).json()
            assert stats["success"] == 2
            views = [_view(side, ids[mac], deployment, mac) for mac in (MACS["mqtt"], MACS["http"])]
            assert views[0] == views[1]
            assert views[0]["status"] == "accepted" and views[0]["deployment"]["status"] == "success"
            assert ("patched", 7, "inventory") in views[0]["inventory"]
            # request ids cycled within the small set: the gateway's topic table (16 here) sufficed
            assert mq.stats.requests > 3 * len(mq.ids.ids)
            assert {rid for *_, rid in side.seen if rid in mq.ids.ids} <= set(mq.ids.ids)
            # the signed chunk map: block-wise over MQTT-SN, the same bytes as over HTTP (Range too)
            artifact_id = side.mgmt.get("/api/management/v1/deployments/artifacts").json()[0]["id"]
            full = await http.fetch_map(artifact_id, 256)
            assert len(full) > BLOCK and await mq.fetch_map(artifact_id, 256) == full
            part = await http.http.get(
                f"/api/meshota/v1/devices/chunk_maps/{artifact_id}",
                params={"chunk_size": 256},
                headers={"Authorization": f"Bearer {http.token}", "Range": "bytes=10-99"},
            )
            assert part.status_code == 206 and part.content == full[10:100]
            assert part.headers["content-range"] == f"bytes 10-99/{len(full)}"
            await http.aclose()


@pytest.mark.integration
def test_typed_errors_refusal_and_timeout(tmp_path: Path) -> None:
    with server_side(tmp_path, PSKS, block_size=BLOCK) as side:
        asyncio.run(_errors(side))


async def _errors(side: ServerSide) -> None:
    async with gateway_side(side, PSKS) as gw:
        client = DtlsUdpClient(gw.relay_address, "node-mq", dtls=PskClientConfig("node-mq", PSKS["node-mq"]))
        async with client, MqttSnDevice(client, "node-mq", MACS["mqtt"], timeout=1.0, attempts=2) as mq:
            assert await mq.authenticate() == 401  # not accepted: a status, not an error
            with pytest.raises(DeviceApiRefused) as refused:
                await mq.next_deployment("v1", "test-device")  # no token
            assert refused.value.status == 401
            side.server.stop()  # the bridge is gone: the broker takes the request, nobody answers
            with pytest.raises(DeviceApiTimeout):
                await mq.put_status("d1", "downloading")
            assert mq.stats.retries == 1


def test_request_ids_cycle_and_quarantine() -> None:
    ids = RequestIds(3, quarantine=10.0)
    got = [ids.take(0.0) for _ in range(3)]
    assert got == ["0", "1", "2"] and ids.take(0.0) is None
    ids.release("0")
    ids.quarantine("1", 0.0)
    assert ids.take(1.0) == "0" and ids.take(1.0) is None
    ids.late_reply("1")  # the late answer came: free again
    assert ids.take(1.0) == "1"
    ids.quarantine("1", 2.0)
    assert ids.take(5.0) is None and ids.take(12.0) == "1"
