"""The rollout ticker: one job that moves every phased rollout on (:func:`rollout_tick`).

:func:`rollout_ticker_service` is a server service (``meshota server``/``meshota up`` start it;
``--rollout-tick 0`` turns it off). Each pass is one :func:`rollout_tick` at ``ctx.clock()``
(every organisation's rollouts, each in its own organisation's unit of work, audited as the
``system`` principal ``rollout-ticker``); a failing pass is logged once per distinct error and
retried on the next tick. Several server processes: the service runs the ticker as a
:class:`bridge.store.SingletonJob` (PostgreSQL advisory lock, ``flock`` on SQLite), so one
process ticks and another takes over when it dies; even two racing tickers would be safe, as
every step re-reads its rollout inside its own transaction and writes what that state implies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.store import SingletonJob

from ._context import ApiContext
from ._rollouts import rollout_tick
from ._routing import Router

__all__ = ["DEFAULT_TICK", "rollout_ticker_service", "run_ticker"]

log = logging.getLogger("meshota.rollouts")
DEFAULT_TICK = 30.0


async def run_ticker(
    ctx: ApiContext, interval: float, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> None:
    """Tick forever (until cancelled)."""
    last_error = ""
    while True:
        try:
            for deployment_id, event in await rollout_tick(ctx.gov, ctx.clock()):
                log.info("rollout %s: %s", deployment_id, event)
            last_error = ""
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store away for a moment: say so once, keep ticking
            if repr(exc) != last_error:
                log.warning("rollout ticker: %r; retrying every %.0f s", exc, interval)
                last_error = repr(exc)
        await sleep(interval)


def rollout_ticker_service(
    interval: float = DEFAULT_TICK,
) -> Callable[[Router[Any]], Awaitable[Callable[[], Awaitable[None]]]]:
    async def start(router: Router[Any]) -> Callable[[], Awaitable[None]]:
        ctx = router.context
        assert isinstance(ctx, ApiContext)
        job = SingletonJob(
            ctx.store, "rollout-ticker", lambda: run_ticker(ctx, interval), retry=max(1.0, interval)
        )
        task = asyncio.create_task(job.run(), name="rollout-ticker")

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        return stop

    return start
