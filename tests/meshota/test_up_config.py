"""``meshota up``'s configuration and supervisor, fast: bad config -> exit 2 with one line naming the
key; ``--print-config``; a child that dies is logged and restarted; stop order and timeouts."""

from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path

import pytest

from meshota.cli.up import up_main
from meshota.up.config import KEYS, load_config, render_toml
from meshota.up.supervisor import ChildSpec, Supervisor


def run_up(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = up_main(argv)
    out = capsys.readouterr()
    return code, out.err.strip().splitlines(), out.out


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[gateway]\nudpp = "127.0.0.1:1"\n', "meshota.toml: unknown key gateway.udpp"),
        ("[nope]\nx = 1\n", "meshota.toml: unknown key nope"),
        ("[http]\nlisten = 8080\n", "meshota.toml: http.listen must be a string, got 8080"),
        ('[gateway]\nmax_dtls_sessions = "many"\n', "gateway.max_dtls_sessions must be an integer"),
        ("[gateway]\nmax_dtls_sessions = true\n", "gateway.max_dtls_sessions must be an integer"),
        ("[gateway]\nmax_dtls_sessions = 0\n", "gateway.max_dtls_sessions: 0 must be a finite number >= 1"),
        ('[http]\nlisten = "nohost"\n', "http.listen: expected HOST:PORT, got 'nohost'"),
        ('[broker]\nurl = "http://x:1"\n', "broker.url: expected mqtt://HOST:PORT"),
        ('[gateway]\nmode = "bridge"\n', "gateway.mode: 'bridge' is not one of transparent, aggregating"),
        ('[database]\nurl = "mysql://x"\n', "database.url: expected sqlite:///PATH or postgresql://"),
        ('[http]\nverify_keys = "k.pem"\n', "http.verify_keys must be a list of strings"),
        ('[gateway]\nudp = ""\ndtls = ""\n', "gateway.udp or gateway.dtls (or both) must be set"),
        ('[http]\ntls_cert = "c.pem"\n', "http.tls_cert and http.tls_key go together"),
        ("http = 1\n", "meshota.toml: http must be a table"),
        ("[http\n", "meshota.toml: not valid TOML"),
        ('[node]\nrole = "worker"\n', "node.role: 'worker' is not one of all, gateway, bridge"),
        ('[node]\nrole = "gateway"\n', "node.role = 'gateway' needs broker.url"),
        (
            '[node]\nrole = "bridge"\n[broker]\nurl = "mqtt://b:1883"\n',
            "node.role = 'bridge' needs database.url",
        ),
        ('[node]\nname = "a b"\n', "node.name: 'a b' must be at most 40 letters"),
        ('[node]\nmetrics = "x"\n', "node.metrics: expected HOST:PORT"),
        ('[node]\nrolle = "bridge"\n', "unknown key node.rolle"),
    ],
)
def test_bad_config_is_one_line_exit_2(
    toml: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "meshota.toml"
    path.write_text(toml)
    code, err, out = run_up(["--config", str(path), "--data", str(tmp_path / "d"), "--print-config"], capsys)
    assert code == 2 and out == ""
    assert len(err) == 1 and err[0].startswith("meshota up: error: "), err
    assert message in err[0], err
    assert not (tmp_path / "d").exists()  # nothing created before the configuration is good


def test_missing_config_file_and_bad_broker_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err, _ = run_up(["--config", str(tmp_path / "none.toml")], capsys)
    assert code == 2 and len(err) == 1 and "none.toml" in err[0] and "No such file" in err[0]
    code, err, _ = run_up(["--broker", "http://x", "--data", str(tmp_path)], capsys)
    assert code == 2 and err == ["meshota up: error: --broker: expected mqtt://HOST:PORT, got 'http://x'"]


def test_print_config_is_the_effective_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "meshota.toml"
    path.write_text(
        '[gateway]\nudp = ""\nmax_dtls_sessions = 500\n'
        '[database]\nurl = "postgresql://ops:hunter2@db.example/meshota"\nschema = "m"\n'
    )
    code, err, out = run_up(["--config", str(path), "--data", str(tmp_path / "d"), "--print-config",
                             "--broker", "mqtt://broker.example:1883"], capsys)  # fmt: skip
    assert code == 0 and err == []
    doc = tomllib.loads(out)
    assert set(doc) == set(KEYS) and all(set(doc[s]) == set(KEYS[s]) for s in KEYS)
    assert doc["gateway"]["udp"] == "" and doc["gateway"]["max_dtls_sessions"] == 500
    assert doc["gateway"]["psk_file"] == str((tmp_path / "d" / "keys" / "psk.txt").resolve())
    assert doc["broker"]["url"] == "mqtt://broker.example:1883"
    assert doc["database"]["url"] == "postgresql://ops:REDACTED@db.example/meshota"
    assert "hunter2" not in out
    assert not (tmp_path / "d").exists()


def test_defaults_are_valid_and_round_trip(tmp_path: Path) -> None:
    config = load_config(None, tmp_path)
    assert config.get("database", "url") == f"sqlite:///{tmp_path.resolve() / 'meshota.db'}"
    path = tmp_path / "again.toml"
    path.write_text(render_toml(config))
    assert load_config(path, tmp_path).values == config.values


def _child(name: str, code: str) -> ChildSpec:
    return ChildSpec(name, [sys.executable, "-c", code], ready_line="ready")


def test_supervisor_restarts_a_dead_child_and_logs_it() -> None:
    said: list[str] = []
    sup = Supervisor(backoff=0.05, backoff_max=0.2, stop_timeout=5, say=said.append)
    deadline = time.monotonic() + 20
    flaky = sup.start(_child("flaky", "print('ready', flush=True); raise SystemExit(3)"))
    steady = sup.start(_child("steady", "import time; print('ready', flush=True); time.sleep(60)"))
    sup.wait_ready([steady], deadline)
    while flaky.restarts < 3 and time.monotonic() < deadline:
        sup.tend()
        sup.pump(0.02)
    sup.stop_all(["steady", "flaky"])
    assert steady.restarts == 0 and flaky.restarts >= 3
    deaths = [line for line in said if line.startswith("flaky (pid ")]
    assert "exit status 3" in deaths[0] and "restart 1 in 0.1 s" in deaths[0]
    assert "restart 2 in 0.1 s" in deaths[1] and "restart 3 in 0.2 s" in deaths[2]  # doubling, capped
    assert "steady stopped (killed by SIGTERM)" in said


def test_supervisor_kills_a_child_that_ignores_sigterm_and_reports_a_failed_start() -> None:
    said: list[str] = []
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True);"
        " time.sleep(60)"
    )
    sup = Supervisor(stop_timeout=0.3, say=said.append)
    sup.wait_ready([sup.start(_child("stubborn", stubborn))], time.monotonic() + 20)
    with pytest.raises(RuntimeError, match=r"dies exited at start \(exit status 4\)"):
        sup.wait_ready([sup.start(_child("dies", "raise SystemExit(4)"))], time.monotonic() + 20)
    sup.stop_all([])
    assert "stubborn did not stop within 0.3 s: SIGKILL" in said
    assert "stubborn stopped (killed by SIGKILL)" in said


