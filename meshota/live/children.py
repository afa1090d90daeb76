"""Child processes of the live demo: started with their output in a log file, ready when a line
appears there, stopped with SIGTERM (SIGKILL after a grace period)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Child", "ChildError", "start_child"]


class ChildError(RuntimeError):
    """A child process exited or did not get ready in time (the message names it and its log)."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 5) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the child's log, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            found = rx.search(text)
            if found is not None:
                return found
            if self.proc.poll() is not None:
                raise ChildError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise ChildError(f"{self.name} not ready within {timeout:g} s (log {self.log})")
            time.sleep(0.05)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ChildError(f"{self.name} died with {self.proc.returncode}: {self.log_tail()}")

    def stop(self, grace: float = 5.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_child(name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Child:
    """``python -m meshota ARGV`` (this interpreter) with stdout and stderr in ``log``; secrets go
    in ``env``, never in ``argv``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshota", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    return Child(name, proc, log)
