"""What an installation sends, per level, and the exact bytes of the request.

Levels: ``off`` (nothing), ``minimal`` (window, age bucket, meshota version, managed nodes as a
power-of-ten bucket, database kind), ``full`` (minimal plus bucketed node counts by device type
and by radio profile, at most :data:`MAX_KINDS` of each, the rest as ``other``). No identifier,
no cookie, no time finer than the week. The body is canonical JSON (sorted keys, no spaces), so
the same facts in the same week give the same bytes; :func:`request_bytes` is the HTTP/1.1
request as h11 (which httpx writes with) serialises it: ``meshota telemetry show`` prints it and
the sender sends that request.
"""

from __future__ import annotations

import json
from typing import Any

import h11
import httpx

from wire.countme import count_bucket

__all__ = [
    "HEADERS",
    "LEVELS",
    "MAX_BODY",
    "MAX_KINDS",
    "build_report",
    "encode_body",
    "make_request",
    "request_bytes",
]

LEVELS = ("off", "minimal", "full")
MAX_KINDS = 16
MAX_BODY = 4096
SCHEMA = 1
# every header the request carries besides Host and Content-Length: httpx's defaults replaced,
# so nothing (a library version in User-Agent, say) changes the bytes behind the owner's back
HEADERS = {
    "Accept": "application/json",
    "Accept-Encoding": "identity",
    "Connection": "close",
    "User-Agent": "meshota-telemetry",
    "Content-Type": "application/json",
}


def _bucketed(counts: dict[str, int]) -> dict[str, str]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[:MAX_KINDS])
    rest = sum(n for _, n in ranked[MAX_KINDS:])
    if rest:
        kept["other"] = kept.get("other", 0) + rest
    return {name: count_bucket(n) for name, n in sorted(kept.items()) if n > 0}


def build_report(level: str, window: int, age: int, version: str, facts: dict[str, Any]) -> dict[str, Any]:
    """The report of ``level`` (``minimal`` or ``full``) from ``facts``
    (:func:`bridge.api.installation_facts`)."""
    if level not in ("minimal", "full"):
        raise ValueError(f"no report at level {level!r}")
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "level": level,
        "window": window,
        "age": age,
        "version": version,
        "nodes": count_bucket(int(facts.get("nodes", 0))),
        "database": str(facts.get("database", "sqlite")),
    }
    if level == "full":
        report["device_types"] = _bucketed(dict(facts.get("device_types", {})))
        report["radios"] = _bucketed(dict(facts.get("radios", {})))
    return report


def encode_body(report: dict[str, Any]) -> bytes:
    return json.dumps(report, sort_keys=True, separators=(",", ":")).encode()


def make_request(client: httpx.Client | httpx.AsyncClient, url: str, body: bytes) -> httpx.Request:
    """The request the sender sends (``client`` built with ``headers=HEADERS``)."""
    return client.build_request("POST", url, content=body, headers=HEADERS)


def request_bytes(request: httpx.Request) -> bytes:
    """``request`` as it goes on the wire to the collector (h11, like httpx's transport).

    Through an HTTP proxy to an ``http://`` URL the request line carries the absolute URL
    instead of the path; to an ``https://`` URL the proxy only tunnels these bytes.
    """
    conn = h11.Connection(our_role=h11.CLIENT)
    head = conn.send(
        h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw)
    )
    data = conn.send(h11.Data(data=request.content))
    end = conn.send(h11.EndOfMessage())
    return (head or b"") + (data or b"") + (end or b"")
