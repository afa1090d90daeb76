"""``meshota gateway`` DTLS options: every config error exits 2 with one line naming the value."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from meshota.cli.gateway import build_parser, gateway_main, load_dtls_options
from tests.support.broker import Mosquitto
from tests.support.gateway_dtls import make_pki

BROKER = ["--broker", "mqtt://127.0.0.1:1883"]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    pki = make_pki(tmp_path)
    good = tmp_path / "good.psk"
    good.write_text("node-1,00112233445566778899aabbccddeeff  # a comment\n")
    bad = tmp_path / "bad.psk"
    bad.write_text("node-1,0011\nnode-2,zz\n")
    org = tmp_path / "org.psk"
    org.write_text("node-1,0011,org-a\nnode-2,0022\nnode-3,0033,a/b\n")
    creds = tmp_path / "tenants"
    creds.write_text("org-a\n")
    clash = tmp_path / "clash.map"
    clash.write_text("node-1,org-b\n")
    return {
        "clash": str(clash),
        "org": str(org),
        "creds": str(creds),
        "good": str(good),
        "bad": str(bad),
        "missing": str(tmp_path / "nope.psk"),
        "cert": str(pki.gateway_cert),
        "key": str(pki.gateway_key),
        "ca": str(pki.ca),
    }


_PSK = ["--dtls", "127.0.0.1:0", "--psk-file", "{good}"]
CASES = [
    ([], "--udp H:P or --dtls H:P"),
    (["--dtls", "127.0.0.1:0"], "--dtls 127.0.0.1:0: needs --psk-file"),
    (["--udp", "127.0.0.1:0", "--psk-file", "{good}"], "--psk-file: only used with --dtls"),
    (["--dtls", "nowhere", "--psk-file", "{good}"], "--dtls"),
    (["--dtls", "127.0.0.1:0", "--psk-file", "{missing}"], "nope.psk"),
    (["--dtls", "127.0.0.1:0", "--psk-file", "{bad}"], "bad.psk:2"),
    (["--dtls", "127.0.0.1:0", "--cert", "{cert}", "--ca", "{ca}"], "--key: needed with --cert, --ca"),
    (["--dtls", "127.0.0.1:0", "--cert", "{missing}", "--key", "{key}", "--ca", "{ca}"], "nope.psk"),
    (["--dtls", "127.0.0.1:0", "--cert", "{cert}", "--key", "{cert}", "--ca", "{ca}"], "--key"),
    (["--dtls", "127.0.0.1:0", "--psk-file", "{good}", "--max-dtls-sessions", "0"], "--max-dtls-sessions"),
    (["--dtls", "127.0.0.1:0", "--psk-file", "{good}", "--dtls-idle-timeout", "0"], "--dtls-idle-timeout"),
    ([*_PSK, "--dtls-max-handshakes", "0"], "--dtls-max-handshakes"),
    ([*_PSK, "--dtls-handshakes-per-source", "-1"], "--dtls-handshakes-per-source"),
    ([*_PSK, "--dtls-handshakes-per-relay", "0"], "--dtls-handshakes-per-relay"),
    ([*_PSK, "--dtls-handshake-rate", "inf"], "--dtls-handshake-rate"),
    ([*_PSK, "--dtls-handshake-timeout", "nan"], "--dtls-handshake-timeout"),
    (["--dtls", "127.0.0.1:0", "--psk-file", "{org}"], "org.psk:3: bad organisation id 'a/b'"),
    ([*_PSK, "--tenant-credentials", "{creds}"], "--tenant-credentials: "),
    ([*_PSK, "--tenant-credentials", "{missing}"], "--tenant-credentials: cannot read"),
    (["--udp", "127.0.0.1:0", "--tenant-map", "{clash}"], "--tenant-map: only used with --dtls"),
    (
        ["--dtls", "127.0.0.1:0", "--psk-file", "{good}", "--tenant-map", "{missing}"],
        "--tenant-map: tenant map",
    ),
    (["--dtls", "127.0.0.1:0", "--psk-file", "{good}", "--tenant-map", "{org}"], "--tenant-map: "),
]


@pytest.mark.parametrize(("args", "needle"), CASES)
def test_dtls_config_errors_exit_2_with_one_line(
    args: list[str], needle: str, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*BROKER, *(a.format(**files) for a in args)]
    assert gateway_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("meshota gateway: ") and needle in err[0], err


def test_good_options_load_psk_and_certificate(files: dict[str, str]) -> None:
    args = build_parser().parse_args(
        [
            *BROKER,
            "--dtls",
            "[::1]:5684",
            "--psk-file",
            files["good"],
            "--cert",
            files["cert"],
            "--key",
            files["key"],
            "--ca",
            files["ca"],
            "--max-dtls-sessions",
            "7",
            "--dtls-idle-timeout",
            "60",
        ]
    )
    opts = load_dtls_options(args)
    assert opts is not None
    assert opts.address == ("::1", 5684) and opts.max_sessions == 7 and opts.idle_timeout == 60.0
    assert opts.credentials.psk == {"node-1": bytes.fromhex("00112233445566778899aabbccddeeff")}
    assert opts.credentials.certificate is not None
    assert load_dtls_options(build_parser().parse_args([*BROKER, "--udp", "127.0.0.1:0"])) is None


def test_psk_file_names_organisations(tmp_path: Path) -> None:
    psk = tmp_path / "psk.txt"
    psk.write_text("node-1,0011,org-a\nnode-2,0022\nnode-3,0033,default\n")
    opts = load_dtls_options(
        build_parser().parse_args([*BROKER, "--dtls", "127.0.0.1:0", "--psk-file", str(psk)])
    )
    assert opts is not None and opts.tenants == {"node-1": "org-a"}
    assert set(opts.credentials.psk or {}) == {"node-1", "node-2", "node-3"}
    # certificate identities (or PSK ones without the column): --tenant-map; both must agree
    tmap = tmp_path / "tenants.map"
    tmap.write_text("cert-7,org-c  # a certificate CN\nnode-2,org-a\nnode-1,org-a\nnode-3,default\n")
    argv = [*BROKER, "--dtls", "127.0.0.1:0", "--psk-file", str(psk), "--tenant-map", str(tmap)]
    opts = load_dtls_options(build_parser().parse_args(argv))
    assert opts is not None and opts.tenants == {"node-1": "org-a", "node-2": "org-a", "cert-7": "org-c"}
    tmap.write_text("node-1,org-b\n")
    with pytest.raises(Exception, match="'node-1': 'org-b' here, 'org-a' in --psk-file"):
        load_dtls_options(build_parser().parse_args(argv))


def test_half_open_budget_options(files: dict[str, str]) -> None:
    base = [*BROKER, "--dtls", "127.0.0.1:0", "--psk-file", files["good"]]
    opts = load_dtls_options(build_parser().parse_args(base))
    assert opts is not None and opts.limits is not None
    assert (opts.handshake_timeout, opts.limits.max_handshakes, opts.limits.per_source) == (15.0, 256, 32)
    assert (opts.limits.per_relay, opts.limits.rate, opts.limits.burst) == (16, 20.0, 40)
    opts = load_dtls_options(
        build_parser().parse_args(
            [*base, "--dtls-handshake-timeout", "4", "--dtls-max-handshakes", "9",
             "--dtls-handshakes-per-source", "3", "--dtls-handshakes-per-relay", "2",
             "--dtls-handshake-rate", "0.5", "--max-dtls-sessions", "70"]
        )
    )  # fmt: skip
    assert opts is not None and opts.limits is not None
    assert opts.handshake_timeout == 4.0
    assert (opts.limits.max_handshakes, opts.limits.per_source, opts.limits.per_relay) == (9, 3, 2)
    assert (opts.limits.rate, opts.limits.burst, opts.limits.known_peers) == (0.5, 1, 70)


@pytest.mark.integration
def test_dtls_port_in_use_exits_2(
    mosquitto: Mosquitto, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        rc = gateway_main(
            ["--broker", mosquitto.url, "--dtls", f"127.0.0.1:{port}", "--psk-file", files["good"]]
        )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--dtls 127.0.0.1:{port}" in err[0], err
