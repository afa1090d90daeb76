"""Parsing of command-line addresses. Errors are ConfigError with a one-line message."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["ConfigError", "parse_hostport", "parse_url_hostport"]


class ConfigError(Exception):
    """A bad command-line or configuration value; the CLI prints it and exits 2."""


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    """'H:P', '[v6]:P' → (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{what}: expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what}: port {port_text!r} in {value!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what}: port {port} in {value!r} is out of range")
    return host, port


def parse_url_hostport(value: str, what: str, schemes: tuple[str, ...], default_port: int) -> tuple[str, int]:
    """'mqtt://H:P' (scheme one of ``schemes``) → (host, port)."""
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ConfigError(f"{what}: expected {schemes[0]}://HOST:PORT, got {value!r}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(f"{what}: bad port in {value!r}") from None
    if not parts.hostname:
        raise ConfigError(f"{what}: no host in {value!r}")
    return parts.hostname, port
