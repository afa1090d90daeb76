"""The bridge against real mosquitto: ACL refusals, identity stamping, shared subscriptions, restarts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshota.broker import free_tcp_port
from meshota.broker_config import BrokerConfigError, BrokerUsers, broker_acl, write_broker_config
from tests.support.broker import start_test_mosquitto
from tests.support.mqtt import StampingCaller, start_bridge_server
from wire.envelope import RequestEnvelope, ResponseEnvelope, request_topic

NEXT = "/api/devices/v1/deployments/device/deployments/next"
ROOT = Path(__file__).resolve().parents[2]


def _wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.integration
def test_acl_confines_devices_and_bridge_ignores_unstamped(tmp_path: Path) -> None:
    creds = write_broker_config(tmp_path / "broker")
    users = BrokerUsers()
    # mosquitto started as root drops to user "mosquitto", which cannot read a 0600 passwd file in tmp
    conf = (tmp_path / "broker" / "meshota.conf").read_text() + ("user root\n" if os.geteuid() == 0 else "")
    broker = start_test_mosquitto(tmp_path / "mosquitto", extra_conf=conf)
    server = start_bridge_server(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        tmp_path,
        broker.port,
        username=users.bridge,
        password=creds[users.bridge],
        share_group="meshota",
    )
    gw = dict(username=users.gateway, password=creds[users.gateway])
    try:
        # node-a's transparent connection reads its own responses; mosquitto 2.0 grants the SUBSCRIBE
        # to node-b's topic but the pattern ACL (read /mender/responses/%c/#) delivers nothing
        own = StampingCaller(broker.port, "node-a", subscribe="/mender/responses/node-a/#", **gw)
        other = StampingCaller(broker.port, "node-a2", subscribe="/mender/responses/node-b/#", **gw)
        node_b = StampingCaller(broker.port, "node-b", subscribe="/mender/responses/node-b/#", **gw)
        spy = StampingCaller(broker.port, "spy", subscribe="/mender/api/#", **gw)
        assert node_b.call("node-b", "GET", NEXT, request_id="rb").status == 401
        assert own.call("node-a", "GET", NEXT, request_id="ra").status == 401
        time.sleep(0.3)  # let anything the ACL would leak arrive
        assert other.received == [] and spy.received == []
        assert [t for t, _ in own.received] == ["/mender/responses/node-a/ra"]
        # a request naming another device in its payload is answered to the stamped device only
        env = RequestEnvelope("r1", "GET", None, None, b"", {"device_id": ["node-b"]}, {"x-device": "node-b"})
        own.publish(request_topic(NEXT), env.encode(), "node-a")
        reply = ResponseEnvelope.decode(own.wait("/mender/responses/node-a/r1"))
        assert reply.status == 401
        # no stamp (e.g. a raw MQTT client with the gateway's password): ignored, no reply anywhere
        own.publish(request_topic(NEXT), RequestEnvelope("r2", "GET").encode(), None)
        # unverified stamp under the default policy: refused with 403
        r3 = own.call("node-a", "GET", NEXT, verified=False, request_id="r3")
        assert r3.status == 403 and b"not verified" in r3.body
        assert own.copies("/mender/responses/node-a/r2") == 0
        # anonymous clients get nothing at all
        with pytest.raises(Exception):  # noqa: B017  (paho raises a ConnectionRefused-style error or no SUBACK)
            StampingCaller(broker.port, "anon")
        for c in (own, other, node_b, spy):
            c.close()
    finally:
        server.stop()
        broker.stop()


def test_acl_text_rejects_bad_rules() -> None:
    assert "pattern read /mender/responses/%c/#" in broker_acl()
    with pytest.raises(Exception, match="bad gateway topic rule"):
        broker_acl(gateway_topics=["delete x/#"])


def test_broker_config_command_prints_or_writes_the_acl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from meshota.cli.broker_config import broker_config_main

    rule = ["--gateway-topic", "readwrite meshota/#"]
    assert broker_config_main(["--out", str(tmp_path / "unused"), "--acl-only", *rule]) == 0
    assert capsys.readouterr().out == broker_acl(gateway_topics=["readwrite meshota/#"])
    assert not (tmp_path / "unused").exists()
    out = tmp_path / "conf"
    assert broker_config_main(["--out", str(out), "--gateway-user", "gw", *rule]) == 0
    assert (out / "acl").read_text() == broker_acl(BrokerUsers(gateway="gw"), ["readwrite meshota/#"])
    assert {line.split(":")[0] for line in (out / "credentials").read_text().splitlines()} == {
        "gw",
        "meshota-bridge",
    }
    assert (out / "credentials").stat().st_mode & 0o777 == 0o600


SINGLE_TENANT_ACL = """# generated by meshota broker-config; anonymous clients get no topic at all

