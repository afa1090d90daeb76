"""SQLite for the async engine without a thread per connection.

aiosqlite runs every call (cursor, execute, fetch, commit) in a worker thread and hands the
result back through the event loop: a thread switch and a GIL hand-off per call, 10-15 per
request, which the profile showed as most of a device request's time. SQLite calls on a local
WAL file take microseconds, so this shim runs them directly in the event-loop thread, behind
the interface SQLAlchemy's aiosqlite dialect expects of an aiosqlite connection
(``create_async_engine(..., async_creator=...)``).

The cost: a statement that must wait for another *process's* write lock blocks the loop up to
the busy timeout. Writers in this process never wait (Store serializes them with an asyncio
lock and readers in WAL mode never block), so only ``meshota admin`` or a second server on the
same file can cause that, for the length of their (short) transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["InlineConnection", "connect_inline"]

BUSY_TIMEOUT_S = 5.0


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        self._cursor.execute(sql, () if parameters is None else parameters)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        self._cursor.executemany(sql, seq_of_parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """The subset of ``aiosqlite.Connection`` SQLAlchemy uses, run in the caller's thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn  # the dialect checks it is still open

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    def begin(self, *, immediate: bool) -> None:
        """Open a transaction now (``BEGIN IMMEDIATE`` takes the write lock at once)."""
        self._conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()


async def connect_inline(path: str) -> InlineConnection:
    # isolation_level=None: the driver issues no BEGIN of its own; Store's begin hook does
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    return InlineConnection(conn)
