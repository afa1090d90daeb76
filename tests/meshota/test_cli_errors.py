"""Every ``meshota`` command: one error style (one stderr line ``meshota <cmd>: error: ...``, exit 2)
and lazy imports (``meshota --help`` loads no bridge, SQLAlchemy or mbedTLS)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshota.cli import COMMANDS, main

HEAVY = {"bridge", "sqlalchemy", "mbedtls", "aiomqtt", "paho", "matplotlib", "httpx", "uvicorn"}
# our own packages below meshota: a command loads them only once chosen
OURS = {"bridge", "firmware_proto", "mesh_sim", "mqttsn", "wire"}


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_option_is_one_line_and_exit_2(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main([command, "--no-such-option"], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"meshota {command}: error: "), err


def bad_values(tmp: Path) -> dict[str, list[str]]:
    """A bad value for each command, found after argparse (the command's own checks)."""
    return {
        "gateway": ["--broker", "mqtt://127.0.0.1:1883", "--udp", "nowhere"],
        "server": ["--http", "nope", "--db", f"sqlite:///{tmp}/x.db", "--artifacts", str(tmp)],
        "admin": ["create-user", "--db", "bogus://", "--username", "a", "--password-env", "HOME"],
        "up": ["--config", str(tmp / "missing.toml"), "--data", str(tmp / "data")],
        "relay": ["--gateway", "tcp://127.0.0.1:1", "--listen", "udp://127.0.0.1:0"],
        "broker-config": ["--out", str(tmp), "--acl-only", "--gateway-topic", "bogus"],
        "sim": [str(tmp / "missing.toml")],
        "demo": ["--nodes", "0"],
        "telemetry": ["show", "--config", str(tmp / "missing.toml"), "--data", str(tmp / "data")],
        "collector": ["--db", str(tmp / "c.db"), "--listen", "nowhere"],
        "bundle": ["verify", "--trust", str(tmp / "no-trust"), str(tmp / "b.tar")],
    }


def test_every_command_has_a_bad_value_case(tmp_path: Path) -> None:
    assert set(bad_values(tmp_path)) == set(COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_value_is_one_line_and_exit_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main([command, *bad_values(tmp_path)[command]], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"meshota {command}"), err
    assert ": error: " in err[0], err


def test_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(["frobnicate"], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("meshota: error: unknown command 'frobnicate'"), err


def modules_after(argv: list[str]) -> tuple[int, set[str]]:
    """Run ``python -m meshota ARGV`` in a fresh interpreter; the top-level packages it imported."""
    code = (
        "import json, runpy, sys\n"
        f"sys.argv = ['meshota', *{argv!r}]\n"
        "try:\n"
        "    runpy.run_module('meshota', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code\n"
        "sys.stdout = sys.__stdout__\n"
        "print(json.dumps([rc, sorted({m.split('.')[0] for m in sys.modules})]), file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    rc, modules = json.loads(r.stderr.strip().splitlines()[-1])
    return rc, set(modules)


def test_meshota_help_imports_no_command() -> None:
    rc, modules = modules_after(["--help"])
    assert rc == 0
    assert "meshota" in modules  # the probe works
    assert not modules & (HEAVY | OURS), modules & (HEAVY | OURS)
    rc, modules = modules_after(["server", "--help"])  # and would see a heavy import
    assert rc == 0 and {"bridge", "sqlalchemy"} <= modules


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        ("gateway", {"mqttsn"}),
        ("relay", set()),
        ("broker-config", {"wire"}),  # wire.tenant_topics (re only) checks --tenant ids
        ("sim", set()),
        ("demo", set()),
    ],
)
def test_command_help_imports_only_what_its_parser_needs(command: str, allowed: set[str]) -> None:
    rc, modules = modules_after([command, "--help"])
    assert rc == 0
    assert not modules & (HEAVY | OURS - allowed), modules & (HEAVY | OURS)


def test_a_bad_rollout_tick_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "server",
        "--http",
        "127.0.0.1:0",
        "--db",
        f"sqlite:///{tmp_path}/x.db",
        "--artifacts",
        str(tmp_path),
    ]
    code, err = run_main([*argv, "--rollout-tick", "-5"], capsys)
    assert code == 2
    assert len(err) == 1 and "bad --rollout-tick value -5" in err[0], err
