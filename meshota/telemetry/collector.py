"""``meshota collector``: receives installation reports, keeps weekly totals only, publishes them.

A report (``POST /api/v1/report``, at most 4 KiB of JSON, meshota/telemetry/report.py) is checked
field by field against the schema — known keys only, labels from a small alphabet, counts as
buckets — and turned into +1 on a few cells: ``installations`` (window, age, version, nodes,
database), and at level full ``device_types`` (type, nodes bucket) and ``radios``. The report
itself is not kept, nor the sender's address: the store holds ``(window, table, fields) -> count``
and nothing else, and no log line names a peer (uvicorn's access log is off, proxy headers are
not read). Only the current and the previous window are accepted.

Public: ``GET /stats/weekly.json``, ``/stats/weekly.csv`` and ``/stats/`` (page with the growth
plot), every cell below k = 5 suppressed (bridge/api/_public_stats.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from bridge.api import publish, render_csv, render_json, render_page
from wire.countme import CountRecordError, check_label, window_of

from .report import LEVELS, MAX_BODY, MAX_KINDS, SCHEMA

__all__ = ["CollectorCore", "ReportError", "asgi_app"]

MAX_CELLS_PER_WINDOW = 100_000
_BUCKETS = {"0", "1-9", "10-99", "100-999", "1000-9999", "10000+"}
_MINIMAL_KEYS = {"schema", "level", "window", "age", "version", "nodes", "database"}
_FULL_KEYS = _MINIMAL_KEYS | {"device_types", "radios"}

Fields = tuple[tuple[str, str], ...]


class ReportError(ValueError):
    """A report that does not follow the schema (answered 400, nothing counted)."""


def _kinds(value: object, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_KINDS + 1:
        raise ReportError(f"{what}: expected an object of at most {MAX_KINDS + 1} entries")
    out: dict[str, str] = {}
    for name, bucket in value.items():
        try:
            out[check_label(name, what)] = bucket
        except CountRecordError as exc:
            raise ReportError(str(exc)) from None
        if bucket not in _BUCKETS - {"0"}:
            raise ReportError(f"{what}.{name}: not a count bucket")
    return out


def parse_report(body: bytes, now: float) -> list[tuple[int, str, Fields]]:
    """The cells one report adds 1 to; ReportError if it breaks the schema."""
    if len(body) > MAX_BODY:
        raise ReportError(f"report over {MAX_BODY} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise ReportError("not JSON") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("level") not in LEVELS[1:]:
        raise ReportError(f"expected a schema {SCHEMA} report of level minimal or full")
    expected = _FULL_KEYS if doc["level"] == "full" else _MINIMAL_KEYS
    if set(doc) != expected:
        raise ReportError(f"keys must be exactly {sorted(expected)}")
    window, age = doc["window"], doc["age"]
    current = window_of(now)
    if type(window) is not int or window not in (current, current - 1):
        raise ReportError("window is not this week's or last week's")
    if type(age) is not int or not 1 <= age <= 4:
        raise ReportError("age must be 1..4")
    if doc["nodes"] not in _BUCKETS or doc["database"] not in ("sqlite", "postgresql"):
        raise ReportError("nodes or database out of range")
    try:
        version = check_label(doc["version"], "version")
    except CountRecordError as exc:
        raise ReportError(str(exc)) from None
    main = (("age", str(age)), ("database", doc["database"]), ("nodes", doc["nodes"]), ("version", version))
    cells: list[tuple[int, str, Fields]] = [(window, "installations", main)]
    if doc["level"] == "full":
        for table, key, label in (
            ("device_types", "device_types", "device_type"),
            ("radios", "radios", "radio"),
        ):
            for name, bucket in sorted(_kinds(doc[key], key).items()):
                cells.append((window, table, ((label, name), ("nodes", bucket))))
    return cells


class CollectorCore:
    """Weekly totals in SQLite (``:memory:`` for tests): ``(window, table, fields) -> count``."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS totals (window INTEGER, tbl TEXT, fields TEXT, count INTEGER,"
            " PRIMARY KEY (window, tbl, fields))"
        )

    def ingest(self, body: bytes, now: float) -> None:
        """Count one report (the body only: no address, no arrival time beyond its week)."""
        cells = parse_report(body, now)
        window = cells[0][0]
        (n,) = self.db.execute("SELECT count(*) FROM totals WHERE window = ?", (window,)).fetchone()
        if n + len(cells) > MAX_CELLS_PER_WINDOW:
            raise ReportError("this week's table is full")
        with self.db:
            self.db.execute("BEGIN")
            for w, table, fields in cells:
                self.db.execute(
                    "INSERT INTO totals VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE SET count = count + 1",
                    (w, table, json.dumps(fields)),
                )

    def cells(self) -> dict[tuple[int, str, Fields], int]:
        rows = self.db.execute("SELECT window, tbl, fields, count FROM totals")
        return {(w, t, tuple((a, b) for a, b in json.loads(f))): n for w, t, f, n in rows}

    def public(self) -> dict[str, Any]:
        return publish(self.cells())

    def close(self) -> None:
        self.db.close()


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
LINKS = {"weekly.json": "/stats/weekly.json", "weekly.csv": "/stats/weekly.csv"}


def asgi_app(
    core: CollectorCore, clock: Callable[[], float]
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def respond(send: Send, status: int, body: bytes, ctype: str = "application/json") -> None:
        headers = [(b"content-type", ctype.encode())]
        if status != 204:
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def read_body(receive: Receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # served with lifespan="off"
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/api/v1/report":
            body = await read_body(receive)
            if body is None:
                return await respond(send, 413, b'{"error":"report too large"}')
            try:
                core.ingest(body, clock())
            except ReportError as exc:
                return await respond(send, 400, json.dumps({"error": str(exc)}).encode())
            return await respond(send, 204, b"")
        if method != "GET":
            return await respond(send, 405, b'{"error":"method not allowed"}')
        if path == "/stats/weekly.json":
            return await respond(send, 200, render_json(core.public()))
        if path == "/stats/weekly.csv":
            return await respond(send, 200, render_csv(core.public()), "text/csv; charset=utf-8")
        if path in ("/stats", "/stats/"):
            page = render_page(core.public(), "meshota installations per week", LINKS)
            return await respond(send, 200, page, "text/html; charset=utf-8")
        return await respond(send, 404, b'{"error":"not found"}')

    return app
