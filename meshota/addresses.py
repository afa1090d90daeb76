"""Addresses as every ``meshota`` command spells them, parsed in one place (the command lines in
meshota/cli/ through :mod:`meshota.cli._args`, ``meshota up``'s TOML keys in meshota/up/):

    HOST:PORT            listen/bind addresses (``--udp``, ``--dtls``, ``--http``); port 0 = any
    [V6ADDR]:PORT        IPv6 always in brackets (an unbracketed ``::1:5`` is ambiguous, refused)
    mqtt://HOST[:PORT]   ``--broker``; bare ``HOST:PORT`` too; port 1883 when omitted
    udp://HOST:PORT      ``meshota relay``'s ``--gateway`` and ``--listen``

Libraries below ``meshota`` take parsed ``(host, port)`` values; strings are parsed only here.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "ConfigError",
    "format_address",
    "parse_address",
    "parse_broker_url",
    "parse_hostport",
    "parse_udp_url",
]

MQTT_PORT = 1883

_PORT = re.compile(r"[0-9]{1,5}")
# a host name or IPv4 literal: anything printable but URL delimiters and brackets
_HOST = re.compile(r"[^\s/?#@\[\]:\x00-\x1f\x7f]+")
_DELIMITER = re.compile(r"[\s/?#@]")


class ConfigError(Exception):
    """A bad command-line or configuration value; the message names it (option first)."""


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def parse_address(
    value: str,
    what: str,
    *,
    scheme: str | None = None,
    bare: bool = True,
    default_port: int | None = None,
    port_zero: bool = True,
) -> tuple[str, int]:
    """``[scheme://]HOST:PORT`` or ``[scheme://][V6]:PORT`` -> ``(host, port)``; ConfigError naming
    ``what`` and ``value`` otherwise.

    ``scheme``: the only scheme accepted (``bare``: also without one). ``default_port``: used
    when the port is omitted (else a port is required). ``port_zero``: port 0 allowed (binding).
    """
    form = f"{scheme}://HOST:PORT" if scheme else "HOST:PORT"
    bad = ConfigError(f"{what}: expected {form}, got {value!r}")
    rest = value
    if "://" in value:
        given, _, rest = value.partition("://")
        if scheme is None or given.lower() != scheme:
            raise bad
        if rest.endswith("/"):
            rest = rest[:-1]
    elif scheme is not None and not bare:
        raise bad
    if _DELIMITER.search(rest):  # a path, query, user info or blank: not an address
        raise bad
    port_text: str | None
    if rest.startswith("["):
        host, close, after = rest[1:].partition("]")
        if not close:
            raise bad
        if not _is_ipv6(host):
            raise ConfigError(f"{what}: {host!r} in {value!r} is not an IPv6 address")
        if after and not after.startswith(":"):
            raise bad
        port_text = after[1:] if after else None
    else:
        host, sep, port_text = rest.partition(":")
        if ":" in port_text:
            if _is_ipv6(rest) or _is_ipv6(rest.rpartition(":")[0]):
                raise ConfigError(f"{what}: IPv6 address in {value!r} needs brackets: [ADDRESS]:PORT")
            raise bad
        if not _HOST.fullmatch(host):
            raise bad
        if not sep:
            port_text = None
    if port_text is None:
        if default_port is None:
            raise bad
        return host, default_port
    if not _PORT.fullmatch(port_text):
        raise ConfigError(f"{what}: port {port_text!r} in {value!r} is not a number")
    port = int(port_text)
    low = 0 if port_zero else 1
    if not low <= port <= 65535:
        raise ConfigError(f"{what}: port {port} in {value!r} is out of range ({low}..65535)")
    return host, port


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    """A listen address: ``HOST:PORT`` or ``[V6]:PORT``, port 0..65535 (0: any free port)."""
    return parse_address(value, what)


def parse_broker_url(value: str, what: str = "--broker") -> tuple[str, int]:
    """An MQTT broker: ``mqtt://HOST[:PORT]`` (port 1883 when omitted) or ``HOST:PORT``."""
    return parse_address(value, what, scheme="mqtt", default_port=MQTT_PORT, port_zero=False)


def parse_udp_url(value: str, what: str) -> tuple[str, int]:
    """``udp://HOST:PORT`` (IPv6 in brackets), the relay's spelling."""
    return parse_address(value, what, scheme="udp", bare=False)


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_hostport`: IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
