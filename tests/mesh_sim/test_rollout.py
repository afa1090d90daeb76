"""Phased rollouts in the simulator with the real handlers (mesh_sim/rollout.py), virtual clock.

A bad image pauses at the error gate with only phase 1 touched; a good image walks every phase;
install windows are honoured; phases by sub-mesh stream once per root; approval, abort on error,
auto-start and retries; the same seed gives the same run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mesh_sim.rollout import EPOCH, RolloutScenario, RolloutSim, run_rollout

FIVE = ({"batch_size": 20}, {"batch_size": 20}, {"batch_size": 20}, {"batch_size": 20}, {})


def test_bad_image_pauses_at_the_error_gate_with_only_phase_one_touched(tmp_path: Path) -> None:
    sim = RolloutSim(
        RolloutScenario(nodes=60, healthy=False, phases=FIVE, gates={"error_share": 0.2}), tmp_path
    )
    try:
        res = sim.run()
        rollout = sim.rollout()
    finally:
        sim.close()
    assert res.state == "paused" and res.stopped_at is not None
    assert rollout["reason"].startswith("error gate")
    first, *rest = rollout["phases"]
    assert first["device_count"] == 12 and first["failure"] >= 3  # 20 % of 12 devices
    assert all(p["started"] == 0 and not p["open"] for p in rest)
    assert res.reached <= 12 and res.successes == 0
    assert res.phases_opened == 0


def test_good_image_walks_every_phase(tmp_path: Path) -> None:
    res = run_rollout(RolloutScenario(nodes=40, healthy=True, phases=FIVE), tmp_path)
    assert res.state == "done" and res.stopped_at is None
    assert [e for _, e in res.events] == [
        "phase 2 opened",
        "phase 3 opened",
        "phase 4 opened",
        "phase 5 opened",
        "done",
    ]
    times = [t for t, _ in res.events]
    assert times == sorted(times) and res.successes == 40 and res.failures == 0


def test_install_windows_are_honoured_on_the_virtual_clock(tmp_path: Path) -> None:
    # every day 02:00-03:00 in New York (07:00-08:00 UTC in January); the run starts Monday 00:00 UTC
    rule = {
        "windows": [{"days": ["mon", "tue"], "start": "02:00", "duration": 3600}],
        "time_zone": "America/New_York",
    }
    res = run_rollout(RolloutScenario(nodes=20, submeshes=2, install=rule), tmp_path)
    assert res.state == "done" and res.successes == 20
    opens, closes = 7 * 3600, 8 * 3600  # virtual seconds of Monday's window
    downloads = [t for t, _, s, _ in res.statuses if s == "downloading"]
    waits = [t for t, _, s, sub in res.statuses if (s, sub) == ("pause_before_installing", "awaiting window")]
    installs = [t for t, _, s, _ in res.statuses if s == "installing"]
    assert downloads and max(downloads) < opens  # downloaded outside the window
    assert len(waits) == 20 and max(waits) < opens  # and every node said it was waiting
    assert len(installs) == 20 and all(opens <= t < closes for t in installs)


def test_phases_by_sub_mesh_stream_once_per_root(tmp_path: Path) -> None:
    # a root's collection window covers its children's check-in spread (1.5 x interval)
    common = {"nodes": 40, "submeshes": 4, "collection_window": 900.0, "checkin_interval": 600}
    by_root = run_rollout(RolloutScenario(by_submesh=True, **common), tmp_path / "a")  # type: ignore[arg-type]
    assert by_root.state == "done" and by_root.successes == 40
    assert by_root.root_fetches == {0: 1, 1: 1, 2: 1, 3: 1}
    by_share = run_rollout(
        RolloutScenario(phases=({"batch_size": 25}, {"batch_size": 25}, {"batch_size": 25}, {}), **common),  # type: ignore[arg-type]
        tmp_path / "b",
    )
    assert by_share.state == "done" and by_share.successes == 40
    assert all(n >= 3 for n in by_share.root_fetches.values())  # every phase wakes every root


def test_error_gate_can_abort_and_count_gates_trip_early(tmp_path: Path) -> None:
    gates = {"error_share": 1.0, "error_count": 2, "on_error": "abort"}
    sim = RolloutSim(RolloutScenario(nodes=30, healthy=False, phases=FIVE, gates=gates), tmp_path)
    try:
        res = sim.run()
        stats = json.loads(
            sim.server.call(
                "GET",
                f"/api/management/v1/deployments/deployments/{sim.deployment_id}/statistics",
                token=sim.server.user_token,
            ).body
        )
    finally:
        sim.close()
    assert res.state == "aborted" and res.reached <= 6
    assert stats["aborted"] >= 24  # every device not finished was aborted


def test_approval_auto_start_and_manual_actions(tmp_path: Path) -> None:
    phases = ({"batch_size": 50, "start_ts": "2026-01-05T01:00:00Z"}, {})
    sc = RolloutScenario(nodes=10, submeshes=2, phases=phases, gates={"approve": True}, until=3 * 3600)
    sim = RolloutSim(sc, tmp_path)
    try:
        sim.create()
        assert sim.rollout()["state"] == "scheduled"
        for node in sim.nodes:
            sim.clock.at(0.0, sim._checkin, node)
        sim.clock.at(sc.tick, sim._tick)
        sim.clock.run(until=3500)
        assert sim.rollout()["state"] == "scheduled"
        assert not [s for s in sim.result.statuses if s[2] == "downloading"]  # nobody before start_ts
        sim.clock.run(until=3 * 3600)
        events = [e for _, e in sim.result.events]
        assert events[:2] == ["started", "awaiting_approval"]
        assert sim.result.events[0][0] >= 3600
        body = sim.rollout()
        assert body["state"] == "awaiting_approval" and body["phases"][1]["started"] == 0
        post = sim.server.call
        url = f"/api/meshota/v1/management/rollouts/{sim.deployment_id}"
        assert post("POST", f"{url}/resume", token=sim.server.user_token).status == 409
        assert post("POST", f"{url}/launch", token=sim.server.user_token).status == 400
        assert post("POST", f"{url}/approve").status == 401
        assert post("POST", f"{url}/approve", token=sim.server.user_token).status == 200
        assert post("POST", f"{url}/pause", token=sim.server.user_token).status == 200
        sim.clock.run(until=5 * 3600)
        assert sim.rollout()["phases"][1]["started"] == 0  # paused: phase 2 open but nobody starts
        assert post("POST", f"{url}/resume", token=sim.server.user_token).status == 200
        sim.clock.run(until=8 * 3600)
        assert sim.rollout()["state"] == "done"
        assert post("POST", f"{url}/abort", token=sim.server.user_token).status == 409
    finally:
        sim.close()


def test_retries_give_a_failed_device_another_go(tmp_path: Path) -> None:
    res = run_rollout(
        RolloutScenario(nodes=6, submeshes=1, healthy=False, retries=2, gates={"error_share": 1.0}), tmp_path
    )
    per_node = {n: sum(1 for _, m, s, _ in res.statuses if m == n and s == "failure") for n in range(6)}
    assert per_node == dict.fromkeys(range(6), 3)  # the first try and two retries
    assert res.state == "paused"  # 6 of 6 failed after their retries: the gate trips (share 1.0)


def test_same_seed_same_run(tmp_path: Path) -> None:
    sc = RolloutScenario(nodes=12, submeshes=3, phases=({"batch_size": 50}, {}))
    a = run_rollout(sc, tmp_path / "a")
    b = run_rollout(sc, tmp_path / "b")
    assert a.trace == b.trace and a.events == b.events


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"phases": [{"batch_size": 60}, {"batch_size": 60}]}, "add up"),
        ({"phases": [{}, {"batch_size": 10}]}, "only the last"),
        ({"phases": [{"batch_size": 10, "group": "g"}]}, "not both"),
        ({"phases": [{"batch_size": 10, "start_ts": "yesterday"}]}, "RFC 3339"),
        ({"phases": []}, "1..64"),
        ({"retries": -1}, "retries"),
        ({"gates": {"error_share": 2}}, "error_share"),
        ({"gates": {"on_error": "explode"}}, "on_error"),
        ({"install": {"consent": "sure"}}, "consent"),
    ],
)
def test_bad_rollout_bodies_are_400_and_store_nothing(
    tmp_path: Path, body: dict[str, object], message: str
) -> None:
    sim = RolloutSim(RolloutScenario(nodes=1, submeshes=1), tmp_path)
    try:
        full = {"name": "x", "artifact_name": "v2", "devices": [sim.server.device_ids[0]], **body}
        r = sim.server.call(
            "POST", "/api/management/v1/deployments/deployments", token=sim.server.user_token, body=full
        )
        assert r.status == 400 and message in r.body.decode(), r.body
        listed = sim.server.call(
            "GET", "/api/management/v1/deployments/deployments", token=sim.server.user_token
        )
        assert json.loads(listed.body) == []
    finally:
        sim.close()


def test_epoch_is_a_monday() -> None:
    import datetime as dt

    assert dt.datetime.fromtimestamp(EPOCH, dt.UTC).strftime("%a %H:%M") == "Mon 00:00"


def test_the_ticker_task_moves_a_rollout_and_survives_a_failing_pass(tmp_path: Path) -> None:
    """bridge.api.run_ticker (what ``meshota server`` starts) on the simulator's store."""
    import asyncio

    from bridge.api import run_ticker

    sim = RolloutSim(
        RolloutScenario(
            nodes=4, submeshes=1, phases=({"batch_size": 50, "start_ts": "2026-01-05T01:00:00Z"}, {})
        ),
        tmp_path,
    )
    try:
        sim.create()
        sleeps: list[float] = []
        real_tick = sim.server.ctx.store

        async def fake_sleep(seconds: float) -> None:
            sleeps.append(seconds)
            sim.clock.now += seconds  # the server's clock is the simulator's
            if len(sleeps) == 1:
                sim.server.ctx.store = None  # type: ignore[assignment]  # one pass fails
            else:
                sim.server.ctx.store = real_tick
            if len(sleeps) >= 200:
                raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            sim.server.run(run_ticker(sim.server.ctx, 30.0, sleep=fake_sleep))
        assert sim.rollout()["state"] == "running"  # started at 01:00 virtual, by the task
        assert set(sleeps) == {30.0}
    finally:
        sim.server.ctx.store = real_tick
        sim.close()


