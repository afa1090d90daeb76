"""A reloaded PSK table (SIGHUP to ``meshota gateway``, or DtlsListener.replace_psk): a removed or
re-keyed device loses its DTLS session at once, the others keep theirs, a new device can join,
and a file that does not parse keeps the old table."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest

from firmware_proto.aio.dtls_node import DtlsUdpClient
from firmware_proto.aio.mqttsn_udp import ConnectFailed
from firmware_proto.dtls_client import SessionClosed
from tests.support.broker import Mosquitto
from tests.support.gateway_dtls import KEYS, dtls_gateway, psk


async def _closed(client: DtlsUdpClient, timeout: float = 5.0) -> SessionClosed:
    async with asyncio.timeout(timeout):
        while True:
            for event in client.dtls_events:
                if isinstance(event, SessionClosed):
                    return event
            await asyncio.sleep(0.01)


def test_replace_psk_cuts_off_removed_and_rekeyed_devices_only(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        first = {"node-a": KEYS["node-a"], "node-b": KEYS["node-b"]}
        async with dtls_gateway(mosquitto, psk_keys=first, live_contexts=1) as gw:
            a = DtlsUdpClient(gw.listener.address, "node-a", dtls=psk("node-a"), handshake_timeout=3)
            b = DtlsUdpClient(gw.listener.address, "node-b", dtls=psk("node-b"))
            async with a, b:
                await a.publish("dev/node-a/up", b"1", qos=1)
                await b.publish("dev/node-b/up", b"1", qos=1)
                closed = gw.listener.replace_psk({"node-b": KEYS["node-b"], "node-c": KEYS["node-c"]})
                assert closed == ["node-a"]
                assert "close_notify" in (await _closed(a)).reason
                await b.publish("dev/node-b/up", b"2", qos=1)  # untouched: same session
                assert not any(isinstance(e, SessionClosed) for e in b.dtls_events)
                async with DtlsUdpClient(gw.listener.address, "node-c", dtls=psk("node-c")) as c:
                    await c.publish("dev/node-c/up", b"1", qos=1)  # added: may join now
                with pytest.raises(ConnectFailed):  # removed: its handshake fails
                    async with DtlsUdpClient(
                        gw.listener.address, "node-a", dtls=psk("node-a"), handshake_timeout=3
                    ):
                        pass
                # a re-keyed identity is cut off too
                assert gw.listener.replace_psk({"node-b": bytes(16)}) == ["node-b"]
                await _closed(b)

    asyncio.run(main())


def test_sighup_reloads_the_psk_file(mosquitto: Mosquitto, tmp_path: Path) -> None:
    psk_file = tmp_path / "devices.psk"
    psk_file.write_text(f"node-a,{KEYS['node-a'].hex()}\nnode-b,{KEYS['node-b'].hex()}\n")

    async def main() -> None:
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meshota", "gateway", "--broker", mosquitto.url,
            "--dtls", "127.0.0.1:0", "--psk-file", str(psk_file),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert gateway.stdout is not None and gateway.stderr is not None
        try:
            line = (await asyncio.wait_for(gateway.stdout.readline(), 20)).decode()
            m = re.search(r"dtls 127\.0\.0\.1:(\d+) -> ", line)
            assert m, line
            addr = ("127.0.0.1", int(m.group(1)))
            async with DtlsUdpClient(addr, "node-a", dtls=psk("node-a")) as a:
                await a.publish("dev/node-a/up", b"1", qos=1)
                psk_file.write_text("node-b,not-hex\n")  # a broken file: nothing changes
                gateway.send_signal(signal.SIGHUP)
                err = (await asyncio.wait_for(gateway.stderr.readline(), 10)).decode()
                assert "not reloaded" in err and "devices.psk" in err, err
                await a.publish("dev/node-a/up", b"2", qos=1)
                psk_file.write_text(f"node-b,{KEYS['node-b'].hex()}\nnode-c,{KEYS['node-c'].hex()}\n")
                gateway.send_signal(signal.SIGHUP)
                err = (await asyncio.wait_for(gateway.stderr.readline(), 10)).decode()
                assert "reloaded: 2 identities; sessions ended: node-a" in err, err
                assert "close_notify" in (await _closed(a)).reason
            async with DtlsUdpClient(addr, "node-c", dtls=psk("node-c")) as c:
                await c.publish("dev/node-c/up", b"1", qos=1)
        finally:
            gateway.terminate()
            rc = await gateway.wait()
        assert rc == 0

    asyncio.run(main())
