"""`meshota gateway` broker password: from a file, from the environment or (discouraged) the
command line; passwords that start with '-' work in every form; bad sources exit 2 with one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from meshota.broker import MosquittoProcess
from meshota.cli._args import ConfigError
from meshota.cli.gateway import _join_values, build_parser, load_broker_password
from tests.support.broker import start_test_mosquitto

MESHOTA = [sys.executable, "-m", "meshota"]
USER = "gw"
PASSWORD = "-dash first; spaces & -- too"


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    pw = tmp_path / "passwd"
    pw.write_text("")
    pw.chmod(0o644)
    subprocess.run(["mosquitto_passwd", "-b", str(pw), USER, PASSWORD], check=True, capture_output=True)
    pw.chmod(0o644)
    stay = "user root\n" if os.geteuid() == 0 else ""
    broker = start_test_mosquitto(
        tmp_path / "m", extra_conf=f"allow_anonymous false\npassword_file {pw}\n{stay}"
    )
    try:
        yield broker
    finally:
        broker.stop()


def _free_udp() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def start_gateway(broker: MosquittoProcess, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the gateway until it says it is up (or exits); return (exit code or 0 if up, output)."""
    proc = subprocess.Popen(
        [*MESHOTA, "gateway", "--broker", broker.url, "--udp", _free_udp(), "--broker-username", USER, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.startswith("meshota gateway: udp"):
        proc.terminate()
        proc.wait(10)
        return 0, line
    rc = proc.wait(30)
    assert proc.stderr is not None
    return rc, proc.stderr.read()


@pytest.mark.integration
def test_password_from_file_env_and_dash_leading_argument(
    locked_broker: MosquittoProcess, tmp_path: Path
) -> None:
    secret = tmp_path / "broker.secret"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    assert start_gateway(locked_broker, "--broker-password-file", str(secret))[0] == 0
    env = {"GW_SECRET": PASSWORD}
    assert start_gateway(locked_broker, "--broker-password-env", "GW_SECRET", env=env)[0] == 0
    assert start_gateway(locked_broker, "--broker-password", PASSWORD)[0] == 0
    assert start_gateway(locked_broker, f"--broker-password={PASSWORD}")[0] == 0
    # and a wrong one really is refused by the broker
    rc, err = start_gateway(locked_broker, "--broker-password", "-wrong")
    assert rc == 1 and "cannot connect to broker" in err


def test_bad_password_sources_exit_2_with_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for args, needle in (
        (["--broker-password-file", str(tmp_path / "none")], "--broker-password-file"),
        (["--broker-password-file", str(empty)], "is empty"),
        (["--broker-password-env", "MESHOTA_NO_SUCH_VAR_X"], "MESHOTA_NO_SUCH_VAR_X"),
    ):
        r = subprocess.run(
            [*MESHOTA, "gateway", "--broker", "mqtt://127.0.0.1:1", "--udp", "127.0.0.1:0", *args],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
    r = subprocess.run(
        [*MESHOTA, "gateway", "--broker", "mqtt://127.0.0.1:1", "--udp", "127.0.0.1:0",
         "--broker-password", "a", "--broker-password-env", "B"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 2 and "not allowed with" in r.stderr


@settings(max_examples=200, deadline=None)
@example(password="--")  # argparse (CPython < 3.13) drops an option value that is exactly "--"
@example(password="-")
@given(password=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1))
def test_any_password_survives_the_command_line(password: str) -> None:
    base = ["--broker", "mqtt://h:1", "--udp", "127.0.0.1:0"]
    args = build_parser().parse_args(_join_values([*base, "--broker-password", password]))
    assert load_broker_password(args) == password


def test_password_file_keeps_everything_but_one_trailing_newline(tmp_path: Path) -> None:
    f = tmp_path / "s"
    for text, want in (("-p\n", "-p"), ("-p\r\n", "-p"), (" p \n\n", " p \n"), ("p", "p")):
        f.write_text(text, newline="")
        args = build_parser().parse_args(["--broker", "mqtt://h:1", "--broker-password-file", str(f)])
        assert load_broker_password(args) == want
    args = build_parser().parse_args(["--broker", "mqtt://h:1"])
    assert load_broker_password(args) is None
    f.write_bytes(b"\xff\xfe")
    args = build_parser().parse_args(["--broker", "mqtt://h:1", "--broker-password-file", str(f)])
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_broker_password(args)
