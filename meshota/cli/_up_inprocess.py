"""``meshota server`` inside ``meshota up``'s own process, supervised like a child.

``meshota up`` costs no more than its parts because it has no process of its own: the process
that supervises mosquitto and the gateway also serves the HTTP API and the MQTT bridge (an extra
supervisor interpreter cost ~13 MB of RSS, 10 % of the stack; benchmarks/up_footprint.py).

:class:`InProcessServer` runs the server (the same options, parsed and checked by
:func:`meshota.cli.server.server_config`) in a thread and looks like a ``subprocess.Popen`` to the
supervisor: ``poll()``/``returncode``, ``send_signal(SIGTERM)`` (the graceful stop a real
``meshota server`` does on SIGTERM: requests in flight answered, then the MQTT bridge drains),
``kill()``, ``wait()``. So the supervisor's rules hold for it as for a child: if it stops on its
own (a crash of the server: an exception out of uvicorn, a failed start) it is logged and started
again with backoff, SIGHUP restarts it (a new server reads the PSK file again), SIGTERM stops it
in order: after the gateway, before mosquitto. What it cannot survive is the death of the
process itself (SIGKILL, the OOM killer): then the children get SIGTERM (PR_SET_PDEATHSIG) and
the whole stack is gone, to be restarted by what runs ``meshota up`` (systemd, the container's
restart policy; see docs/design.md).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["InProcessServer"]

_KILL_WAIT = 10.0  # after kill(): seconds to wait for the server's thread before giving up on it


class InProcessServer:
    """``meshota server ARGV`` in a thread of this process, with ``environ`` as its environment
    (where ``--broker-password-env`` is read: nothing is put into ``os.environ``, which the other
    children inherit)."""

    stdout = None  # its log goes straight to this process's stderr, with a "[server]" prefix

    def __init__(self, argv: Sequence[str], environ: Mapping[str, str]) -> None:
        self.pid = os.getpid()
        self.returncode: int | None = None
        self._server: Any = None
        self._stop: int | None = None  # a stop asked for before the server was built
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, args=(list(argv), {**os.environ, **environ}), name="meshota-server", daemon=True
        )
        self._thread.start()

    def _run(self, argv: list[str], environ: dict[str, str]) -> None:
        # built in this thread, not the caller's: the server's imports and objects then share
        # one malloc arena with what it allocates while serving, as in a `meshota server` process
        code = 1
        try:
            from bridge.http import uvicorn_server
            from meshota.cli.server import server_config

            config, code = server_config(argv, environ)
            if config is not None:
                _prefix_log_lines()
                with self._lock:
                    self._server = uvicorn_server(config)
                    stop = self._stop
                if stop is not None:
                    self.send_signal(stop)
                self._server.run()
                code = 0 if self._server.started else 1
        except BaseException as exc:  # uvicorn's sys.exit(1) on a failed start, argparse's exit 2
            if not isinstance(exc, SystemExit):
                traceback.print_exc()
            code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1
        self.returncode = code

    def poll(self) -> int | None:
        if self._thread.is_alive():
            return None
        if self.returncode is None:  # the thread ended without setting it
            self.returncode = 1
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """SIGTERM/SIGINT: stop gracefully; SIGKILL: stop without waiting for connections.
        Other signals mean nothing to it (SIGHUP is handled by a restart, see up_runner.py)."""
        with self._lock:
            if self._server is None:
                if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
                    self._stop = sig
                return
        if self.poll() is not None:
            return
        if sig == signal.SIGKILL:
            self._server.force_exit = True
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            self._server.should_exit = True

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        forced = self._server is not None and self._server.force_exit
        self._thread.join(_KILL_WAIT if forced and timeout is None else timeout)
        if self._thread.is_alive():
            if not forced:
                import subprocess

                raise subprocess.TimeoutExpired("meshota server (in-process)", timeout or 0.0)
            self.returncode = -signal.SIGKILL  # given up on: the process's exit ends it
            return self.returncode
        code = self.poll()
        assert code is not None
        return code


def _prefix_log_lines() -> None:
    """The server's log lines carry ``[server]`` like the children's lines do (the handler is
    the one ``server_config``'s ``logging.basicConfig`` installed, with the level it set)."""
    prefixed = logging.Formatter("[server] %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(prefixed)