def test_plan_external_broker_and_no_secret_in_any_argv(tmp_path: Path) -> None:
    from meshota.up.datadir import prepare
    from meshota.up.stack import build_plan, pick_addresses

    gw_pw, br_pw = tmp_path / "gw.pw", tmp_path / "br.pw"
    gw_pw.write_text("gateway-secret-1\n")
    br_pw.write_text("bridge-secret-1\n")
    conf = tmp_path / "meshota.toml"
    conf.write_text(
        f'[broker]\nurl = "mqtt://10.9.9.9:1999"\ngateway_password_file = "{gw_pw}"\n'
        f'bridge_password_file = "{br_pw}"\n[gateway]\nudp = ""\ndtls = "127.0.0.1:0"\n'
    )
    config = load_config(conf, tmp_path / "d")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".initialized").write_text("")  # skip the first start's admin runs here
    prepared = prepare(config)
    plan = build_plan(config, prepared, pick_addresses(config), time.time())
    children = {c["name"]: c for c in plan["children"]}
    assert set(children) == {"server", "gateway"}  # no private mosquitto
    assert plan["addresses"]["broker"] == "mqtt://10.9.9.9:1999" and plan["addresses"]["udp"] is None
    gateway, server = children["gateway"]["argv"], children["server"]["argv"]
    assert gateway[gateway.index("--broker") + 1] == "mqtt://10.9.9.9:1999"
    assert gateway[gateway.index("--broker-password-file") + 1] == str(gw_pw)
    assert server[server.index("--broker-password-env") + 1] in children["server"]["env"]
    assert "bridge-secret-1" in children["server"]["env"].values()
    for child in children.values():
        assert not any("secret" in arg for arg in child["argv"])
    psk = (tmp_path / "d" / "keys" / "psk.txt").read_text()
    assert psk.count("\nnode-1,") == 1 and (tmp_path / "d" / "keys").stat().st_mode & 0o077 == 0


