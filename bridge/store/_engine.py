"""Opening the database, running Alembic migrations, and the one transaction helper."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ._sqlite_inline import BUSY_TIMEOUT_S, InlineConnection, connect_inline
from ._tenancy import cross_tenant, install_tenancy

__all__ = ["Batch", "BatchFailed", "Store", "StoreConfigError", "after_commit", "normalize_url"]

_MIGRATIONS = Path(__file__).with_name("migrations")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_AFTER_COMMIT = "meshota.after_commit"
_READ_ONLY = "meshota_read_only"


def after_commit(conn: AsyncConnection, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the :meth:`Store.transaction` that owns ``conn`` has committed.

    Used to drop cached state (device status) only when the change is visible to every other
    connection, and to cache what a :meth:`Store.batch` read only once it is committed; nothing
    runs if the transaction rolls back. Outside such a transaction the callback runs at once.
    """
    callbacks = conn.info.get(_AFTER_COMMIT)
    if callbacks is None:
        callback()
    else:
        callbacks.append(callback)


class StoreConfigError(ValueError):
    """The database URL or schema name cannot be used."""


def normalize_url(url: str) -> str:
    """Map plain ``sqlite:///`` / ``postgresql://`` URLs to their asyncio drivers."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreConfigError(f"not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise StoreConfigError(f"unsupported database {backend!r} in {url!r}")
    return parsed.render_as_string(hide_password=False)


class Store:
    """An async SQLAlchemy engine plus :meth:`transaction`.

    SQLite: one writer at a time, so transactions are serialized in-process and start with
    ``BEGIN IMMEDIATE`` (a second process waits on the busy timeout instead of failing late).
    PostgreSQL: ``schema`` puts every table in that schema (tests use one schema per test).
    """

    def __init__(self, engine: AsyncEngine, *, schema: str | None = None) -> None:
        self.engine = engine
        self.schema = schema
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._lock = asyncio.Lock() if self.is_sqlite else None
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def on_close(self, stop: Callable[[], Awaitable[None]]) -> None:
        """Run ``stop`` at :meth:`close` (a LISTEN connection: bridge/store/_coordination.py)."""
        self._closers.append(stop)

    @staticmethod
    def check_schema(url: str, schema: str) -> None:
        """Raise :class:`StoreConfigError` unless ``schema`` can be used with ``url``."""
        if not _SCHEMA_NAME.match(schema):
            raise StoreConfigError(f"bad schema name {schema!r} (lower-case letters, digits, _)")
        if normalize_url(url).startswith("sqlite"):
            raise StoreConfigError("a schema is only supported on PostgreSQL")

    @classmethod
    def open(cls, url: str, *, schema: str | None = None) -> Store:
        async_url = normalize_url(url)
        kwargs: dict[str, Any] = {}
        if schema is not None:
            cls.check_schema(url, schema)
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
        if async_url.startswith("sqlite"):
            database = make_url(async_url).database or ""
            if database in ("", ":memory:"):
                raise StoreConfigError("SQLite needs a file path (sqlite:///path/to/file)")
            kwargs["async_creator"] = functools.partial(connect_inline, database)
            # connections are cheap in-process handles: keep enough open for every concurrent
            # reader (an overflow connection is opened, set up and closed per use: ~150 us)
            kwargs["pool_size"], kwargs["max_overflow"] = 128, 128
        else:
            kwargs["pool_size"], kwargs["max_overflow"] = 20, 30
        engine = create_async_engine(async_url, **kwargs)
        if async_url.startswith("sqlite"):
            _sqlite_setup(engine)
        install_tenancy(engine)
        return cls(engine, schema=schema)

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        if self.schema is not None:
            async with self.engine.begin() as conn:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
        with cross_tenant():  # migrations move every organisation's rows
            async with self.transaction() as conn:
                await conn.run_sync(_upgrade)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One atomic unit: committed on normal exit, rolled back on any exception.

        Callbacks registered with :func:`after_commit` run after the commit. Inside
        :meth:`batch` it is the batch's transaction (see there).
        """
        shared = _BATCH.get()
        if shared is not None and shared.store is self:
            async with shared.join(write=True) as conn:
                yield conn
            return
        callbacks: list[Callable[[], None]] = []
        async with contextlib.AsyncExitStack() as stack:
            # take a pooled connection before the writer lock: waiting for the pool while
            # holding the lock would make every other writer wait a loop turn per writer
            conn = await stack.enter_async_context(self.engine.connect())
            if self._lock is not None:
                await stack.enter_async_context(self._lock)
            await stack.enter_async_context(conn.begin())
            conn.info[_AFTER_COMMIT] = callbacks
            try:
                yield conn
            finally:
                conn.info.pop(_AFTER_COMMIT, None)
        for callback in callbacks:
            callback()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction: one consistent snapshot, never waits for a writer.

        SQLite (WAL): a deferred ``BEGIN`` outside the writer lock, so reads run alongside
        the one writer. Writing through this connection is a bug (SQLite refuses it when
        another writer is active). Inside :meth:`batch` it reads the batch's transaction.
        """
        shared = _BATCH.get()
        if shared is not None and shared.store is self:
            async with shared.join(write=False) as conn:
                yield conn
            return
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                await conn.execution_options(**{_READ_ONLY: True})
            async with conn.begin():
                yield conn

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[Batch]:
        """Group commit: every :meth:`transaction` and :meth:`read` this task runs inside the
        block shares ONE write transaction (no per-unit connection, BEGIN, COMMIT, writer lock).

        All or nothing: if any unit raises (a handler's error after it may have written), the
        batch is marked ``failed``, later units raise :class:`BatchFailed` at once, and at the end
        of the block everything is rolled back; the caller then runs the units again one by one
        (``if batch.failed: ...``). Only the task that opened the batch may use it: units of
        other tasks (gather, create_task) raise RuntimeError instead of sharing one connection.
        """
        handle = Batch(self, asyncio.current_task())
        try:
            async with self.transaction() as conn:
                handle.conn = conn
                token = _BATCH.set(handle)
                try:
                    yield handle
                finally:
                    _BATCH.reset(token)
                if handle.failed:
                    raise _RollBack
        except _RollBack:
            pass

    async def ping(self) -> None:
        """One round trip to the database (``/readyz``); raises what the driver raises."""
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        for stop in reversed(self._closers):
            await stop()
        self._closers.clear()
        await self.engine.dispose()


class BatchFailed(Exception):
    """A unit inside :meth:`Store.batch` failed earlier; the batch will be rolled back."""


class _RollBack(Exception):
    pass


class Batch:
    """The handle :meth:`Store.batch` yields; ``failed`` tells the caller to redo the units."""

    def __init__(self, store: Store, owner: asyncio.Task[Any] | None) -> None:
        self.store = store
        self.owner = owner
        self.conn: AsyncConnection | None = None
        self.failed = False
        self.units = 0

    @contextlib.asynccontextmanager
    async def join(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        if asyncio.current_task() is not self.owner:
            raise RuntimeError("a Store.batch() is used by another task than the one that opened it")
        if self.failed:
            raise BatchFailed("an earlier unit of this batch failed")
        assert self.conn is not None
        self.units += 1
        try:
            yield self.conn
        except BaseException:
            if write:
                self.failed = True  # this unit may have written part of its changes
            raise


_BATCH: contextvars.ContextVar[Batch | None] = contextvars.ContextVar("meshota_store_batch", default=None)


def _upgrade(conn: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def _sqlite_setup(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # take transaction control away from the driver so BEGIN IMMEDIATE is ours
        # (connect_inline already opens the connection that way)
        if dbapi_conn.isolation_level is not None:
            dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        # WAL + NORMAL: no corruption on crash, commits skip the fsync (power loss may lose the last ones)
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        driver = conn.connection.driver_connection
        if isinstance(driver, InlineConnection):
            # straight to sqlite3: SQLAlchemy's execution context costs ~40 us per transaction
            driver.begin(immediate=not read_only)
        else:
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
