"""PSK provisioning file and certificate loading: good input, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_proto.testing.dtls import make_ca, make_cert, write_pem
from wire.dtls_credentials import (
    CertificateCredentials,
    CredentialsError,
    DtlsServerConfig,
    device_id_from_subject,
    load_psk_file,
    parse_psk_text,
)


def test_psk_file_format(tmp_path: Path) -> None:
    f = tmp_path / "psk.txt"
    f.write_text(
        "# provisioning\n\nnode-0001,000102030405060708090a0b0c0d0e0f\n"
        "  node-0002 , FFEEDDCCBBAA99887766554433221100  # trailing comment\n"
    )
    assert load_psk_file(f) == {
        "node-0001": bytes(range(16)),
        "node-0002": bytes.fromhex("ffeeddccbbaa99887766554433221100"),
    }


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("node-1\n", "psk:1: expected 'identity,hexkey'"),
        ("node-1,00,11,22\n", "or 'identity,hexkey,organisation'"),
        ("node-1,00,a/b\n", "bad organisation id"),
        ("node-1,zz\n", "not hex: 'zz'"),
        ("node-1,abc\n", "not hex: 'abc'"),
        ("node-1," + "00" * 33 + "\n", "33 bytes"),
        ("a b,00\n", "bad identity 'a b'"),
        ("x" * 24 + ",00\n", "bad identity"),
        (",00\n", "bad identity ''"),
        ("n,00\n# c\nn,01\n", "psk:3: identity 'n' is listed twice"),
    ],
)
def test_psk_text_errors_name_line_and_value(text: str, needle: str) -> None:
    with pytest.raises(CredentialsError, match=None) as exc_info:
        parse_psk_text(text, "psk")
    assert needle in str(exc_info.value)


def test_psk_file_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="does not exist"):
        load_psk_file(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(CredentialsError, match="lists no device"):
        load_psk_file(tmp_path / "empty.txt")


def test_device_id_from_subject() -> None:
    assert device_id_from_subject("O=meshota, CN=node-7") == "node-7"
    assert device_id_from_subject("CN=node 7") is None
    assert device_id_from_subject("O=meshota") is None


def test_certificate_files_load_and_errors(tmp_path: Path) -> None:
    ca = make_ca()
    crt, key = make_cert(ca, "gateway")
    ca_path, _ = write_pem(tmp_path, "ca", *ca)
    crt_path, key_path = write_pem(tmp_path, "gw", crt, key)
    creds = CertificateCredentials.from_files(crt_path, key_path, ca_path)
    assert creds.chain[0] == crt and creds.ca[0] == ca[0]
    with pytest.raises(CredentialsError, match="--cert"):
        CertificateCredentials.from_files(key_path, key_path, ca_path)
    with pytest.raises(CredentialsError, match="--key"):
        CertificateCredentials.from_files(crt_path, crt_path, ca_path)
    with pytest.raises(CredentialsError, match="--ca"):
        CertificateCredentials.from_files(crt_path, key_path, tmp_path / "missing.pem")


def test_server_config_needs_something() -> None:
    with pytest.raises(CredentialsError):
        DtlsServerConfig()