def test_in_process_server_is_supervised_like_a_child(tmp_path: Path) -> None:
    """The server in meshota up's own process: ready on /readyz, a stop it did not ask for is
    logged and followed by a restart, a planned restart and SIGTERM stop it gracefully, a bad
    option is an exit at start (status 2) as for a process."""
    import signal
    import socket

    from meshota.cli._up_inprocess import InProcessServer
    from meshota.up.supervisor import http_ready

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--http", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path / 'm.db'}",
            "--artifacts", str(tmp_path / "art"), "--log-level", "warning"]  # fmt: skip
    said: list[str] = []
    sup = Supervisor(backoff=0.05, stop_timeout=20, say=said.append)
    spec = ChildSpec("server", [], ready=lambda: http_ready("127.0.0.1", port))
    spec.start = lambda: InProcessServer(args, {})
    server = sup.start(spec)
    sup.wait_ready([server], time.monotonic() + 60)
    first = server.proc
    first.send_signal(signal.SIGTERM)  # it stops without the supervisor asking: a death
    deadline = time.monotonic() + 60
    while not any(line.startswith("server restarted") for line in said) and time.monotonic() < deadline:
        sup.tend()
        sup.pump(0.05)
    assert server.proc is not first and server.restarts == 1 and http_ready("127.0.0.1", port)
    assert any(line.startswith(f"server (pid {first.pid}) exit status 0 after") for line in said), said
    sup.restart("server")  # SIGHUP's planned restart: stop, start again at once
    sup.wait_ready([server], time.monotonic() + 60)
    assert server.restarts == 2
    sup.stop_all(["server"])
    assert "server stopped (exit status 0)" in said and not http_ready("127.0.0.1", port)

    bad = Supervisor(say=said.append)
    broken = ChildSpec("server", [], ready=lambda: False)
    broken.start = lambda: InProcessServer(["--http", "nohost", "--db", "sqlite://", "--artifacts", "x"], {})
    with pytest.raises(RuntimeError, match=r"server exited at start \(exit status 2\)"):
        bad.wait_ready([bad.start(broken)], time.monotonic() + 30)


def test_roles_plan_only_their_children(tmp_path: Path) -> None:
    """role bridge: the server alone, on a shared subscription with a client id of its own; role
    gateway: the gateway alone with its metrics listener; all: everything, as before."""
    from meshota.up.datadir import Prepared
    from meshota.up.stack import build_plan, pick_addresses

    base = {"broker": {"url": "mqtt://10.0.0.5:1883"}, "database": {"url": "postgresql://u@db/meshota"}}
    plans = {}
    for role in ("all", "bridge", "gateway"):
        overrides = {**base, "node": {"role": role, "name": "h1", "metrics": "127.0.0.1:0"}}
        config = load_config(None, tmp_path / role, overrides)
        plans[role] = build_plan(config, Prepared(None, None, False, []), pick_addresses(config), 0.0)
    names = {role: [c["name"] for c in plan["children"]] for role, plan in plans.items()}
    assert names == {"all": ["server", "gateway"], "bridge": ["server"], "gateway": ["gateway"]}
    server = plans["bridge"]["children"][0]["argv"]
    assert server[server.index("--share-group") + 1] == "meshota"
    assert server[server.index("--bridge-client-id") + 1] == "meshota-bridge-h1"
    assert "--share-group" not in plans["all"]["children"][0]["argv"]
    gateway = plans["gateway"]["children"][0]["argv"]
    assert gateway[gateway.index("--client-id") + 1] == "meshota-gateway-h1"
    assert gateway[gateway.index("--metrics") + 1] == "127.0.0.1:0"
    assert plans["gateway"]["addresses"]["http"] is None and plans["bridge"]["addresses"]["udp"] is None


def test_role_option_overrides_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "meshota.toml"
    path.write_text('[broker]\nurl = "mqtt://b:1883"\n')
    code, _, out = run_up(["--config", str(path), "--role", "gateway", "--print-config"], capsys)
    assert code == 0 and 'role = "gateway"' in out


def test_plan_organisations_get_broker_users_and_the_gateway_their_passwords(tmp_path: Path) -> None:
    from meshota.addresses import ConfigError
    from meshota.broker_config import read_tenant_credentials
    from meshota.up.datadir import prepare
    from meshota.up.stack import build_plan, pick_addresses

    org = "5f0c2a7e-4b8e-4c1e-9d3a-0b6f1c2d3e4f"
    conf = tmp_path / "meshota.toml"
    conf.write_text(f'[broker]\nlisten = "127.0.0.1:0"\ntenants = ["{org}"]\n[gateway]\nudp = ""\n')
    config = load_config(conf, tmp_path / "d")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".initialized").write_text("")  # skip the first start's admin runs here
    prepared = prepare(config)
    broker = tmp_path / "d" / "broker"
    assert f"user {org}" in (broker / "acl").read_text()
    assert set(read_tenant_credentials(broker / "tenant-credentials")) == {org}
    plan = build_plan(config, prepared, pick_addresses(config), time.time())
    gateway = next(c for c in plan["children"] if c["name"] == "gateway")["argv"]
    assert gateway[gateway.index("--tenant-credentials") + 1] == str(broker / "tenant-credentials")
    password = read_tenant_credentials(broker / "tenant-credentials")[org]
    assert prepare(config) and read_tenant_credentials(broker / "tenant-credentials")[org] == password  # kept
    conf.write_text('[broker]\ntenants = ["default"]\n')
    with pytest.raises(ConfigError, match=r"broker\.tenants: organisation id 'default' has no topics"):
        load_config(conf, tmp_path / "d")
