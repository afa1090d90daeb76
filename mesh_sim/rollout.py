"""Phased rollouts on the virtual clock against the real handlers (issue 16).

A fleet of nodes in sub-meshes (one root each, inventory group ``submesh-<k>``) runs against the
product's Mender handlers (:class:`mesh_sim.server.ApiServer`: SQLite store, real routing table);
the server's wall clock (``ApiContext.clock``: install windows, phase start times) is the
simulator's clock plus a fixed epoch. Every node:

- calls home (``GET .../deployments/next``) every ``checkin_interval`` × uniform(0.5, 1.5)
  (:class:`firmware_proto.checkin.CheckinSchedule`, interval updated from ``next``);
- when ``next`` names a deployment, tells its root, which waits ``collection_window`` seconds,
  downloads the artifact once through the signed link (counted per root) and streams it to every
  node that asked, ``stream_time`` seconds;
- reports ``downloading``; with the image, honours ``meshota.install`` (``InstallPolicy``): outside
  a window it reports ``pause_before_installing`` / ``awaiting window`` and waits for the window;
  consent policies wait for consent (none is given here);
- installs (``installing``), reboots, runs the image's health check: a bad image reports
  ``failure``, a good one ``success`` (all through ``PUT .../status``).

The rollout ticker (:func:`bridge.api.rollout_tick`) runs every ``tick`` seconds. The node model
abstracts the radio (the group stream is a delay; mesh_sim's radio scenarios measure that part):
what is measured here is the server's rollout logic, with the nodes' real cadence.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bridge.api import Response, rollout_tick
from firmware_proto.checkin import CheckinSchedule
from mesh_sim.clock import EventClock
from mesh_sim.server import DEVICE_TYPE, ApiServer, make_mender_artifact
from wire.install_policy import InstallPolicy, PolicyError

__all__ = ["EPOCH", "RolloutResult", "RolloutScenario", "RolloutSim", "run_rollout"]

EPOCH = 1_767_571_200.0  # 2026-01-05 00:00:00 UTC, a Monday: virtual t=0
_DEV = "/api/devices/v1/deployments/device/deployments"
_MGMT = "/api/management/v1/deployments/deployments"
_ROLL = "/api/meshota/v1/management/rollouts"


@dataclass(frozen=True, slots=True)
class RolloutScenario:
    nodes: int = 100
    submeshes: int = 5
    healthy: bool = True
    phases: tuple[Mapping[str, Any], ...] | None = None  # Mender's phases (None: one phase)
    by_submesh: bool = False  # one phase per sub-mesh (group), in order
    gates: Mapping[str, Any] | None = None
    retries: int = 0
    install: Mapping[str, Any] | None = None  # the deployment's install rule
    checkin_interval: int = 600
    collection_window: float = 60.0
    stream_time: float = 120.0
    install_time: float = 30.0
    tick: float = 30.0
    until: float = 12 * 3600.0
    settle_after_stop: float = 1800.0  # keep running after pause/abort/done to count stragglers
    seed: int = 1


@dataclass(slots=True)
class RolloutResult:
    state: str = ""
    events: list[tuple[float, str]] = field(default_factory=list)  # (virtual s, ticker event)
    stopped_at: float | None = None  # the first pause/abort: operator-visible
    reached: int = 0  # nodes whose deployment started (the server handed them the artifact)
    installed: int = 0  # nodes that installed the image (success or failure)
    failures: int = 0
    successes: int = 0
    root_fetches: dict[int, int] = field(default_factory=dict)
    statuses: list[tuple[float, int, str, str | None]] = field(default_factory=list)
    api_calls: int = 0
    phases_opened: int = 0
    trace: str = ""


@dataclass(slots=True)
class _Node:
    index: int
    submesh: int
    schedule: CheckinSchedule
    deployment: str | None = None
    policy: InstallPolicy | None = None
    stage: str = "idle"  # idle | wanting | streaming | holding | installing | done
    waiting: str | None = None  # the substate reported while holding (reported once, like the agent)
    wake_at: float | None = None  # a wake-up at the next window's opening is scheduled


@dataclass(slots=True)
class _Root:
    wanting: list[int] = field(default_factory=list)
    busy: bool = False


class _EnrollingServer(ApiServer):
    def enroll_fast(self, node: int, group: str) -> None:
        """Like :meth:`ApiServer.enroll` (auth request, accept, token, inventory) at any fleet
        size (the pending device is looked up by status), plus the node's sub-mesh group."""
        key = ec.generate_private_key(ec.SECP256R1())
        pub = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        id_data = json.dumps({"mac": f"02:00:00:01:{node >> 8:02x}:{node & 0xFF:02x}"}, separators=(",", ":"))
        body = (json.dumps({"id_data": id_data, "tenant_token": "", "pubkey": pub.decode()}) + "\n").encode()
        sig = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
        auth = "/api/devices/v1/authentication/auth_requests"
        _ok(self.call("POST", auth, body=body, headers={"x-men-signature": sig}), 401)
        pending = json.loads(
            _ok(
                self.call("GET", "/api/management/v2/devauth/devices?status=pending", token=self.user_token),
                200,
            ).body
        )
        (dev,) = pending
        path = f"/api/management/v2/devauth/devices/{dev['id']}/auth/{dev['auth_sets'][0]['id']}/status"
        _ok(self.call("PUT", path, token=self.user_token, body={"status": "accepted"}), 204)
        token = _ok(self.call("POST", auth, body=body, headers={"x-men-signature": sig}), 200).body.decode()
        attrs = [{"name": "device_type", "value": DEVICE_TYPE}, {"name": "artifact_name", "value": "v1"}]
        _ok(
            self.call("PATCH", "/api/devices/v1/inventory/device/attributes", token=token, body=attrs),
            200,
            204,
        )
        group_path = f"/api/management/v1/inventory/devices/{dev['id']}/group"
        _ok(self.call("PUT", group_path, token=self.user_token, body={"group": group}), 204)
        self.device_ids[node] = dev["id"]
        self.device_tokens[node] = token


