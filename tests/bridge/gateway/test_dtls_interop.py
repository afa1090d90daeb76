"""Interop with a DTLS peer no one here wrote: ``openssl s_client -dtls1_2`` (PSK and certificate)
against DtlsServer behind a small asyncio UDP driver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from bridge.gateway.dtls_server import ApplicationData, DtlsServer, SessionEstablished
from firmware_proto.testing.dtls import make_ca, make_cert, write_pem
from tests.support.dtls_udp import EchoDtlsGateway
from wire.dtls_credentials import CertificateCredentials, DtlsServerConfig

pytestmark = pytest.mark.integration
OPENSSL = shutil.which("openssl")
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


async def run_s_client(gateway: EchoDtlsGateway, args: list[str], marker: bytes) -> bytes:
    host, port = await gateway.start()
    assert OPENSSL is not None
    proc = await asyncio.create_subprocess_exec(
        OPENSSL,
        "s_client",
        "-dtls1_2",
        "-connect",
        f"{host}:{port}",
        "-ign_eof",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    seen = b""
    try:

        async def read_until(needle: bytes) -> None:
            nonlocal seen
            while needle not in seen:
                chunk = await proc.stdout.read(4096)  # type: ignore[union-attr]
                if not chunk:
                    raise AssertionError(f"s_client ended early:\n{seen.decode(errors='replace')}")
                seen += chunk

        # wait for the handshake to finish before typing, then type one line
        await asyncio.wait_for(
            _until(lambda: any(isinstance(e, SessionEstablished) for e in gateway.events)), 10
        )
        proc.stdin.write(marker + b"\n")
        await proc.stdin.drain()
        await asyncio.wait_for(read_until(b"echo:" + marker), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        gateway.close()
    return seen


async def _until(predicate: object) -> None:
    while not predicate():  # type: ignore[operator]
        await asyncio.sleep(0.01)


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
def test_openssl_s_client_psk() -> None:
    gateway = EchoDtlsGateway(DtlsServer(DtlsServerConfig(psk={"node-ossl": KEY})))
    args = ["-psk", KEY.hex(), "-psk_identity", "node-ossl", "-cipher", "PSK-AES128-CCM8"]
    asyncio.run(run_s_client(gateway, args, b"PINGREQ-marker-1"))
    assert SessionEstablished(gateway.events[0].peer, "node-ossl") in gateway.events
    data = [e for e in gateway.events if isinstance(e, ApplicationData)]
    assert data[0].device_id == "node-ossl"
    assert data[0].plaintext == b"PINGREQ-marker-1\n"


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
def test_openssl_s_client_certificate(tmp_path: Path) -> None:
    ca = make_ca("interop CA")
    server_crt, server_key = make_cert(ca, "gateway", 20)
    node_crt, node_key = make_cert(ca, "node-x509", 21)
    ca_path, _ = write_pem(tmp_path, "ca", *ca)
    crt_path, key_path = write_pem(tmp_path, "node", node_crt, node_key)
    s_crt, s_key = write_pem(tmp_path, "gateway", server_crt, server_key)
    creds = CertificateCredentials.from_files(s_crt, s_key, ca_path)
    gateway = EchoDtlsGateway(DtlsServer(DtlsServerConfig(certificate=creds)))
    args = [
        "-cert",
        str(crt_path),
        "-key",
        str(key_path),
        "-CAfile",
        str(ca_path),
        "-verify_return_error",
        "-cipher",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ]
    out = asyncio.run(run_s_client(gateway, args, b"CONNECT-marker-2"))
    assert b"Verify return code: 0 (ok)" in out
    assert any(
        e == SessionEstablished(e.peer, "node-x509")
        for e in gateway.events
        if isinstance(e, SessionEstablished)
    )
    data = [e for e in gateway.events if isinstance(e, ApplicationData)]
    assert data[0].plaintext == b"CONNECT-marker-2\n" and data[0].device_id == "node-x509"
