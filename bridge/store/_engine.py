"""Opening the database, running Alembic migrations, and the one transaction helper."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = ["Store", "StoreConfigError", "normalize_url"]

_MIGRATIONS = Path(__file__).with_name("migrations")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


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

    @classmethod
    def open(cls, url: str, *, schema: str | None = None) -> Store:
        async_url = normalize_url(url)
        kwargs: dict[str, Any] = {}
        if schema is not None:
            if not _SCHEMA_NAME.match(schema):
                raise StoreConfigError(f"bad schema name {schema!r}")
            if async_url.startswith("sqlite"):
                raise StoreConfigError("a schema is only supported on PostgreSQL")
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
        if async_url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_size"] = 10
        engine = create_async_engine(async_url, **kwargs)
        if async_url.startswith("sqlite"):
            _sqlite_setup(engine)
        return cls(engine, schema=schema)

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        if self.schema is not None:
            async with self.engine.begin() as conn:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
        async with self.transaction() as conn:
            await conn.run_sync(_upgrade)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One atomic unit: committed on normal exit, rolled back on any exception."""
        if self._lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._lock, self.engine.begin() as conn:
            yield conn

    async def close(self) -> None:
        await self.engine.dispose()


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
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        # WAL + NORMAL: no corruption on crash, commits skip the fsync (power loss may lose the last ones)
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