def _ok(r: Response, *expected: int) -> Response:
    if r.status not in expected:
        raise RuntimeError(f"server answered {r.status}: {r.body[:300]!r}")
    return r


class RolloutSim:
    def __init__(self, scenario: RolloutScenario, workdir: Path) -> None:
        self.sc = scenario
        self.clock = EventClock()
        self.rng = random.Random(scenario.seed)
        workdir.mkdir(parents=True, exist_ok=True)
        self.server = _EnrollingServer(workdir)
        self.server.ctx.clock = lambda: EPOCH + self.clock.now
        self.server.login_admin()
        self.nodes: list[_Node] = []
        self.roots = [_Root() for _ in range(scenario.submeshes)]
        self.result = RolloutResult(root_fetches=dict.fromkeys(range(scenario.submeshes), 0))
        self.deployment_id = ""
        self.download_uri = ""
        self._stop_at: float | None = None
        for i in range(scenario.nodes):
            k = i % scenario.submeshes
            self.server.enroll_fast(i, f"submesh-{k}")
            sched = CheckinSchedule(scenario.checkin_interval, random.Random(self.rng.random()))
            self.nodes.append(_Node(i, k, sched))
        payload = self.rng.randbytes(4096)
        artifact = make_mender_artifact(workdir, "v2", payload, self.server.vendor_pem)
        self.server.upload_artifact(artifact)

    # -- set-up -------------------------------------------------------------------------------------
    def create(self) -> str:
        sc = self.sc
        body: dict[str, Any] = {
            "name": "rollout",
            "artifact_name": "v2",
            "devices": [self.server.device_ids[i] for i in range(sc.nodes)],
            "retries": sc.retries,
        }
        if sc.by_submesh:
            body["phases"] = [{"group": f"submesh-{k}"} for k in range(sc.submeshes)]
        elif sc.phases is not None:
            body["phases"] = [dict(p) for p in sc.phases]
        if sc.gates is not None:
            body["gates"] = dict(sc.gates)
        if sc.install is not None:
            body["install"] = dict(sc.install)
        r = _ok(self.server.call("POST", _MGMT, token=self.server.user_token, body=body), 201)
        self.deployment_id = dict(r.headers)["Location"].rsplit("/", 1)[1]
        return self.deployment_id

    # -- nodes ------------------------------------------------------------------------------------
    def _checkin(self, node: _Node) -> None:
        now = self.clock.now
        query = f"?artifact_name={'v2' if node.stage == 'done' and self._succeeded(node) else 'v1'}"
        r = self.server.call("GET", f"{_DEV}/next{query}&device_type={DEVICE_TYPE}", token=self._token(node))
        headers = {k.lower(): v for k, v in r.headers}
        found = json.loads(r.body) if r.status == 200 else None
        node.schedule.update_from_next(found, headers)
        if found is not None:
            self.download_uri = found["artifact"]["source"]["uri"]
            node.policy = _policy(found)
            if node.stage in ("idle", "done"):  # new, or a retry after a failure
                node.deployment = found["id"]
                node.stage = "wanting"
                self._want(node)
            elif node.stage == "holding":
                self._try_install(node)  # a fresh policy may open the way
        self.clock.at(node.schedule.schedule(now), self._checkin, node)

    def _succeeded(self, node: _Node) -> bool:
        return any(n == node.index and s == "success" for _, n, s, _ in self.result.statuses)

    def _token(self, node: _Node) -> str:
        return self.server.device_tokens[node.index]

    def _report(self, node: _Node, status: str, substate: str | None = None) -> None:
        assert node.deployment is not None
        body: dict[str, Any] = {"status": status}
        if substate is not None:
            body["substate"] = substate
        r = self.server.call("PUT", f"{_DEV}/{node.deployment}/status", token=self._token(node), body=body)
        self.result.statuses.append((self.clock.now, node.index, status, substate))
        self.clock.trace("status", node.index, status, substate, r.status)

    def _want(self, node: _Node) -> None:
        root = self.roots[node.submesh]
        root.wanting.append(node.index)
        if not root.busy:
            root.busy = True
            self.clock.after(self.sc.collection_window, self._root_fetch, node.submesh)

    def _root_fetch(self, k: int) -> None:
        root = self.roots[k]
        group, root.wanting = root.wanting, []
        r = self.server.call("GET", self.download_uri)  # the signed link, exactly as a root uses it
        _ok(r, 200)
        self.result.root_fetches[k] += 1
        self.clock.trace("root fetch", k, len(group))
        for i in group:
            node = self.nodes[i]
            node.stage = "streaming"
            self._report(node, "downloading")
        self.clock.after(self.sc.stream_time, self._stream_done, k, group)

    def _stream_done(self, k: int, group: list[int]) -> None:
        root = self.roots[k]
        for i in group:
            node = self.nodes[i]
            node.stage = "holding"
            self._try_install(node)
        if root.wanting:
            self.clock.after(self.sc.collection_window, self._root_fetch, k)
        else:
            root.busy = False

    def _try_install(self, node: _Node) -> None:
        if node.stage != "holding":
            return
        now = EPOCH + self.clock.now
        policy = node.policy or InstallPolicy()
        wait = "awaiting consent" if policy.consent != "automatic" else None
        if wait is None and not policy.window_open(now):
            wait = "awaiting window"
            opens = policy.next_open(now)
            if opens is not None and node.wake_at != opens:
                node.wake_at = opens
                self.clock.at(opens - EPOCH, self._try_install, node)
            # else: the next check-in brings fresh windows
        if wait is not None:
            if node.waiting != wait:
                node.waiting = wait
                self._report(node, "pause_before_installing", wait)
            return
        node.waiting = node.wake_at = None
        node.stage = "installing"
        self._report(node, "installing")
        self.clock.after(self.sc.install_time, self._installed, node)

    def _installed(self, node: _Node) -> None:
        node.stage = "done"
        self._report(node, "success" if self.sc.healthy else "failure")

    # -- the ticker ---------------------------------------------------------------------------------
    def _tick(self) -> None:
        events = self.server.run(rollout_tick(self.server.ctx.gov, EPOCH + self.clock.now))
        for _, event in events:
            self.result.events.append((self.clock.now, event))
            self.clock.trace("tick", event)
            if event.startswith("phase"):
                self.result.phases_opened += 1
            if event in ("paused", "aborted") and self.result.stopped_at is None:
                self.result.stopped_at = self.clock.now
            if event in ("paused", "aborted", "done") and self._stop_at is None:
                self._stop_at = self.clock.now + self.sc.settle_after_stop
                self.clock.at(self._stop_at, self.clock.stop)
        self.clock.after(self.sc.tick, self._tick)

    def run(self) -> RolloutResult:
        self.create()
        for node in self.nodes:
            # a fleet's check-ins are already spread when the deployment appears
            self.clock.at(self.rng.uniform(0, self.sc.checkin_interval), self._checkin, node)
        self.clock.at(self.sc.tick, self._tick)
        self.clock.run(until=self.sc.until)
        return self._finish()

    def _finish(self) -> RolloutResult:
        res = self.result
        r = _ok(self.server.call("GET", f"{_ROLL}/{self.deployment_id}", token=self.server.user_token), 200)
        rollout = json.loads(r.body)
        res.state = rollout["state"]
        res.reached = sum(p["started"] for p in rollout["phases"])
        finals = {}
        for _, n, s, _ in res.statuses:
            if s in ("success", "failure"):
                finals[n] = s
        res.successes = sum(1 for s in finals.values() if s == "success")
        res.failures = sum(1 for _, _, s, _ in res.statuses if s == "failure")
        res.installed = len({n for _, n, s, _ in res.statuses if s == "installing"})
        res.api_calls = self.server.calls
        res.trace = self.clock.trace_hash()
        return res

    def rollout(self) -> dict[str, Any]:
        r = _ok(self.server.call("GET", f"{_ROLL}/{self.deployment_id}", token=self.server.user_token), 200)
        body: dict[str, Any] = json.loads(r.body)
        return body

    def close(self) -> None:
        self.server.close()


def _policy(found: dict[str, Any]) -> InstallPolicy | None:
    extra = found.get("meshota")
    raw = extra.get("install") if isinstance(extra, dict) else None
    if not isinstance(raw, dict):
        return None
    try:
        return InstallPolicy.from_next(raw)
    except PolicyError:
        return InstallPolicy("ask-first", (), 0.0)


def run_rollout(scenario: RolloutScenario, workdir: Path) -> RolloutResult:
    sim = RolloutSim(scenario, workdir)
    try:
        return sim.run()
    finally:
        sim.close()