def test_policies_reach_next_group_before_fleet(tmp_path: Path) -> None:
    sim = RolloutSim(RolloutScenario(nodes=2, submeshes=2), tmp_path)
    srv, tok = sim.server, sim.server.user_token
    pol = "/api/meshota/v1/management/policies"
    nxt = "/api/devices/v1/deployments/device/deployments/next?artifact_name=v1&device_type=meshota-sim"
    try:
        r = srv.call("GET", nxt, token=srv.device_tokens[0])
        assert r.status == 204 and r.header("X-Meshota-Checkin-Interval") is None  # nothing set: nothing sent
        fleet = {"install": {"consent": "ask-first"}, "checkin_interval": 3600}
        assert srv.call("PUT", f"{pol}/tenant", token=tok, body=fleet).status == 204
        group = {
            "install": {"windows": [{"days": ["mon"], "start": "03:00", "duration": 600}]},
            "checkin_interval": 120,
        }
        assert srv.call("PUT", f"{pol}/groups/submesh-1", token=tok, body=group).status == 204
        assert (
            json.loads(srv.call("GET", f"{pol}/groups/submesh-1", token=tok).body)["checkin_interval"] == 120
        )
        r = srv.call("GET", nxt, token=srv.device_tokens[0])
        assert r.status == 204 and r.header("X-Meshota-Checkin-Interval") == "3600"
        assert srv.call("GET", nxt, token=srv.device_tokens[1]).header("X-Meshota-Checkin-Interval") == "120"
        sim.create()
        a = json.loads(srv.call("GET", nxt, token=srv.device_tokens[0]).body)["meshota"]
        b = json.loads(srv.call("GET", nxt, token=srv.device_tokens[1]).body)["meshota"]
        assert a["install"]["consent"] == "ask-first" and a["install"]["windows"] is None
        assert a["checkin_interval"] == 3600
        monday_3am = EPOCH + 3 * 3600
        assert b["install"]["consent"] == "automatic" and b["install"]["windows"][0] == [
            monday_3am,
            monday_3am + 600,
        ]
        assert b["install"]["until"] == EPOCH + 7 * 86400
        for bad in ({"checkin_interval": 1}, {"install": {"time_zone": "Nowhere/City"}}, {"other": 1}, []):
            assert srv.call("PUT", f"{pol}/tenant", token=tok, body=bad).status == 400
        assert srv.call("PUT", f"{pol}/tenant", body=fleet).status == 401
        assert srv.call("DELETE", f"{pol}/groups/submesh-1", token=tok).status == 204
        assert srv.call("GET", nxt, token=srv.device_tokens[1]).header("X-Meshota-Checkin-Interval") == "3600"
    finally:
        sim.close()
