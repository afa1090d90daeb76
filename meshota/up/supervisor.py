"""Run commands as supervised child processes: start in order, wait until ready, restart with
backoff when one dies, stop in order.

Each child runs in its own process group (a terminal's Ctrl-C reaches only ``meshota up``, which
then stops the children in order) and gets SIGTERM if ``meshota up`` itself dies (Linux
``PR_SET_PDEATHSIG``), so no child outlives it. Its stdout and stderr are copied, line by line
with a ``[name]`` prefix, to ``meshota up``'s stdout. A child that exits while the stack runs is
logged (which, exit status, restart count) and restarted after a delay that doubles for every
death within :data:`STABLE_AFTER` seconds of its start, up to a cap.

This module imports only the standard library: the supervisor must cost little next to the
children it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["Child", "ChildSpec", "Supervisor", "http_ready", "tcp_ready"]

STABLE_AFTER = 10.0  # a child that ran this long is healthy again: the backoff starts over
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def tcp_ready(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def http_ready(host: str, port: int, path: str = "/readyz") -> bool:
    """GET ``path`` answered 200 (a few lines of HTTP/1.0; no client library in the supervisor)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (TimeoutError, OSError):
        return False
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readline(), 5.0)
        return status.split(b" ")[1:2] == [b"200"]
    except (TimeoutError, OSError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[Child], Awaitable[bool]] | None = None  # polled until True
    ready_line: str | None = None  # or: ready once a line of output starts with this


@dataclass
class Child:
    spec: ChildSpec
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started: float = 0.0
    line_seen: asyncio.Event = field(default_factory=asyncio.Event)
    pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


class Supervisor:
    def __init__(
        self,
        *,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        stop_timeout: float = 10.0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []
        self.stopping = False
        self._watchers: list[asyncio.Task[None]] = []
        self.say = say or (lambda text: print(f"meshota up: {text}", flush=True))

    async def _spawn(self, child: Child) -> None:
        spec = child.spec
        child.line_seen = asyncio.Event()
        child.proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **spec.env},
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        child.started = time.monotonic()
        child.pump = asyncio.create_task(self._copy_output(child, child.proc))

    async def _copy_output(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        prefix = f"[{child.spec.name}] "
        while True:
            try:
                line = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line over 64 KiB: skip it
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            if child.spec.ready_line is not None and text.startswith(child.spec.ready_line):
                child.line_seen.set()
            sys.stdout.write(prefix + text + "\n")
            sys.stdout.flush()

    async def wait_ready(self, child: Child, deadline: float) -> bool:
        """True once ``child`` is ready; False if it died first or ``deadline`` passed."""
        while time.monotonic() < deadline:
            proc = child.proc
            if proc is None or proc.returncode is not None:
                return False
            if child.spec.ready_line is not None:
                if child.line_seen.is_set():
                    return True
            elif child.spec.ready is None or await child.spec.ready(child):
                return True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(child.line_seen.wait(), 0.05)
        return False

    async def start(self, spec: ChildSpec, deadline: float) -> Child:
        """Start ``spec`` and wait until ready; RuntimeError if it exits or times out first."""
        child = Child(spec)
        self.children.append(child)
        await self._spawn(child)
        if not await self.wait_ready(child, deadline):
            assert child.proc is not None
            if child.proc.returncode is None:
                raise RuntimeError(f"{spec.name} was not ready in time")
            if child.pump is not None:
                await child.pump
            raise RuntimeError(f"{spec.name} exited at start ({describe_exit(child.proc.returncode)})")
        self._watchers.append(asyncio.create_task(self._watch(child), name=f"watch-{spec.name}"))
        return child

    async def _watch(self, child: Child) -> None:
        delay = self.backoff
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            if child.pump is not None:
                await child.pump
            if self.stopping:
                return
            ran = time.monotonic() - child.started
            if ran >= STABLE_AFTER:
                delay = self.backoff
            child.restarts += 1
            self.say(
                f"{child.spec.name} (pid {child.proc.pid}) {describe_exit(code)} after {ran:.1f} s; "
                f"restart {child.restarts} in {delay:.1f} s"
            )
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, self.backoff), self.backoff_max)
            if self.stopping:
                return
            try:
                await self._spawn(child)
            except OSError as exc:
                self.say(f"{child.spec.name}: cannot start: {exc}")
                continue
            if await self.wait_ready(child, time.monotonic() + 60):
                self.say(f"{child.spec.name} restarted (pid {child.pid}), ready")

    async def restart(self, name: str) -> None:
        """Stop ``name`` gracefully; its watcher starts it again (no backoff)."""
        for child in self.children:
            if child.spec.name == name and child.proc is not None:
                child.started = time.monotonic() - STABLE_AFTER  # a planned restart: no backoff
                await self._stop_child(child)

    def signal_child(self, name: str, sig: int) -> None:
        for child in self.children:
            if child.spec.name == name and child.proc is not None and child.proc.returncode is None:
                child.proc.send_signal(sig)

    async def _stop_child(self, child: Child) -> None:
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.stop_timeout)
        except TimeoutError:
            self.say(f"{child.spec.name} did not stop within {self.stop_timeout:g} s: SIGKILL")
            proc.kill()
            await proc.wait()

    async def stop_all(self, order: list[str]) -> None:
        """SIGTERM the children in ``order`` (others after), one at a time, each with the timeout."""
        self.stopping = True
        for task in self._watchers:
            task.cancel()
        ranked = sorted(
            self.children, key=lambda c: order.index(c.spec.name) if c.spec.name in order else len(order)
        )
        for child in ranked:
            await self._stop_child(child)
            code = child.proc.returncode if child.proc is not None else None
            if code is not None:
                self.say(f"{child.spec.name} stopped ({describe_exit(code)})")
            if child.pump is not None:
                with contextlib.suppress(Exception):
                    await child.pump
