"""Installation telemetry (issue 18): the schedule on a virtual clock, the age across an upgrade,
the config, ``telemetry show`` against the bytes a real collector received, the collector's
public outputs (k = 5, independent of who sent what when)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from pathlib import Path

import httpx
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.api import render_csv, render_json, render_page
from meshota.cli.telemetry import show_bytes, telemetry_main
from meshota.cli.up import up_main
from meshota.telemetry.collector import CollectorCore, ReportError, asgi_app
from meshota.telemetry.report import HEADERS, build_report, encode_body
from meshota.telemetry.schedule import Schedule
from meshota.telemetry.sender import send_once
from meshota.telemetry.state import TelemetryState, load_state
from meshota.up.config import TELEMETRY_URL, load_config
from wire.countme import WEEK, window_of, window_start

W = 2950  # a window in 2026
T0 = window_start(W)


# -- schedule: once per window, at a random moment in it (virtual clock) ------------------------


def test_once_per_window_at_a_random_moment_on_a_virtual_clock() -> None:
    state = TelemetryState(first_window=W)
    sched = Schedule(state, random.Random(7))
    now, sent = T0 + 3 * 3600.0, []
    while now < window_start(W + 6):
        window = sched.due(now)
        if window is not None:
            assert window == window_of(now)  # inside the window it reports for
            sent.append((window, now))
            sched.sent(window)
        now = max(now + 1.0, min(sched.next_send(now), now + 6 * 3600.0))
    assert [w for w, _ in sent] == [W, W + 1, W + 2, W + 3, W + 4, W + 5]  # once per window
    offsets = [t - window_start(w) for w, t in sent]
    assert len({round(o) for o in offsets}) == len(offsets)  # not the same moment each week
    assert all(0 <= o < WEEK for o in offsets)


def test_a_failure_is_logged_once_and_retried_in_the_window() -> None:
    sched = Schedule(TelemetryState(first_window=W), random.Random(1))
    now = T0 + 1000.0
    while sched.due(now) is None:
        now = sched.next_send(now)
    logs = [sched.failed(W, now)]
    retry = sched.next_send(now)
    assert now + 3600 <= retry <= now + 6 * 3600 and window_of(retry) in (W, W + 1)
    logs.append(sched.failed(W, retry))
    assert logs == [True, False]


def test_started_mid_window_the_moment_is_not_in_the_past() -> None:
    for seed in range(20):
        sched = Schedule(TelemetryState(first_window=W), random.Random(seed))
        now = T0 + WEEK - 60.0
        assert now <= sched.next_send(now) < window_start(W + 1)


# -- the age survives an upgrade --------------------------------------------------------------


def test_age_bucket_kept_across_an_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    from meshota.cli import up as up_cli

    config = load_config(None, data)
    monkeypatch.setattr(up_cli.time, "time", lambda: T0 + 5.0)
    assert "telemetry is off" in up_cli._telemetry_note(config)  # first start, version A
    # ten weeks later a new meshota (an upgrade) starts on the same data directory
    later = window_start(W + 10) + 5.0
    monkeypatch.setattr(up_cli.time, "time", lambda: later)
    up_cli._telemetry_note(config)
    state = load_state(data / "telemetry.json", later, create=False)
    assert state.first_window == W and state.age(W + 10) == 3
    facts = {"nodes": 12, "database": "sqlite"}
    old = build_report("minimal", W + 10, state.age(W + 10), "0.1.0", facts)
    new = build_report("minimal", W + 10, state.age(W + 10), "0.2.0", facts)
    assert old["age"] == new["age"] == 3


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[telemetry]\nlevel = "on"\n', "telemetry.level: 'on' is not one of off, minimal, full"),
        ("[telemetry]\nlevel = 1\n", "telemetry.level must be a string, got 1"),
        ('[telemetry]\nlevle = "full"\n', "unknown key telemetry.levle"),
        ('[telemetry]\nurl = "ftp://x"\n', "telemetry.url: expected an https:// or http:// URL"),
        ('[telemetry]\nurl = "https://a b"\n', "telemetry.url: expected an https:// or http:// URL"),
        ('[public_stats]\nenabled = "yes"\n', "public_stats.enabled must be true or false"),
        ("[public_stats]\nk = 2\n", "unknown key public_stats.k"),
        ('telemetry = "off"\n', "telemetry must be a table"),
    ],
)
def test_every_invalid_telemetry_config_is_one_line(
    toml: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "meshota.toml"
    path.write_text(toml)
    code = up_main(["--config", str(path), "--data", str(tmp_path / "d"), "--print-config"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("meshota up: error: "), err
    assert message in err[0], err
    code = telemetry_main(["show", "--config", str(path), "--data", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("meshota telemetry show: error: "), err


def test_absent_means_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(None, tmp_path)
    assert config.get("telemetry", "level") == "off" and config.get("telemetry", "url") == TELEMETRY_URL
    assert telemetry_main(["show", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "level off: nothing is sent" in out.err


# -- show == the bytes the collector received (real HTTP on loopback) -------------------------


async def _relay(listen: socket.socket, target: int, seen: list[bytes]) -> asyncio.Server:
    """A TCP relay in front of the collector that records what the client sent."""

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, into: bytearray | None) -> None:
        while data := await r.read(65536):
            if into is not None:
                into.extend(data)
            w.write(data)
            await w.drain()
        w.close()

    async def client(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", target)
        got = bytearray()
        await asyncio.gather(pipe(cr, sw, got), pipe(sr, cw, None), return_exceptions=True)
        seen.append(bytes(got))

    return await asyncio.start_server(client, sock=listen)


def _bound() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def test_show_equals_the_bytes_the_collector_received(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    relay_sock, collector_sock = _bound(), _bound()
    url = f"http://127.0.0.1:{relay_sock.getsockname()[1]}/api/v1/report"
    (tmp_path / "meshota.toml").write_text(f'[telemetry]\nlevel = "full"\nurl = "{url}"\n')
    cfg = tmp_path / "meshota.toml"
    import time

    shown = show_bytes(cfg, tmp_path / "data", None, time.time())
    assert telemetry_main(["show", "--config", str(cfg), "--data", str(tmp_path / "data")]) == 0
    assert capsys.readouterr().out.encode() == shown  # the command prints exactly those bytes
    body = shown.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body)["level"] == "full" and b"Host: 127.0.0.1" in shown
    core = CollectorCore()
    seen: list[bytes] = []

    async def run() -> None:
        server = uvicorn.Server(uvicorn.Config(asgi_app(core, time.time), lifespan="off", access_log=False,
                                               log_level="warning"))  # fmt: skip
        serving = asyncio.create_task(server.serve(sockets=[collector_sock]))
        relay = await _relay(relay_sock, collector_sock.getsockname()[1], seen)
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(trust_env=True, headers=HEADERS) as client:
            for _ in range(5):
                await send_once(client, url, body)
            public = (await client.get(url.replace("/api/v1/report", "/stats/weekly.json"))).json()
        relay.close()
        server.should_exit = True
        await serving
        cell = public["weeks"][0]
        assert cell["table"] == "installations" and cell["cells"][0]["count"] == 5

    asyncio.run(run())
    reports = [s for s in seen if s.startswith(b"POST")]
    assert len(reports) == 5 and all(r == shown for r in reports)


# -- the collector's public outputs -----------------------------------------------------------


def _report(level: str, version: str, nodes: int, age: int, window: int = W) -> bytes:
    facts = {"nodes": nodes, "database": "sqlite", "device_types": {"esp32": nodes}, "radios": {"ble": 1}}
    return encode_body(build_report(level, window, age, version, facts))


def _public(core: CollectorCore) -> tuple[bytes, bytes, bytes]:
    doc = core.public()
    return render_json(doc), render_csv(doc), render_page(doc, "t", {})


def test_cells_below_k_are_hidden_everywhere() -> None:
    core = CollectorCore()
    for i in range(4):
        core.ingest(_report("minimal", "0.9.9", 3, 1), T0 + i)
    for out in _public(core):
        assert b"0.9.9" not in out
    core.ingest(_report("minimal", "0.9.9", 3, 1), T0 + 10)
    assert all(b"0.9.9" in out for out in _public(core))


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", json.dumps({"schema": 1, "level": "minimal"}).encode(), b"x" * 5000,
     _report("minimal", "1.0", 1, 1).replace(b'"age":1', b'"age":9'),
     _report("minimal", "1.0", 1, 1).replace(b'"version":"1.0"', b'"version":"id 42"'),
     _report("minimal", "1.0", 1, 1, window=W - 5),
     _report("minimal", "1.0", 1, 1)[:-1] + b',"id":"abc"}'],
)  # fmt: skip
def test_reports_outside_the_schema_are_refused(body: bytes) -> None:
    core = CollectorCore()
    with pytest.raises(ReportError):
        core.ingest(body, T0 + 60)
    assert core.cells() == {}


def _installations(seed: int, n: int = 1000) -> list[tuple[str, str, float, str, str, int, int]]:
    """``n`` installations: (own id — never sent, address — never kept, moment in the window,
    level, version, nodes, age bucket)."""
    rng = random.Random(seed)
    return [
        (f"{rng.getrandbits(64):016x}", f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
         rng.random() * (WEEK - 1), rng.choice(["minimal", "full"]), rng.choice(["1.0.0", "1.1.0", "2.0.0"]),
         rng.choice([0, 3, 40, 700]), rng.randint(1, 4))
        for _ in range(n)
    ]  # fmt: skip


def _outputs(rs: list[tuple[str, str, float, str, str, int, int]]) -> tuple[bytes, bytes, bytes]:
    core = CollectorCore()
    for _id, _address, at, level, version, nodes, age in rs:
        core.ingest(_report(level, version, nodes, age), T0 + at)
    return _public(core)


@settings(max_examples=10, deadline=None)
@given(
    st.integers(0, 2**32), st.integers(0, 999), st.uuids(), st.ip_addresses().map(str), st.floats(0, WEEK - 1)
)
def test_public_outputs_do_not_depend_on_id_address_or_time(
    seed: int, which: int, new_id: object, new_address: str, new_at: float
) -> None:
    reports = _installations(seed)
    before = _outputs(reports)
    changed = list(reports)
    _id, _address, _at, *rest = changed[which]
    for replaced in ((str(new_id), _address, _at), (_id, new_address, _at), (_id, _address, new_at)):
        changed[which] = (*replaced, *rest)  # type: ignore[assignment]
        assert _outputs(changed) == before
    assert _outputs(list(reversed(reports))) == before  # nor on the order of arrival


# -- the sender task: once per window on a virtual clock, a failure logged once -----------------


def test_sender_reports_once_per_window_and_logs_one_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bridge.api import ApiContext, Settings
    from bridge.artifacts import BlobStore
    from bridge.store import Store
    from meshota.telemetry.sender import run_sender

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    collector_sock, dead = _bound(), _bound()  # ``dead`` is bound, never listening: refused
    core = CollectorCore()
    clock = [T0 + 100.0]

    end = window_start(W + 3)

    async def virtual_sleep(seconds: float) -> None:
        if clock[0] + seconds >= end:  # the virtual clock stops at the end of the third week
            clock[0] = end
            await asyncio.Event().wait()
        clock[0] += max(seconds, 1.0)
        await asyncio.sleep(0)

    async def run() -> None:
        store = Store.open(f"sqlite:///{tmp_path / 'm.db'}")
        await store.migrate()
        ctx = await ApiContext.create(store, BlobStore(tmp_path / "b"), Settings())
        server = uvicorn.Server(uvicorn.Config(asgi_app(core, lambda: clock[0]), lifespan="off",
                                               access_log=False, log_level="warning"))  # fmt: skip
        serving = asyncio.create_task(server.serve(sockets=[collector_sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        port = collector_sock.getsockname()[1]
        dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/api/v1/report"
        for url, state in ((f"http://127.0.0.1:{port}/api/v1/report", "ok.json"), (dead_url, "dead.json")):
            clock[0] = T0 + 100.0
            task = asyncio.create_task(run_sender(ctx, "minimal", url, tmp_path / state, "1.0.0",
                                                  clock=lambda: clock[0], sleep=virtual_sleep,
                                                  rng=random.Random(5)))  # fmt: skip
            while clock[0] < end:
                await asyncio.sleep(0.005)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        server.should_exit = True
        await serving
        await store.close()

    with caplog.at_level("INFO", logger="meshota.telemetry"):
        asyncio.run(run())
    sent = {w: n for (w, table, _), n in core.cells().items() if table == "installations"}
    assert sent == {W: 1, W + 1: 1, W + 2: 1}  # once per window
    assert load_state(tmp_path / "ok.json", 0, create=False).last_sent_window == W + 2
    failures = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert len(failures) == 1  # many failed attempts over three weeks, one line
    assert load_state(tmp_path / "dead.json", 0, create=False).last_sent_window is None
