"""What a ``meshota gateway`` process loads: only what a gateway needs (idle RSS target 25 MB).

The real command, with DTLS (PSK) and UDP on, against a real mosquitto, run with
``python -X importtime``: the interpreter writes one line to stderr for every module it imports,
so the test reads the process's own list of imports once it listens. It fails when something
pulls in the server side (SQLAlchemy, Starlette, httpx), the heavy optional libraries, OpenSSL,
python-mbedtls's unused extensions, or the MQTT-SN client half.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.support.broker import Mosquitto, free_port

FORBIDDEN = {
    "numpy", "matplotlib", "rich", "sqlalchemy", "alembic", "starlette", "uvicorn", "httpx",
    "cryptography", "paho", "aiomqtt",
    "_ssl",  # OpenSSL: asyncio runs without it in a gateway process
    "mbedtls.cipher", "mbedtls.hkdf", "mbedtls.hmac", "mbedtls.secrets",  # not used by DTLS
    "mqttsn._client", "mqttsn._client_events",  # the node side of MQTT-SN
}  # fmt: skip


def _imports(stderr: str) -> set[str]:
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_gateway_process_imports_only_what_it_needs(mosquitto: Mosquitto, tmp_path: Path) -> None:
    psk = tmp_path / "psk.txt"
    psk.write_text("node-1,00112233445566778899aabbccddeeff\n")
    udp, dtls = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    err = tmp_path / "stderr"
    argv = [sys.executable, "-X", "importtime", "-m", "meshota", "gateway", "--broker", mosquitto.url,
            "--udp", f"127.0.0.1:{udp}", "--dtls", f"127.0.0.1:{dtls}", "--psk-file", str(psk)]  # fmt: skip
    with err.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=out)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"meshota gateway: udp"), err.read_text()[-2000:]
    finally:
        proc.terminate()
        proc.wait(20)
    loaded = _imports(err.read_text())
    expected = {"asyncio", "mbedtls.tls", "mqttsn._gateway_session", "bridge.gateway.dtls_listener"}
    assert expected <= loaded, sorted(expected - loaded)
    found = {name for name in loaded if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN}
    assert not found, f"the gateway process imports {sorted(found)}"
