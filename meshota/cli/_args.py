"""The one home of command-line parsing for every ``meshota`` command: addresses and errors.

Every usage or configuration error a command reports is one line on stderr,
``meshota <cmd>: error: <message naming the bad value>``, and exit status 2 — argparse's own
errors included (:class:`CliParser`), so a script sees the same shape from every command.

Addresses (:func:`parse_address` and its three spellings) are parsed by :mod:`meshota.addresses`,
re-exported here for the commands; ``meshota up``'s configuration (meshota/up/) uses the same
functions without importing the command-line package.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from meshota.addresses import (
    ConfigError,
    format_address,
    parse_address,
    parse_broker_url,
    parse_hostport,
    parse_udp_url,
)

__all__ = [
    "USAGE_EXIT",
    "CliParser",
    "ConfigError",
    "format_address",
    "parse_address",
    "parse_broker_url",
    "parse_hostport",
    "parse_udp_url",
    "usage_error",
]

USAGE_EXIT = 2


def _one_line(message: str) -> str:
    return " ".join(message.split())


def usage_error(prog: str, message: str) -> int:
    """Print ``<prog>: error: <message>`` as one line on stderr; returns the exit status 2."""
    print(f"{prog}: error: {_one_line(message)}", file=sys.stderr)
    return USAGE_EXIT


class CliParser(argparse.ArgumentParser):
    """The ArgumentParser of every ``meshota`` command (and its subcommands): errors in the
    one-line style of :func:`usage_error`, exit status 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, message)
        raise SystemExit(USAGE_EXIT)
