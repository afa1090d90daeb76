"""Run commands as supervised child processes: start in order, wait until ready, restart with
backoff when one dies, stop in order.

Each child runs in its own session (a terminal's Ctrl-C reaches only ``meshota up``, which then
stops the children in order) and gets SIGTERM if ``meshota up`` itself dies (Linux
``PR_SET_PDEATHSIG``, set by util-linux ``setpriv`` when installed), so no child outlives it.
Its stdout and stderr are copied, line by line with a ``[name]`` prefix, to ``meshota up``'s
stdout. A child that exits while the stack runs is logged (which, exit status, restart count)
and restarted after a delay that doubles for every death within :data:`STABLE_AFTER` seconds of
its start, up to a cap.

One thread, one ``selectors`` loop, the standard library only and no asyncio: a plain loop that
can share its process with other work (``meshota up`` runs the server in the same process, see
meshota/cli/_up_inprocess.py; a child may be such a component, see :class:`ChildSpec`). Signals are
turned into flags by their handlers and wake the loop through ``signal.set_wakeup_fd``.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~0.5 MB)

if TYPE_CHECKING:  # imported only for the type checker
    from collections.abc import Callable
    from typing import Any

__all__ = ["Child", "ChildSpec", "Supervisor", "describe_exit", "http_ready", "tcp_ready"]

STABLE_AFTER = 10.0  # a child that ran this long is healthy again: the backoff starts over
_PR_SET_PDEATHSIG = 1
_MAX_LINE = 64 * 1024


_prctl: Any = None


def _setpriv() -> str | None:
    """util-linux ``setpriv`` (Debian: essential), which sets PR_SET_PDEATHSIG and execs the
    command: no Python code runs between fork and exec (the process runs other threads: the
    in-process server) and no ctypes is loaded. Without it, a ``preexec_fn`` does the prctl."""
    for path in ("/usr/bin/setpriv", "/bin/setpriv"):
        if os.access(path, os.X_OK):
            return path
    return None


_SETPRIV = _setpriv() if sys.platform == "linux" else None


def _die_with_parent() -> None:  # runs in the child between fork and exec (no setpriv)
    # the function was looked up in the parent (_spawn): the child does as little as it can
    with contextlib.suppress(Exception):
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def tcp_ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ready(host: str, port: int, path: str = "/readyz") -> bool:
    """GET ``path`` answered 200 (a few lines of HTTP/1.0; no client library in the supervisor)."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            status = s.makefile("rb").readline(200)
    except OSError:
        return False
    return status.split(b" ")[1:2] == [b"200"]