user meshota-bridge
topic read /mender/api/#
topic read /mender/bulk/v1
topic write /mender/responses/#

user meshota-gateway
topic write /mender/api/#
topic write /mender/bulk/v1

# every connection reads only its own responses: the gateway connects each node
# with client id = device id (transparent mode)
pattern read /mender/responses/%c/#
"""


def test_organisations_in_the_acl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from meshota.broker_config import read_tenant_credentials
    from meshota.cli.broker_config import broker_config_main

    # no organisation: the single-tenant ACL, byte for byte what it was
    assert broker_acl() == SINGLE_TENANT_ACL
    acl = broker_acl(tenants=["org-a", "org-b", "org-a"]).splitlines()
    a = acl.index("user org-a")
    assert acl[a + 1 : a + 3] == ["topic write /mender/t/org-a/api/#", "topic write /mender/t/org-a/bulk/v1"]
    assert acl.count("user org-a") == 1 and "user org-b" in acl
    assert "pattern read /mender/t/%u/responses/%c/#" in acl
    assert not any("/mender/t/+/responses" in line and "read" in line for line in acl)  # nobody reads all
    refusals = {
        "default": "no topics of its own",
        "a/b": "bad organisation id",
        "meshota-gateway": "gateway's or bridge's user",
        "": "bad organisation id",
    }
    for bad, needle in refusals.items():
        with pytest.raises(BrokerConfigError, match=needle):
            broker_acl(tenants=[bad])
    out = tmp_path / "conf"
    assert broker_config_main(["--out", str(out), "--tenant", "org-a", "--tenant", "org-b"]) == 0
    creds = dict(line.split(":", 1) for line in (out / "credentials").read_text().splitlines())
    assert set(creds) == {"meshota-gateway", "meshota-bridge", "org-a", "org-b"}
    tenant_file = out / "tenant-credentials"
    assert read_tenant_credentials(tenant_file) == {"org-a": creds["org-a"], "org-b": creds["org-b"]}
    assert tenant_file.stat().st_mode & 0o777 == 0o600
    assert broker_config_main(["--out", str(out)]) == 0  # organisations gone: so is their file
    assert not tenant_file.exists()
    assert broker_config_main(["--out", str(out), "--tenant", "default"]) == 2
    assert "no topics of its own" in capsys.readouterr().err
    tenant_file.write_text("org-a\n")
    with pytest.raises(BrokerConfigError, match="expected 'organisation id:password'"):
        read_tenant_credentials(tenant_file)


def _bridge_process(tmp: Path, broker_port: int, name: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "meshota.cli.server", "--http", f"127.0.0.1:{free_tcp_port()}",
        "--db", f"sqlite:///{tmp / 'db.sqlite'}", "--artifacts", str(tmp / "artifacts"),
        "--broker", f"mqtt://127.0.0.1:{broker_port}", "--share-group", "meshota",
        "--bridge-client-id", name, "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.integration
def test_two_bridge_processes_answer_each_request_exactly_once(tmp_path: Path, mosquitto: Any) -> None:
    caller = StampingCaller(mosquitto.port)
    procs = []
    try:
        for name in ("bridge-1", "bridge-2"):
            procs.append(_bridge_process(tmp_path, mosquitto.port, name))
            # wait until this process answers (its shared subscription is in place)
            probe = f"probe-{name}"
            deadline = time.monotonic() + 30
            while not caller.answered_by.get(name):
                assert procs[-1].poll() is None and time.monotonic() < deadline, (
                    "bridge process did not start"
                )
                caller.publish(request_topic(NEXT), RequestEnvelope(probe, "GET").encode(), "node-p")
                time.sleep(0.2)
                probe += "x"
        before = dict(caller.answered_by)
        n = 300
        for i in range(n):
            caller.publish(request_topic(NEXT), RequestEnvelope(f"q{i}", "GET").encode(), "node-q", qos=1)
        _wait_until(lambda: all(caller.copies(f"/mender/responses/node-q/q{i}") for i in range(n)))
        time.sleep(0.5)  # let any second answer arrive
        assert [caller.copies(f"/mender/responses/node-q/q{i}") for i in range(n)] == [1] * n
        shares = {k: v - before.get(k, 0) for k, v in caller.answered_by.items()}
        assert shares.get("bridge-1", 0) > 0 and shares.get("bridge-2", 0) > 0, shares
        assert shares["bridge-1"] + shares["bridge-2"] == n
    finally:
        caller.close()
        for p in procs:
            p.terminate()
            p.wait(timeout=15)
