"""Remote diagnostics on a node: a bounded set (ping, logs, reboot), sans-I/O.

The MQTT-SN counterpart of remote access (docs/remote_access.md): no shell on a microcontroller,
three commands instead, under the same rules — OFF unless the owner allows it on the device
(``enabled``, default False: the device-side setting) AND the owner granted remote access on the
server (the server hands out a command only while that grant is in force).

Through the device API, whatever carries it (HTTP or MQTT-SN): the node polls
``GET /api/meshota/v1/devices/diagnostics/next`` (200 ``{"id", "command", "args"}`` or 204) and
answers ``PUT /api/meshota/v1/devices/diagnostics/{id}`` with ``{"status": "done"|"refused",
"result": {...}}``. A reboot is requested of the driver (:class:`RebootRequested`) only after the
server took the answer. Logs come from a bounded ring (lines and bytes), so the answer is small.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMMANDS",
    "MAX_RESULT",
    "NEXT_PATH",
    "DiagRequest",
    "Diagnostics",
    "LogRing",
    "RebootRequested",
    "result_path",
]

NEXT_PATH = "/api/meshota/v1/devices/diagnostics/next"
COMMANDS = ("ping", "logs", "reboot")
MAX_RESULT = 4096  # bytes of one answer's JSON body
_MAX_LINE = 160


def result_path(command_id: str) -> str:
    return f"/api/meshota/v1/devices/diagnostics/{command_id}"


@dataclass(frozen=True, slots=True)
class DiagRequest:
    """A device-API call for the driver to make (``body`` None: no body)."""

    method: str
    path: str
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class RebootRequested:
    """The server took the answer to a reboot command: the driver reboots the node now."""

    command_id: str


class LogRing:
    """The last ``max_lines`` log lines (each cut to 160 characters), oldest first."""

    def __init__(self, max_lines: int = 64) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)

    def add(self, now: float, message: str) -> None:
        self._lines.append(f"{now:.3f} {message}"[:_MAX_LINE])

    def last(self, n: int) -> list[str]:
        return list(self._lines)[-n:] if n > 0 else []


class Diagnostics:
    def __init__(
        self,
        *,
        enabled: bool = False,
        allowed: Iterable[str] = COMMANDS,
        boot_ts: float = 0.0,
        log: LogRing | None = None,
    ) -> None:
        self.enabled = enabled  # the device-side switch; off by default
        self.allowed = frozenset(allowed) & frozenset(COMMANDS)
        self.boot_ts = boot_ts
        self.log = log if log is not None else LogRing()
        self.answered = 0
        self._reboot_pending: str | None = None

    def poll(self) -> DiagRequest:
        return DiagRequest("GET", NEXT_PATH)

    def on_next(self, status: int, body: bytes, now: float) -> DiagRequest | None:
        """The server's answer to :meth:`poll`: the answer to send, or None (nothing to do, or
        not a command this node can read: dropped, the server expires it)."""
        if status != 200:
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
            return None
        cid, command = doc["id"][:64], doc.get("command")
        raw_args = doc.get("args")
        args: dict[str, Any] = raw_args if isinstance(raw_args, dict) else {}
        if not self.enabled:
            return self._answer(cid, "refused", {"reason": "remote diagnostics are off on this device"})
        if not isinstance(command, str) or command not in self.allowed:
            return self._answer(cid, "refused", {"reason": f"command {str(command)[:16]!r} not allowed here"})
        if command == "ping":
            return self._answer(cid, "done", {"uptime": round(now - self.boot_ts, 3)})
        if command == "logs":
            lines = args.get("lines", 20)
            n = lines if isinstance(lines, int) and not isinstance(lines, bool) else 20
            return self._answer(cid, "done", {"lines": self._fit(self.log.last(max(0, min(n, 100))))})
        self._reboot_pending = cid
        return self._answer(cid, "done", {"rebooting": True})

    def on_answered(self, command_id: str, status: int) -> list[RebootRequested]:
        """The server's status for the answer to ``command_id``."""
        if status // 100 != 2:
            return []
        self.answered += 1
        if self._reboot_pending == command_id:
            self._reboot_pending = None
            return [RebootRequested(command_id)]
        return []

    def _answer(self, cid: str, status: str, result: dict[str, Any]) -> DiagRequest:
        body = json.dumps({"status": status, "result": result}, separators=(",", ":")).encode()
        return DiagRequest("PUT", result_path(cid), body)

    @staticmethod
    def _fit(lines: list[str]) -> list[str]:
        """The newest lines whose answer stays under :data:`MAX_RESULT` bytes."""
        budget, out = MAX_RESULT - 64, []
        for line in reversed(lines):
            cost = len(json.dumps(line)) + 1
            if cost > budget:
                break
            budget -= cost
            out.append(line)
        return out[::-1]
