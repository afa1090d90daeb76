"""Phased rollouts: Mender's ``phases``/``retries`` plus health gates, approval, pause/resume/abort.

A deployment created with ``phases`` (Mender's deployments API shape) gets a ``rollouts`` row and
one ``rollout_devices`` row per device naming its phase. ``next`` offers a device its deployment
only while the rollout runs and the device's phase is open (a device that already started keeps
going, also through a pause). The rollout ticker (:func:`rollout_tick`, one job per fleet, see
``bridge/api/_rollout_ticker.py``) moves rollouts on:

- ``scheduled`` → ``running`` at the first phase's ``start_ts`` (auto-start);
- error gate (over every opened phase): failures ≥ ``error_count`` or failures / opened devices ≥
  ``error_share`` → ``paused`` (``on_error: "pause"``) or ``aborted`` (``on_error: "abort"``);
- success gate: successes / the current phase's devices ≥ ``success_share`` opens the next phase
  (not before its ``start_ts``; through ``awaiting_approval`` when ``approve`` is set);
- the last phase done → ``done``.

Manual actions (``POST /api/meshota/v1/management/rollouts/{id}/{approve|pause|resume|abort}``)
go through :func:`rollout_action`. A phase is a share of the devices (``batch_size``, percent; the
last phase may omit it: the rest) or one inventory group (``group``: a sub-mesh's nodes, so one
root streams the image once for its whole phase). Retries: a device that reports ``failure``
while it has retries left goes back to pending (:func:`retry_device`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.service import Governance, system
from bridge.store import cross_tenant
from bridge.store import rollout_tables as rt
from bridge.store import tables as t

from ._auth import require_user
from ._context import ApiContext, now
from ._policies import parse_install
from ._times import parse_rfc3339, rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = [
    "ACTIONS",
    "Gates",
    "RolloutSpec",
    "create_rollout",
    "mgmt_rollout",
    "mgmt_rollout_action",
    "parse_rollout",
    "retry_device",
    "rollout_action",
    "rollout_json",
    "rollout_tick",
]

ACTIONS = ("approve", "pause", "resume", "abort")
MAX_PHASES = 64
MAX_RETRIES = 100
_R, _RD, _DD = rt.rollouts, rt.rollout_devices, t.device_deployments
_OK = ("success", "already-installed")
ACTIVE = ("scheduled", "running", "awaiting_approval", "paused")


@dataclass(frozen=True, slots=True)
class Gates:
    success_share: float = 0.9  # of the current phase's devices, to open the next phase
    error_share: float = 0.1  # failures over the devices of every opened phase
    error_count: int | None = None  # failures (absolute) that trip the error gate
    on_error: str = "pause"  # or "abort"
    approve: bool = False  # a person approves each next phase

    def to_json(self) -> dict[str, Any]:
        return {
            "success_share": self.success_share,
            "error_share": self.error_share,
            "error_count": self.error_count,
            "on_error": self.on_error,
            "approve": self.approve,
        }

    @classmethod
    def parse(cls, obj: Any) -> Gates:
        if obj is None:
            return cls()
        if not isinstance(obj, dict) or set(obj) - set(cls().to_json()):
            raise ApiError(
                400, "gates: an object of success_share, error_share, error_count, on_error, approve"
            )
        out = cls()
        for key in ("success_share", "error_share"):
            value = obj.get(key, getattr(out, key))
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
                raise ApiError(400, f"gates.{key} must be a share in (0, 1]")
        count = obj.get("error_count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise ApiError(400, "gates.error_count must be a positive integer or null")
        if obj.get("on_error", "pause") not in ("pause", "abort"):
            raise ApiError(400, 'gates.on_error must be "pause" or "abort"')
        if not isinstance(obj.get("approve", False), bool):
            raise ApiError(400, "gates.approve must be a boolean")
        return cls(
            float(obj.get("success_share", out.success_share)),
            float(obj.get("error_share", out.error_share)),
            count,
            obj.get("on_error", "pause"),
            obj.get("approve", False),
        )


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    phases: tuple[dict[str, Any], ...]  # {"batch_size": int|None, "group": str|None, "start_ts": float|None}
    retries: int
    gates: Gates
    install: dict[str, Any] | None  # the deployment's own install rule (JSON), validated


def parse_rollout(body: dict[str, Any]) -> RolloutSpec | None:
    """The phased part of a NewDeployment body; ``None`` for a plain deployment."""
    raw = body.get("phases")
    retries = body.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRIES:
        raise ApiError(400, f"retries must be an integer in 0..{MAX_RETRIES}")
    gates = Gates.parse(body.get("gates"))
    rule = parse_install(body.get("install"))
    install = rule.to_json() if rule is not None else None
    if raw is None:
        if retries or "gates" in body or install is not None:
            raw = [{}]  # one phase: retries, gates or windows on a plain deployment
        else:
            return None
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_PHASES:
        raise ApiError(400, f"phases must be a list of 1..{MAX_PHASES} phases")
    phases: list[dict[str, Any]] = []
    total = 0
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) - {"batch_size", "start_ts", "group"}:
            raise ApiError(400, f"phases[{i}]: an object of batch_size, start_ts, group")
        size, group, start = item.get("batch_size"), item.get("group"), item.get("start_ts")
        if size is not None and group is not None:
            raise ApiError(400, f"phases[{i}]: batch_size or group, not both")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 100:
                raise ApiError(400, f"phases[{i}].batch_size must be a percentage in 1..100")
            total += size
        elif group is not None:
            if not isinstance(group, str) or not 1 <= len(group) <= 255:
                raise ApiError(400, f"phases[{i}].group must be a group name")
        elif i != len(raw) - 1:
            raise ApiError(400, f"phases[{i}] needs batch_size or group (only the last phase may omit it)")
        ts = None
        if start is not None:
            try:
                ts = parse_rfc3339(start) if isinstance(start, str) else None
            except ValueError:
                ts = None
            if ts is None:
                raise ApiError(400, f"phases[{i}].start_ts must be an RFC 3339 time")
        phases.append({"batch_size": size, "group": group, "start_ts": ts})
    if total > 100:
        raise ApiError(400, f"phase batch sizes add up to {total}%; at most 100")
    kinds = {p["group"] is not None for p in phases if p["batch_size"] is not None or p["group"] is not None}
    if len(kinds) > 1:
        raise ApiError(400, "phases are all by batch_size or all by group")
    return RolloutSpec(tuple(phases), retries, gates, install)


async def create_rollout(
    conn: AsyncConnection, deployment_id: str, device_ids: list[str], spec: RolloutSpec, ts: float
) -> None:
    """Assign every device a phase (shares: in the order the devices are listed, so the operator
    picks the canaries) and store the rollout (inside the deployment's transaction)."""
    ids = list(dict.fromkeys(device_ids))  # Mender: devices fill the phases in the order listed
    phases = [dict(p) for p in spec.phases]
    assigned: dict[str, int] = {}
    if any(p["group"] is not None for p in phases):
        groups = await conn.execute(
            sa.select(t.inventory.c.device_id, t.inventory.c.value).where(
                t.inventory.c.scope == "system",
                t.inventory.c.name == "group",
                t.inventory.c.device_id.in_(ids),
            )
        )
        group_of = {r.device_id: r.value for r in groups}
        index = {p["group"]: i for i, p in enumerate(phases) if p["group"] is not None}
        last = len(phases) - 1
        for device_id in ids:
            phase = index.get(group_of.get(device_id))
            if phase is None:
                if phases[last]["group"] is not None:
                    raise ApiError(400, f"device {device_id} is in none of the phases' groups")
                phase = last
            assigned[device_id] = phase
    else:
        start = 0
        for i, p in enumerate(phases):
            if i == len(phases) - 1:
                count = len(ids) - start
            else:
                count = max(1, round(len(ids) * p["batch_size"] / 100))
                count = min(count, len(ids) - start)
            for device_id in ids[start : start + count]:
                assigned[device_id] = i
            start += count
    for i, p in enumerate(phases):
        p["size"] = sum(1 for v in assigned.values() if v == i)
    first_start = phases[0]["start_ts"]
    state = "scheduled" if first_start is not None and first_start > ts else "running"
    await conn.execute(
        sa.insert(_R).values(
            deployment_id=deployment_id,
            phases=phases,
            retries=spec.retries,
            gates=spec.gates.to_json(),
            install=spec.install,
            state=state,
            current_phase=0,
            reason=None,
            updated_ts=ts,
        )
    )
    await conn.execute(
        sa.insert(_RD),
        [
            {"deployment_id": deployment_id, "device_id": d, "phase": p, "attempts": 0}
            for d, p in assigned.items()
        ],
    )


async def retry_device(conn: AsyncConnection, deployment_id: str, device_id: str, dd_id: str) -> bool:
    """A reported failure with retries left: back to pending (True), else False."""
    row = (
        await conn.execute(
            sa.select(_RD.c.attempts, _R.c.retries, _R.c.state)
            .join(_R, _R.c.deployment_id == _RD.c.deployment_id)
            .where(_RD.c.deployment_id == deployment_id, _RD.c.device_id == device_id)
        )
    ).first()
    if row is None or row.attempts >= row.retries or row.state not in ACTIVE:
        return False
    await conn.execute(
        sa.update(_RD)
        .where(_RD.c.deployment_id == deployment_id, _RD.c.device_id == device_id)
        .values(attempts=row.attempts + 1)
    )
    await conn.execute(
        sa.update(_DD)
        .where(_DD.c.id == dd_id)
        .values(status="pending", substate=None, started_ts=None, finished_ts=None, artifact_id=None)
    )
    return True


async def _phase_counts(conn: AsyncConnection, deployment_id: str) -> dict[int, dict[str, int]]:
    rows = await conn.execute(
        sa.select(_RD.c.phase, _DD.c.status, _DD.c.started_ts.is_not(None).label("started"), sa.func.count())
        .join(_DD, (_DD.c.deployment_id == _RD.c.deployment_id) & (_DD.c.device_id == _RD.c.device_id))
        .where(_RD.c.deployment_id == deployment_id)
        .group_by(_RD.c.phase, _DD.c.status, _DD.c.started_ts.is_not(None))
    )
    out: dict[int, dict[str, int]] = {}
    for phase, status, started, n in rows:
        c = out.setdefault(int(phase), {"success": 0, "failure": 0, "started": 0, "finished": 0})
        if status in _OK:
            c["success"] += int(n)
        elif status == "failure":
            c["failure"] += int(n)
        if started or status in _OK or status == "failure":
            c["started"] += int(n)
        if status in _OK or status in ("failure", "aborted", "noartifact", "decommissioned"):
            c["finished"] += int(n)
    return out


async def _set(conn: AsyncConnection, deployment_id: str, ts: float, **values: Any) -> None:
    await conn.execute(
        sa.update(_R).where(_R.c.deployment_id == deployment_id).values(updated_ts=ts, **values)
    )


async def _abort(conn: AsyncConnection, deployment_id: str) -> None:
    from ._deployments import abort_deployment  # late: _deployments imports this module

    await abort_deployment(conn, deployment_id)


async def _step(conn: AsyncConnection, row: Any, ts: float) -> str | None:
    """Move one rollout on; returns what happened (for the log and the tests) or None."""
    dep_id, phases, state = row.deployment_id, row.phases, row.state
    gates = Gates.parse(row.gates)
    if state == "scheduled":
        start = phases[0]["start_ts"]
        if start is not None and ts < start:
            return None
        await _set(conn, dep_id, ts, state="running", current_phase=0)
        return "started"
    if state != "running":
        return None
    counts = await _phase_counts(conn, dep_id)
    current = int(row.current_phase)
    opened = [counts.get(i, {}) for i in range(current + 1)]
    failures = sum(c.get("failure", 0) for c in opened)
    devices = sum(int(phases[i]["size"]) for i in range(current + 1))
    if failures and (
        (gates.error_count is not None and failures >= gates.error_count)
        or failures / max(devices, 1) >= gates.error_share
    ):
        reason = f"error gate: {failures} failures of {devices} devices in phases 1..{current + 1}"
        if gates.on_error == "abort":
            await _set(conn, dep_id, ts, state="aborted", reason=reason, paused_ts=ts)
            await _abort(conn, dep_id)
            return "aborted"
        await _set(conn, dep_id, ts, state="paused", reason=reason, paused_ts=ts)
        return "paused"
    here = counts.get(current, {})
    size = int(phases[current]["size"])
    if size and here.get("success", 0) / size < gates.success_share:
        return None  # an empty phase passes at once
    if current + 1 >= len(phases):
        if here.get("finished", 0) >= size:
            await _set(conn, dep_id, ts, state="done", reason=None)
            return "done"
        return None
    start = phases[current + 1]["start_ts"]
    if start is not None and ts < start:
        return None
    if gates.approve:
        await _set(conn, dep_id, ts, state="awaiting_approval", reason=f"phase {current + 1} passed its gate")
        return "awaiting_approval"
    await _set(conn, dep_id, ts, current_phase=current + 1, reason=None)
    return f"phase {current + 2} opened"


# what the ticker writes as, in each organisation: only what moving a rollout on needs
TICKER = "rollout-ticker"
TICKER_PERMISSIONS = ("deployments:read", "deployments:manage")
_DUE = (
    sa.select(_R.c.deployment_id, _R.c.tenant_id)
    .where(_R.c.state.in_(("scheduled", "running")))
    .order_by(_R.c.tenant_id, _R.c.deployment_id)
)


def _audit_action(event: str) -> str:
    if event.startswith("phase "):
        return "rollout.phase_open"
    return {
        "started": "rollout.start",
        "paused": "rollout.pause",
        "aborted": "rollout.abort",
        "awaiting_approval": "rollout.await_approval",
        "done": "rollout.done",
    }[event]


async def rollout_tick(gov: Governance, ts: float) -> list[tuple[str, str]]:
    """One pass of the rollout ticker over every organisation's active rollouts:
    ``[(deployment id, event)]``.

    Only the listing crosses organisations; each rollout then moves in its own unit of work, in
    its organisation's scope, as the ``system`` principal ``rollout-ticker`` of that organisation
    (``deployments:manage``), with an audit entry for what it changed (phase opened, paused,
    aborted, ...). One transaction per rollout, so one bad row cannot hold the others back."""
    with cross_tenant():  # the list only: which rollouts are due, and whose they are
        async with gov.store.read() as conn:
            due = [(r.deployment_id, r.tenant_id) for r in await conn.execute(_DUE)]
    events: list[tuple[str, str]] = []
    for dep_id, tenant_id in due:
        async with gov.unit(system(tenant_id, TICKER, TICKER_PERMISSIONS), "deployments:manage") as uow:
            row = (await uow.conn.execute(sa.select(_R).where(_R.c.deployment_id == dep_id))).first()
            if row is None:
                continue
            event = await _step(uow.conn, row, ts)
            if event is not None:
                state = (
                    await uow.conn.execute(
                        sa.select(_R.c.state, _R.c.current_phase, _R.c.reason).where(
                            _R.c.deployment_id == dep_id
                        )
                    )
                ).one()
                await uow.audit(
                    _audit_action(event),
                    "deployment",
                    dep_id,
                    {
                        "event": event,
                        "state": state.state,
                        "phase": int(state.current_phase) + 1,
                        "reason": state.reason,
                    },
                )
        if event is not None:
            events.append((dep_id, event))
    return events


async def rollout_action(conn: AsyncConnection, deployment_id: str, action: str, ts: float) -> str:
    """Service layer: approve / pause / resume / abort; returns the new state."""
    row = (await conn.execute(sa.select(_R).where(_R.c.deployment_id == deployment_id))).first()
    if row is None:
        raise ApiError(404, "no phased rollout with this deployment id")
    state = row.state
    if action == "abort":
        if state in ("aborted", "done"):
            raise ApiError(409, f"rollout is {state}")
        await _set(conn, deployment_id, ts, state="aborted", reason="aborted by an operator")
        await _abort(conn, deployment_id)
        return "aborted"
    if action == "pause":
        if state not in ("scheduled", "running", "awaiting_approval"):
            raise ApiError(409, f"cannot pause a rollout that is {state}")
        await _set(conn, deployment_id, ts, state="paused", reason="paused by an operator", paused_ts=ts)
        return "paused"
    if action == "resume":
        if state != "paused":
            raise ApiError(409, f"cannot resume a rollout that is {state}")
        await _set(conn, deployment_id, ts, state="running", reason=None, paused_ts=None)
        return "running"
    if action == "approve":
        if state != "awaiting_approval":
            raise ApiError(409, f"nothing to approve: the rollout is {state}")
        await _set(
            conn, deployment_id, ts, state="running", current_phase=int(row.current_phase) + 1, reason=None
        )
        return "running"
    raise ApiError(400, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")


async def rollout_json(conn: AsyncConnection, deployment_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(_R).where(_R.c.deployment_id == deployment_id))).first()
    if row is None:
        return None
    counts = await _phase_counts(conn, deployment_id)
    phases = []
    for i, p in enumerate(row.phases):
        c = counts.get(i, {})
        item: dict[str, Any] = {"id": str(i + 1), "device_count": p["size"]}
        if p["batch_size"] is not None:
            item["batch_size"] = p["batch_size"]
        if p["group"] is not None:
            item["group"] = p["group"]
        if p["start_ts"] is not None:
            item["start_ts"] = rfc3339(p["start_ts"])
        item.update(
            open=i <= row.current_phase and row.state not in ("scheduled",),
            started=c.get("started", 0),
            success=c.get("success", 0),
            failure=c.get("failure", 0),
        )
        phases.append(item)
    return {
        "state": row.state,
        "current_phase": int(row.current_phase) + 1,
        "reason": row.reason,
        "retries": row.retries,
        "gates": row.gates,
        "install": row.install,
        "phases": phases,
        "paused": rfc3339(row.paused_ts),
    }


async def mgmt_rollout(ctx: ApiContext, req: Request) -> Response:
    from ._deployments import check_deployment  # late: _deployments imports this module

    p = await require_user(ctx, req)
    async with ctx.gov.read(p, "deployments:read") as uow:
        await check_deployment(uow, req.path_params["id"])
        body = await rollout_json(uow.conn, req.path_params["id"])
    if body is None:
        raise ApiError(404, "no phased rollout with this deployment id")
    return json_response(200, body)


async def mgmt_rollout_action(ctx: ApiContext, req: Request) -> Response:
    from ._deployments import check_deployment  # late: _deployments imports this module

    p = await require_user(ctx, req)
    action = req.path_params["action"]
    if action not in ACTIONS:
        raise ApiError(400, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    async with ctx.gov.unit(p, "deployments:manage") as uow:
        await check_deployment(uow, req.path_params["id"])
        state = await rollout_action(uow.conn, req.path_params["id"], action, now())
        await uow.audit(f"rollout.{action}", "deployment", req.path_params["id"], {"state": state})
    return json_response(200, {"state": state})
