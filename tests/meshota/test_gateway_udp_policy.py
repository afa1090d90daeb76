"""`meshota gateway --udp` next to `--dtls`: keyless clients cannot use a client id the PSK file
would authenticate (unless --udp-allow-unverified); next to a certificate CA (where any id may be
a CN) plain UDP needs --udp-allow-unverified explicitly."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_proto.aio.mqttsn_udp import ConnectFailed, UdpClient
from meshota.cli.gateway import gateway_main
from tests.support.broker import Mosquitto
from tests.support.gateway_dtls import make_pki

MESHOTA = [sys.executable, "-m", "meshota"]


def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_udp_next_to_a_certificate_ca_needs_allow_unverified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_pki(tmp_path)
    argv = ["--broker", "mqtt://127.0.0.1:1", "--udp", "127.0.0.1:0", "--dtls", "127.0.0.1:0",
            "--cert", str(pki.gateway_cert), "--key", str(pki.gateway_key), "--ca", str(pki.ca)]  # fmt: skip
    assert gateway_main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--udp-allow-unverified" in line


@pytest.mark.integration
@pytest.mark.parametrize("allow", [False, True])
def test_plain_udp_cannot_use_a_psk_identity(mosquitto: Mosquitto, tmp_path: Path, allow: bool) -> None:
    psk = tmp_path / "keys.psk"
    psk.write_text("node-1,00112233445566778899aabbccddeeff\n")
    port = _free_udp()
    proc = subprocess.Popen(
        [*MESHOTA, "gateway", "--broker", mosquitto.url, "--udp", f"127.0.0.1:{port}",
         "--dtls", f"127.0.0.1:{_free_udp()}", "--psk-file", str(psk),
         *(["--udp-allow-unverified"] if allow else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and "udp 127.0.0.1" in proc.stdout.readline()

        async def main() -> None:
            if allow:
                async with UdpClient(("127.0.0.1", port), "node-1", connect_timeout=10) as c:
                    await c.ping()
            else:
                with pytest.raises(ConnectFailed) as err:
                    async with UdpClient(("127.0.0.1", port), "node-1", connect_timeout=10):
                        pass
                assert err.value.return_code == 0x03
            async with UdpClient(("127.0.0.1", port), "sensor-1", connect_timeout=10) as c:
                await c.ping()  # other ids are fine

        asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-unverified-sessions", "-1"),
        ("--max-unverified-per-source", "-3"),
        ("--max-broker-connecting", "0"),
        ("--unverified-connect-rate", "nan"),
        ("--unverified-connect-rate-per-source", "-1"),
        ("--unverified-connect-rate", "inf"),
    ],
)
def test_bad_keyless_limits_exit_2_naming_the_flag(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gateway_main(["--broker", "mqtt://127.0.0.1:1", "--udp", "127.0.0.1:0", f"{flag}={value}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert flag in line
