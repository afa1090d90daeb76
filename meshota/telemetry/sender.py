"""The sender: an asyncio task inside ``meshota server`` (a ``bridge.http.Service``).

Why a task in the server and not a child of ``meshota up``: the report is built from the
server's database (node counts by type and radio), which the server has open already; a child
would be a second Python process with SQLAlchemy and a database connection (~40 MB) for one
request a week. The server may restart (SIGHUP, a crash): the state file says which window was
sent, so a week is never reported twice.

Proxy settings are honoured (httpx ``trust_env``: ``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``).
A failed send is logged once per process (without the collector's answer body) and retried
silently (meshota/telemetry/schedule.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bridge.api import ApiContext, Router, installation_facts

from .report import HEADERS, build_report, encode_body, make_request
from .schedule import Schedule
from .state import load_state, save_state

__all__ = ["run_sender", "send_once", "telemetry_service"]

log = logging.getLogger("meshota.telemetry")
MAX_SLEEP = 3600.0  # re-read the clock at least hourly (suspend, clock changes)


async def send_once(client: httpx.AsyncClient, url: str, body: bytes) -> None:
    response = await client.send(make_request(client, url, body))
    if response.status_code >= 300:
        raise RuntimeError(f"collector answered {response.status_code}")


def telemetry_service(
    level: str, url: str, state_path: Path, version: str
) -> Callable[[Router[Any]], Awaitable[Callable[[], Awaitable[None]]]]:
    async def start(router: Router[Any]) -> Callable[[], Awaitable[None]]:
        ctx = router.context
        assert isinstance(ctx, ApiContext)
        task = asyncio.create_task(run_sender(ctx, level, url, state_path, version))

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        return stop

    return start


async def run_sender(
    ctx: ApiContext,
    level: str,
    url: str,
    state_path: Path,
    version: str,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> None:
    """Report forever (until cancelled); ``clock``, ``sleep`` and ``rng`` are for tests."""
    state = load_state(state_path, clock())
    schedule = Schedule(state, rng or random.SystemRandom())
    log.info("telemetry level %s: one report per week to %s (see: meshota telemetry show)", level, url)
    async with httpx.AsyncClient(trust_env=True, headers=HEADERS, timeout=30.0) as client:
        while True:
            now = clock()
            window = schedule.due(now)
            if window is None:
                await sleep(min(MAX_SLEEP, max(0.0, schedule.next_send(now) - now)))
                continue
            facts = await installation_facts(ctx.store)
            body = encode_body(build_report(level, window, state.age(window), version, facts))
            try:
                await send_once(client, url, body)
            except (httpx.HTTPError, RuntimeError, OSError) as exc:
                if schedule.failed(window, clock()):
                    log.warning("telemetry report not sent (%s); retrying quietly", type(exc).__name__)
                continue
            schedule.sent(window)
            save_state(state_path, state)
            log.info("telemetry report for week %d sent", window)
