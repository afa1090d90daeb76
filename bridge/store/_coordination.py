"""What several server processes on one database coordinate through it.

- :func:`notify` / :meth:`Listener`: PostgreSQL ``NOTIFY`` sent inside a transaction (delivered
  by PostgreSQL only when it commits) and a ``LISTEN`` connection per process that calls back
  with each payload; used to drop a decommissioned device from every worker's token cache at
  once. SQLite is one process: nothing to send, the in-process callbacks
  (:func:`bridge.store.after_commit`) already did it.
- :class:`SingletonJob`: a coroutine that runs in exactly one process at a time. PostgreSQL: a
  session advisory lock (``pg_try_advisory_lock``) held on a connection of its own; when that
  process or its connection dies, PostgreSQL releases the lock and another process's next try
  takes it over. SQLite: an exclusive ``flock`` on a file next to the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from ._engine import Store

__all__ = ["DEVICE_CHANNEL", "Listener", "SingletonJob", "notify"]

log = logging.getLogger("meshota.store")
DEVICE_CHANNEL = "device"  # payload: a device id whose auth state changed
# NOTIFY is per database: each schema (one per test, one per tenant) gets channels of its own,
# named after the schema the connection works in (its search_path), so the sender needs no name
_CHANNEL_SQL = "'meshota_' || left(md5(current_schema()), 12) || '_' || "
_NOTIFY = sa.text(f"SELECT pg_notify({_CHANNEL_SQL}:b_channel, :b_payload)")


def _dsn(store: Store) -> str:
    url = store.engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def _pg_connect(store: Store) -> Any:
    import asyncpg

    conn = await asyncpg.connect(_dsn(store), timeout=10)
    if store.schema is not None:
        await conn.execute(f'SET search_path TO "{store.schema}"')
    return conn


async def notify(conn: AsyncConnection, channel: str, payload: str) -> None:
    """Send ``payload`` on ``channel`` when the transaction of ``conn`` commits (PostgreSQL)."""
    if conn.dialect.name != "postgresql":
        return
    await conn.execute(_NOTIFY, {"b_channel": channel, "b_payload": payload})


class Listener:
    """``LISTEN channel`` on a connection of its own; ``callback(payload)`` per notification.

    On a lost connection it reconnects (every ``retry`` s) and calls ``on_gap()``: whatever was
    sent meanwhile is lost, so the caller must assume everything changed (clear its caches).
    """

    def __init__(
        self,
        store: Store,
        channel: str,
        callback: Callable[[str], None],
        on_gap: Callable[[], None],
        *,
        retry: float = 1.0,
    ) -> None:
        self.store, self.channel, self.callback, self.on_gap, self.retry = (
            store,
            channel,
            callback,
            on_gap,
            retry,
        )
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10.0) -> Listener:
        if self.store.is_sqlite:
            self.connected.set()
            return self
        self._task = asyncio.create_task(self._run(), name=f"listen-{self.channel}")
        self.store.on_close(self.stop)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        first = True
        while True:
            conn = None
            try:
                conn = await _pg_connect(self.store)
                channel = await conn.fetchval(f"SELECT {_CHANNEL_SQL}$1::text", self.channel)
                lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                conn.add_termination_listener(functools.partial(_settle, lost))
                await conn.add_listener(channel, lambda _c, _pid, _ch, payload: self.callback(payload))
                if not first:
                    self.on_gap()  # notifications sent while we were away are gone
                first = False
                self.connected.set()
                while not lost.done():  # a dead TCP connection shows up on the next query
                    await asyncio.wait({lost}, timeout=self.retry * 5)
                    if not lost.done():
                        await asyncio.wait_for(conn.execute("SELECT 1"), self.retry * 5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN %s lost (%s); again in %.1f s", self.channel, exc, self.retry)
            finally:
                self.connected.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            await asyncio.sleep(self.retry)


def _settle(future: asyncio.Future[None], *_: object) -> None:
    if not future.done():
        future.set_result(None)


def _lock_key(store: Store, name: str) -> int:
    digest = hashlib.blake2b(f"{store.schema or ''}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class SingletonJob:
    """``await SingletonJob(store, "rollout-ticker", tick_forever).run()`` in every process: the
    job runs in one of them; when that one dies another takes over within ``retry`` seconds
    (plus PostgreSQL noticing the dead connection).

    ``job`` is a coroutine function running until cancelled; if it returns or raises, the lock
    is released and taken again (possibly by another process) after ``retry`` seconds.
    ``leading`` tells whether this process holds the lock now.
    """

    def __init__(
        self, store: Store, name: str, job: Callable[[], Awaitable[None]], *, retry: float = 1.0
    ) -> None:
        self.store, self.name, self.job, self.retry = store, name, job, retry
        self.leading = False

    async def run(self) -> None:
        while True:
            try:
                if self.store.is_sqlite:
                    await self._run_sqlite()
                else:
                    await self._run_pg()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("singleton %s: %s; trying again in %.1f s", self.name, exc, self.retry)
            finally:
                self.leading = False
            await asyncio.sleep(self.retry)

    async def _lead(self, alive: Callable[[], Awaitable[None]]) -> None:
        """Run the job while ``alive()`` keeps succeeding (it raises when the lock may be gone)."""
        self.leading = True
        log.info("singleton %s runs in this process (pid %d)", self.name, os.getpid())
        task = asyncio.ensure_future(self.job())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=self.retry)
                if not task.done():
                    await alive()
            task.result()  # a job that ended: its error is logged by run()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            self.leading = False

    async def _run_pg(self) -> None:
        key = _lock_key(self.store, self.name)
        conn = await _pg_connect(self.store)
        try:
            while True:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    break
                await asyncio.sleep(self.retry)

            async def alive() -> None:
                await asyncio.wait_for(conn.execute("SELECT 1"), max(self.retry * 5, 5.0))

            await self._lead(alive)
        finally:
            with contextlib.suppress(Exception):
                conn.terminate()  # the session ends: PostgreSQL releases the lock

    async def _run_sqlite(self) -> None:
        database = make_url(str(self.store.engine.url)).database or ""
        fd = os.open(f"{database}.{self.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(self.retry)

            async def alive() -> None:
                return None

            await self._lead(alive)
        finally:
            os.close(fd)  # releases the flock