class ChildSpec:
    """What to run. ``ready``: polled until True; or ``ready_line``: ready once a line of its
    output starts with this. ``start``: instead of running ``argv``, call this for something
    that behaves like a ``subprocess.Popen`` (``poll``, ``returncode``, ``pid``, ``send_signal``,
    ``kill``, ``wait``; ``stdout`` None: nothing to copy), e.g. a component of this process
    (meshota/cli/_up_inprocess.py)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        ready: Callable[[], bool] | None = None,
        ready_line: str | None = None,
        start: Callable[[], Any] | None = None,
    ) -> None:
        self.name = name
        self.start = start
        self.argv = argv
        self.env = env or {}
        self.ready = ready
        self.ready_line = ready_line


class Child:
    def __init__(self, spec: ChildSpec, delay: float = 0.0) -> None:
        self.spec = spec
        self.proc: Any = None  # a subprocess.Popen, or what ChildSpec.start returned
        self.restarts = 0
        self.started = 0.0
        self.ready = False
        self.restart_at: float | None = None  # dead, to be started again then
        self.delay = delay
        self.buffer = b""
        self.announce = False  # restarted after a death: say so once it is ready

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


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
        self.say = say or (lambda text: print(f"meshota up: {text}", flush=True))
        self._sel = selectors.DefaultSelector()
        self._readers: dict[int, Child] = {}

    # -- output and exits -----------------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        global _prctl
        spec = child.spec
        child.started = time.monotonic()
        child.ready = False
        child.restart_at = None
        child.buffer = b""
        if spec.start is not None:
            child.proc = spec.start()
            return
        argv = spec.argv
        if _SETPRIV is not None:
            argv = [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]
        elif _prctl is None and sys.platform == "linux":
            import ctypes

            with contextlib.suppress(Exception):
                _prctl = ctypes.CDLL(None, use_errno=True).prctl
        child.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **spec.env},
            start_new_session=True,
            preexec_fn=_die_with_parent if _SETPRIV is None and _prctl is not None else None,
        )
        assert child.proc.stdout is not None
        fd = child.proc.stdout.fileno()
        os.set_blocking(fd, False)
        self._sel.register(fd, selectors.EVENT_READ)
        self._readers[fd] = child

    def _line(self, child: Child, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip()
        if child.spec.ready_line is not None and text.startswith(child.spec.ready_line):
            child.ready = True
        sys.stdout.write(f"[{child.spec.name}] {text}\n")
        sys.stdout.flush()

    def _read(self, fd: int) -> None:
        child = self._readers[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._sel.unregister(fd)
            del self._readers[fd]
            if child.buffer:
                self._line(child, child.buffer)
                child.buffer = b""
            if child.proc is not None and child.proc.stdout is not None:
                child.proc.stdout.close()
            return
        lines = (child.buffer + data).split(b"\n")
        child.buffer = lines.pop()[-_MAX_LINE:]
        for raw in lines:
            self._line(child, raw)

    def pump(self, timeout: float) -> None:
        """Copy what the children wrote, for up to ``timeout`` seconds (less when woken)."""
        if not self._sel.get_map():
            time.sleep(max(0.0, timeout))
            return
        for key, _ in self._sel.select(max(0.0, timeout)):
            if key.fd in self._readers:
                self._read(key.fd)
            else:
                with contextlib.suppress(OSError):
                    os.read(key.fd, 512)  # a signal's wake-up byte

    def watch_fd(self, fd: int) -> None:
        """Also wake the loop when ``fd`` is readable (the signal wake-up pipe)."""
        self._sel.register(fd, selectors.EVENT_READ)

    def _drain_output(self, child: Child, timeout: float = 1.0) -> None:
        """After an exit: the rest of what it wrote, before its exit is logged."""
        deadline = time.monotonic() + timeout
        while any(c is child for c in self._readers.values()) and time.monotonic() < deadline:
            self.pump(0.05)

    # -- start, watch, restart -------------------------------------------------------------------

    def start(self, spec: ChildSpec) -> Child:
        child = Child(spec, delay=self.backoff)
        self.children.append(child)
        self._spawn(child)
        return child

    def check_ready(self, child: Child) -> bool:
        if not child.ready and child.running and child.spec.ready_line is None:
            child.ready = child.spec.ready is None or child.spec.ready()
        return child.ready

    def wait_ready(self, children: list[Child], deadline: float) -> None:
        """Until every child is ready; RuntimeError naming the first that exited or timed out."""
        while True:
            for child in children:
                assert child.proc is not None
                if child.proc.poll() is not None:
                    self._drain_output(child)
                    raise RuntimeError(
                        f"{child.spec.name} exited at start ({describe_exit(child.proc.returncode)})"
                    )
            if all(self.check_ready(child) for child in children):
                return
            if time.monotonic() > deadline:
                late = next(c for c in children if not c.ready)
                raise RuntimeError(f"{late.spec.name} was not ready in time")
            self.pump(0.05)

    def tend(self) -> None:
        """Log and schedule the restart of children that died; restart those whose time came;
        log a restarted child once it is ready again."""
        now = time.monotonic()
        for child in self.children:
            proc = child.proc
            if proc is None:
                continue
            if child.restart_at is None and proc.poll() is not None:
                self._drain_output(child)
                ran = now - child.started
                if ran >= STABLE_AFTER:
                    child.delay = self.backoff
                child.restarts += 1
                self.say(
                    f"{child.spec.name} (pid {proc.pid}) {describe_exit(proc.returncode)} after {ran:.1f} s; "
                    f"restart {child.restarts} in {child.delay:.1f} s"
                )
                child.restart_at = now + child.delay
                child.delay = min(max(child.delay * 2, self.backoff), self.backoff_max)
            elif child.restart_at is not None and now >= child.restart_at:
                try:
                    self._spawn(child)
                except OSError as exc:
                    self.say(f"{child.spec.name}: cannot start: {exc}; retry in {child.delay:.1f} s")
                    child.restart_at = now + child.delay
                    continue
                child.announce = True
            elif child.announce and proc.poll() is None and self.check_ready(child):
                child.announce = False
                self.say(f"{child.spec.name} restarted (pid {proc.pid}), ready")

    def restart(self, name: str) -> None:
        """Stop ``name`` gracefully and start it again at once (a planned restart: no backoff)."""
        for child in self.children:
            if child.spec.name == name and child.running:
                self._stop_child(child)
                child.restarts += 1
                self.say(f"{name} stopped for a restart on request (restart {child.restarts})")
                self._spawn(child)
                child.announce = True

    def signal_child(self, name: str, sig: int) -> None:
        for child in self.children:
            if child.spec.name == name and child.running:
                assert child.proc is not None
                child.proc.send_signal(sig)

    # -- stop --------------------------------------------------------------------------------------

    def _stop_child(self, child: Child) -> None:
        proc = child.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while proc.poll() is None and time.monotonic() < deadline:
            self.pump(0.05)
        if proc.poll() is None:
            self.say(f"{child.spec.name} did not stop within {self.stop_timeout:g} s: SIGKILL")
            proc.kill()
            proc.wait()
        self._drain_output(child)

    def stop_all(self, order: list[str]) -> None:
        """SIGTERM the children in ``order`` (others after), one at a time, each with the timeout."""
        self.stopping = True
        ranked = sorted(
            self.children, key=lambda c: order.index(c.spec.name) if c.spec.name in order else len(order)
        )
        for child in ranked:
            if child.proc is None or child.restart_at is not None:
                continue  # dead and waiting for its restart: nothing to stop
            self._stop_child(child)
            self.say(f"{child.spec.name} stopped ({describe_exit(child.proc.returncode)})")
