"""A DTLS peer no one here wrote: ``openssl s_client -dtls1_2`` (PSK, and with a certificate)
against the real gateway driver — in process, and ``meshota gateway --dtls`` as a user runs it.
Raw MQTT-SN bytes go through s_client's stdin; the gateway's answers come out of its stdout."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import pytest

from bridge.gateway.dtls_server import SessionEstablished
from mqttsn import Connect, Disconnect, Pingreq, encode
from tests.support.broker import Mosquitto
from tests.support.gateway_dtls import KEYS, dtls_gateway, make_pki

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed"),
]

CONNACK_ACCEPTED = b"\x03\x05\x00"
PINGRESP = b"\x02\x17"


class SClient:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen = b""

    @classmethod
    async def start(cls, address: tuple[str, int], args: list[str]) -> SClient:
        proc = await asyncio.create_subprocess_exec(
            "openssl",
            "s_client",
            "-dtls1_2",
            "-connect",
            f"{address[0]}:{address[1]}",
            "-quiet",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)  # one write → one read by s_client → one DTLS record
        await self.proc.stdin.drain()

    async def read_until(self, needle: bytes, timeout: float = 10.0) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while needle not in self.seen:
                chunk = await self.proc.stdout.read(4096)
                if not chunk:
                    err = await self.proc.stderr.read() if self.proc.stderr else b""
                    raise AssertionError(f"s_client ended: {self.seen!r} {err.decode(errors='replace')}")
                self.seen += chunk

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


async def _until(predicate: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def speak_mqttsn(client: SClient, device: str, established: object) -> None:
    await _until(established)
    await client.write(encode(Connect(device, 60, True, False)))
    await client.read_until(CONNACK_ACCEPTED)
    await client.write(encode(Pingreq()))
    await client.read_until(PINGRESP)
    await client.write(encode(Disconnect()))
    await client.read_until(CONNACK_ACCEPTED + PINGRESP + b"\x02\x18")


@pytest.mark.parametrize("kind", ["psk", "certificate"])
def test_openssl_s_client_gets_connack_and_pingresp(mosquitto: Mosquitto, tmp_path: Path, kind: str) -> None:
    pki = make_pki(tmp_path)
    if kind == "psk":
        device = "node-a"
        args = ["-psk", KEYS[device].hex(), "-psk_identity", device, "-cipher", "PSK-AES128-CCM8"]
    else:
        device = "node-x1"
        crt, key = pki.nodes[device]
        args = [
            "-cert",
            str(crt),
            "-key",
            str(key),
            "-CAfile",
            str(pki.ca),
            "-verify_return_error",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ]

    async def main() -> None:
        async with dtls_gateway(mosquitto, psk_keys=KEYS, certificate=pki.credentials()) as gw:
            client = await SClient.start(gw.listener.address, args)
            try:
                await speak_mqttsn(
                    client, device, lambda: any(isinstance(e, SessionEstablished) for e in gw.dtls_events)
                )
            finally:
                await client.close()
            (est,) = [e for e in gw.dtls_events if isinstance(e, SessionEstablished)]
            assert est.device_id == device
            assert [a.identity for a in gw.actions if type(a).__name__ == "BrokerConnect"] == [device]

    asyncio.run(main())


def test_meshota_gateway_cli_with_dtls_answers_openssl(mosquitto: Mosquitto, tmp_path: Path) -> None:
    psk_file = tmp_path / "devices.psk"
    psk_file.write_text("# test devices\n" + "".join(f"{i},{k.hex()}\n" for i, k in KEYS.items()))

    async def main() -> None:
        gateway = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "meshota",
            "gateway",
            "--broker",
            mosquitto.url,
            "--dtls",
            "127.0.0.1:0",
            "--psk-file",
            str(psk_file),
            "-v",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert gateway.stdout is not None and gateway.stderr is not None
        try:
            line = (await asyncio.wait_for(gateway.stdout.readline(), 20)).decode()
            m = re.search(r"dtls 127\.0\.0\.1:(\d+) -> ", line)
            assert m, line
            client = await SClient.start(
                ("127.0.0.1", int(m.group(1))),
                ["-psk", KEYS["node-b"].hex(), "-psk_identity", "node-b", "-cipher", "PSK-AES128-CCM8"],
            )
            stderr = b""

            async def established() -> None:
                nonlocal stderr
                while b"established as device 'node-b'" not in stderr:
                    stderr += await gateway.stderr.readline()  # type: ignore[union-attr]

            try:
                await asyncio.wait_for(established(), 10)
                await speak_mqttsn(client, "node-b", lambda: True)
            finally:
                await client.close()
        finally:
            gateway.terminate()
            rc = await gateway.wait()
        assert rc == 0

    asyncio.run(main())
