"""``meshota server`` / ``meshota admin`` mains: config errors exit 2 naming the value;
admin commands write through the service layer."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

from bridge.http import BackgroundServer, ServerConfig
from meshota.cli.server import admin_main, server_main
from tests.support.mender import Db, device_key, device_login, make_artifact


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--http", "nope", "--db", "sqlite:///x", "--artifacts", "/tmp/a"], "'nope'"),
        (["--http", "127.0.0.1:80", "--db", "mysql://h/x", "--artifacts", "/tmp/a"], "mysql"),
        (
            [
                "--http",
                "127.0.0.1:80",
                "--db",
                "sqlite:///x",
                "--artifacts",
                "/tmp/a",
                "--verify-key",
                "/nonexistent.pem",
            ],
            "/nonexistent.pem",
        ),
        (
            [
                "--http",
                "127.0.0.1:80",
                "--db",
                "sqlite:///x",
                "--artifacts",
                "/tmp/a",
                "--tls-cert",
                "/nonexistent.crt",
                "--tls-key",
                "/nonexistent.key",
            ],
            "/nonexistent.crt",
        ),
    ],
)
def test_server_config_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert server_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_server_bad_broker_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--http", "127.0.0.1:80", "--db", f"sqlite:///{tmp_path}/x.db", "--artifacts", str(tmp_path)]
    assert server_main([*argv, "--broker", "http://b:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "meshota server: error: --broker: expected mqtt://HOST:PORT, got 'http://b:1'"


def test_admin_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        admin_main(["deploy", "--db", "sqlite:///x"])
    assert exc.value.code == 2
    assert admin_main(["create-user", "--db", "bogus://", "--username", "a", "--password-env", "HOME"]) == 2


def test_admin_password_never_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'x.db'}"]
    assert admin_main(["create-user", *db, "--username", "a@x", "--password", "password1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--password is not accepted" in err[0]
    monkeypatch.delenv("NO_SUCH_PW", raising=False)
    assert admin_main(["create-user", *db, "--username", "a@x", "--password-env", "NO_SUCH_PW"]) == 2
    assert "NO_SUCH_PW is not set" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert admin_main(["create-user", *db, "--username", "a@x", "--password-file", str(empty)]) == 2
    assert "empty password" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin-1\n"))
    assert admin_main(["create-user", *db, "--username", "a@x"]) == 0
    monkeypatch.setenv("SOME_PW", "from-env-1")
    assert admin_main(["create-user", *db, "--username", "b@x", "--password-env", "SOME_PW"]) == 0
    assert admin_main(["deployment-key", *db, "--out", str(tmp_path / "k.pem")]) == 0
    pem = (tmp_path / "k.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert admin_main(["deployment-key", *db]) == 0  # the same key: created once
    assert capsys.readouterr().out.endswith(pem.decode())


def test_admin_schema_errors(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["create-user", "--db", "sqlite:///x", "--username", "a", "--password-env", "HOME"]
    assert admin_main([*argv, "--db-schema", "abc"]) == 2
    assert "only supported on PostgreSQL" in capsys.readouterr().err
    pg = ["create-user", "--db", "postgresql://u@127.0.0.1/x", "--username", "a", "--password-env", "HOME"]
    assert admin_main([*pg, "--db-schema", "Bad-Name"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'Bad-Name'" in err
    server = ["--http", "127.0.0.1:80", "--db", "sqlite:///x", "--artifacts", "/tmp/a", "--db-schema", "s"]
    assert server_main(server) == 2


def test_admin_create_accept_deploy(db: Db, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # PostgreSQL: the per-test schema goes in --db-schema, as an operator would use it
    dbargs = ["--db", db.url] + (["--db-schema", db.schema] if db.schema else [])
    pw = tmp_path / "pw"
    pw.write_text("password1\n")
    assert admin_main(["create-user", *dbargs, "--username", "op@x", "--password-file", str(pw)]) == 0
    assert admin_main(["create-user", *dbargs, "--username", "op@x", "--password-file", str(pw)]) == 1
    config = ServerConfig(db.url, tmp_path / "art", port=0, db_schema=db.schema)
    with BackgroundServer(config) as srv:
        key = device_key("ecdsa")
        assert device_login(srv.url, key, "02:00:00:00:00:09").status_code == 401
        token = httpx.post(f"{srv.url}/api/management/v1/useradm/auth/login", auth=("op@x", "password1")).text
        api = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"})
        [dev] = api.get("/api/management/v2/devauth/devices").json()
        capsys.readouterr()
        assert admin_main(["accept-device", *dbargs, dev["id"]]) == 0
        assert device_login(srv.url, key, "02:00:00:00:00:09").status_code == 200
        art = make_artifact(tmp_path, "cli-art")
        files = {"artifact": (art.name, art.read_bytes())}
        assert api.post("/api/management/v1/deployments/artifacts", files=files).status_code == 201
        assert admin_main(["deploy", *dbargs, "--artifact", "nope", "--devices", dev["id"]]) == 1
        capsys.readouterr()
        assert admin_main(["deploy", *dbargs, "--artifact", "cli-art",
                           "--devices", dev["id"], "--name", "from-cli"]) == 0  # fmt: skip
        dep_id = capsys.readouterr().out.strip()
        dep = api.get(f"/api/management/v1/deployments/deployments/{dep_id}").json()
        assert dep["name"] == "from-cli" and dep["device_count"] == 1
        assert admin_main(["deploy", *dbargs, "--artifact", "cli-art", "--group", "g"]) == 1
        assert json.loads(json.dumps(dep))["artifact_name"] == "cli-art"
