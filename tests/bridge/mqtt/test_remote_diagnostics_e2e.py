"""Remote diagnostics of an MQTT-SN node (DTLS PSK, through a relay, the real gateway, mosquitto,
the MQTT bridge): ping, logs and reboot only under the owner's grant, and only if the node's own
setting allows them; audited."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from firmware_proto.aio.device_mqttsn import MqttSnDevice
from firmware_proto.aio.diagnostics_poll import diagnostics_round
from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.diagnostics import Diagnostics, RebootRequested
from firmware_proto.dtls_client import PskClientConfig
from mqttsn import GatewayConfig
from tests.support.mqtt_stack import ServerSide, gateway_side, server_side

PSKS = {"node-diag": bytes.fromhex("0102030405060708090a0b0c0d0e0f10")}
MAC = "02:00:00:00:d1:01"
MM = "/api/meshota/v1/management/remote_access/devices"


@pytest.mark.integration
def test_node_diagnostics_under_the_grant(tmp_path: Path) -> None:
    with server_side(tmp_path, PSKS) as side:
        asyncio.run(_scenario(side))


def _issue(side: ServerSide, device: str, command: str, **extra: Any) -> Any:
    return side.mgmt.post(f"{MM}/{device}/diagnostics", json={"command": command, **extra})


async def _scenario(side: ServerSide) -> None:
    async with gateway_side(side, PSKS, GatewayConfig(max_topics_per_session=16)) as gw:
        client = DtlsUdpClient(
            gw.relay_address,
            "node-diag",
            dtls=PskClientConfig("node-diag", PSKS["node-diag"]),
            retry_interval=1.0,
        )
        async with client, MqttSnDevice(client, "node-diag", MAC, timeout=10) as node:
            assert await node.authenticate() == 401
            while MAC not in side.mender_ids():
                await asyncio.sleep(0.05)
            await asyncio.to_thread(side.accept_pending)
            assert await node.authenticate() == 200
            device = side.mender_ids()[MAC]
            diag = Diagnostics(enabled=False, boot_ts=0.0)  # the device-side switch starts off
            for i in range(5):
                diag.log.add(float(i), f"boot step {i}")

            # 1. no grant: the command is refused at the server and the node gets nothing
            r = await asyncio.to_thread(_issue, side, device, "ping")
            assert r.status_code == 403 and "not granted" in r.json()["error"], r.text
            assert await diagnostics_round(node, diag) == [] and diag.answered == 0

            # 2. the owner grants diagnostics; the node's own setting is still off: it refuses
            r = await asyncio.to_thread(
                side.mgmt.put, f"{MM}/{device}", json={"duration": 300, "protocols": ["diagnostics"]}
            )
            assert r.status_code == 200, r.text
            assert (await asyncio.to_thread(_issue, side, device, "ping")).status_code == 202
            assert await diagnostics_round(node, diag) == [] and diag.answered == 1
            listing = (await asyncio.to_thread(side.mgmt.get, f"{MM}/{device}/diagnostics")).json()
            assert listing[0]["state"] == "refused"

            # 3. both sides on: ping, logs, reboot (requested of the driver once the server took it)
            diag.enabled = True
            for command, extra in (("ping", {}), ("logs", {"lines": 3}), ("reboot", {})):
                assert (await asyncio.to_thread(_issue, side, device, command, **extra)).status_code == 202
            rounds = [await diagnostics_round(node, diag, clock=lambda: 42.0) for _ in range(3)]
            assert (
                rounds[:2] == [[], []] and len(rounds[2]) == 1 and isinstance(rounds[2][0], RebootRequested)
            )
            listing = (await asyncio.to_thread(side.mgmt.get, f"{MM}/{device}/diagnostics")).json()
            by_command = {c["command"]: c for c in listing if c["state"] == "done"}
            assert by_command["ping"]["result"] == {"uptime": 42.0}
            assert by_command["logs"]["result"]["lines"] == [
                "2.000 boot step 2",
                "3.000 boot step 3",
                "4.000 boot step 4",
            ]
            assert by_command["reboot"]["result"] == {"rebooting": True}

            # 4. the grant is revoked with a command waiting: the node never gets it, it expires
            assert (await asyncio.to_thread(_issue, side, device, "ping")).status_code == 202
            assert (await asyncio.to_thread(side.mgmt.delete, f"{MM}/{device}")).status_code == 204
            answered = diag.answered
            assert await diagnostics_round(node, diag) == [] and diag.answered == answered
            listing = (await asyncio.to_thread(side.mgmt.get, f"{MM}/{device}/diagnostics")).json()
            assert listing[0]["state"] == "expired"

            # audited: who issued what, each answer with its size and duration
            logs = (
                await asyncio.to_thread(
                    side.mgmt.get, "/api/management/v1/auditlogs/logs", params={"per_page": 100}
                )
            ).json()
            actions = [e["action"] for e in logs if e["object"]["id"] == device]
            assert actions.count("remote.diagnostics_refused") == 1
            assert actions.count("remote.diagnostics") == 5
            answers = [json.loads(e["change"]) for e in logs if e["action"] == "remote.diagnostics_answer"]
            assert len(answers) == 4 and all(
                a["bytes"] > 0 and a["user"] == "admin@example.com" for a in answers
            )
