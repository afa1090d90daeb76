"""``meshota up``'s configuration: embedded defaults, a TOML file over them, every key checked.

One table of keys (:data:`KEYS`) is the schema, the defaults and the documentation: README.md
and docs/design.md list the same keys. A file may set any subset; a key not in the table, a
value of the wrong type or an out-of-range value is a :class:`ConfigError` naming the file and
the key (``meshota.toml: unknown key gateway.udpp``). Paths left empty are filled in below the
data directory by :func:`resolve`. Addresses use port 0 for "pick a free loopback port at start"
(tests, benchmarks); the real ones are written to ``DATA/run/addresses.json``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshota.addresses import ConfigError, parse_broker_url, parse_hostport

__all__ = ["KEYS", "TELEMETRY_URL", "Key", "UpConfig", "load_config", "render_toml"]

Check = Callable[[Any], str | None]  # a one-line problem with a valid-typed value, or None


@dataclass(frozen=True, slots=True)
class Key:
    kind: type  # str, int, float, bool or list (of str)
    default: Any
    doc: str
    check: Check | None = None
    secret: bool = False


def _address(value: str) -> str | None:
    if value == "":
        return None
    try:
        parse_hostport(value, "address")
    except ConfigError as exc:
        return str(exc).removeprefix("address: ")
    return None


def _broker(value: str) -> str | None:
    if value == "":
        return None
    try:
        parse_broker_url(value, "url")
    except ConfigError as exc:
        return str(exc).removeprefix("url: ")
    return None


def _db_url(value: str) -> str | None:
    if value == "" or value.startswith(("sqlite", "postgresql")):
        return None
    return f"expected sqlite:///PATH or postgresql://..., got {value!r}"


def _at_least(low: float) -> Check:
    def check(value: Any) -> str | None:
        if not (math.isfinite(value) and value >= low):
            return f"{value!r} must be a finite number >= {low:g}"
        return None

    return check


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"{value!r} is not one of {', '.join(choices)}"

    return check


def _http_url(value: str) -> str | None:
    if not value.startswith(("https://", "http://")) or any(c.isspace() for c in value) or len(value) > 300:
        return f"expected an https:// or http:// URL (at most 300 characters), got {value!r}"
    return None


TELEMETRY_URL = "https://stats.meshota.org/api/v1/report"


def _tenants(value: list[str]) -> str | None:
    from wire.tenant_topics import TenantTopicError, check_tenant

    for tenant in value:
        try:
            check_tenant(tenant)
        except TenantTopicError as exc:
            return str(exc)
    return None


def _user(value: str) -> str | None:
    if not value or any(c.isspace() for c in value):
        return f"{value!r} must be non-empty, without spaces"
    return None


def _name(value: str) -> str | None:
    if value and (len(value) > 40 or not all(c.isalnum() or c in "-_." for c in value)):
        return f"{value!r} must be at most 40 letters, digits, '-', '_' or '.'"
    return None


KEYS: dict[str, dict[str, Key]] = {
    "node": {  # several hosts: docs/deployment.md
        "role": Key(
            str,
            "all",
            "all | gateway | bridge: what this process runs (gateway, bridge: several hosts, "
            "external broker)",
            _one_of("all", "gateway", "bridge"),
        ),
        "name": Key(str, "", "this node in MQTT client ids (empty: the host name; role all: none)", _name),
        "share_group": Key(
            str, "meshota", "role bridge: MQTT 5 shared subscription group the bridge workers split", _name
        ),
        "metrics": Key(
            str, "", "role gateway/all: the gateway's /healthz /readyz /metrics H:P (empty: none)", _address
        ),
    },
    "http": {
        "listen": Key(str, "127.0.0.1:8080", "HTTP API (Mender device and management API) H:P", _address),
        "public_url": Key(str, "", "base URL put into artifact download links (empty: the request's host)"),
        "tls_cert": Key(str, "", "PEM certificate for HTTPS (with tls_key)"),
        "tls_key": Key(str, "", "PEM key of tls_cert"),
        "verify_keys": Key(
            list, [], "vendor public keys (PEM files); when given, unsigned artifacts are refused"
        ),
    },
    "database": {
        "url": Key(str, "", "empty: sqlite:///DATA/meshota.db; or postgresql://USER@HOST/DB", _db_url),
        "schema": Key(str, "", "PostgreSQL only: keep every table in this schema"),
    },
    "artifacts": {"dir": Key(str, "", "artifact files (empty: DATA/artifacts)")},
    "broker": {
        "url": Key(str, "", "external MQTT broker mqtt://H:P (empty: run a private mosquitto)", _broker),
        "listen": Key(str, "127.0.0.1:1883", "the private mosquitto's listener H:P", _address),
        "gateway_user": Key(str, "meshota-gateway", "broker user of the gateway", _user),
        "bridge_user": Key(str, "meshota-bridge", "broker user of the MQTT bridge", _user),
        "gateway_password_file": Key(
            str, "", "external broker: file holding the gateway user's password (private: generated)"
        ),
        "bridge_password_file": Key(
            str, "", "external broker: file holding the bridge user's password (private: generated)"
        ),
        "tenants": Key(
            list,
            [],
            "organisation ids with broker users of their own (private broker; docs/topics.md)",
            _tenants,
        ),
        "tenant_credentials_file": Key(
            str, "", "external broker: the gateway's 'organisation id:password' file (private: generated)"
        ),
    },
    "gateway": {
        "udp": Key(str, "127.0.0.1:1884", "plain MQTT-SN UDP listener H:P (empty: none)", _address),
        "dtls": Key(
            str, "127.0.0.1:1885", "MQTT-SN over DTLS 1.2 listener H:P (direct and relayed)", _address
        ),
        "psk_file": Key(str, "", "DTLS PSK file, lines 'identity,hexkey' (empty: DATA/keys/psk.txt)"),
        "mode": Key(str, "transparent", "transparent | aggregating", _one_of("transparent", "aggregating")),
        "max_dtls_sessions": Key(int, 10_000, "established DTLS sessions at most", _at_least(1)),
        "dtls_idle_timeout": Key(float, 900.0, "close a DTLS session silent this long (s)", _at_least(1)),
    },
    "admin": {
        "username": Key(str, "admin@meshota.local", "the operator user created at first start", _user),
        "password_file": Key(
            str,
            "",
            "file holding its password (else env MESHOTA_ADMIN_PASSWORD, else generated, printed once)",
        ),
    },
    "supervisor": {
        "restart_backoff": Key(float, 0.5, "first restart delay of a child that died (s)", _at_least(0)),
        "restart_backoff_max": Key(float, 30.0, "restart delay cap; doubles per quick death", _at_least(0)),
        "stop_timeout": Key(
            float, 10.0, "seconds each child gets after SIGTERM before SIGKILL", _at_least(0.1)
        ),
        "ready_timeout": Key(float, 60.0, "seconds the whole stack may take to become ready", _at_least(1)),
    },
    "log": {"level": Key(str, "info", "debug | info | warning", _one_of("debug", "info", "warning"))},
    "telemetry": {  # docs/privacy.md
        "level": Key(
            str,
            "off",
            "off | minimal | full: what is sent once a week (see: meshota telemetry show)",
            _one_of("off", "minimal", "full"),
        ),
        "url": Key(str, TELEMETRY_URL, "the collector reports go to", _http_url),
    },
    "public_stats": {
        "enabled": Key(bool, False, "publish this fleet's weekly totals at /stats/fleet (cells < 5 hidden)"),
    },
}


@dataclass(frozen=True, slots=True)
class UpConfig:
    """The effective configuration: ``values[section][key]``, paths already resolved."""

    data: Path
    values: dict[str, dict[str, Any]]

    def get(self, section: str, key: str) -> Any:
        return self.values[section][key]


def _typed(value: Any, kind: type) -> Any:
    """The value as ``kind`` or raise TypeError (ints are fine where floats are)."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise TypeError
    if isinstance(value, bool) and kind is not bool:
        raise TypeError
    if not isinstance(value, kind):
        raise TypeError
    return value


_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list of strings",
}


def _merge(values: dict[str, dict[str, Any]], doc: dict[str, Any], where: str) -> None:
    for section, table in doc.items():
        if section not in KEYS:
            raise ConfigError(f"{where}: unknown key {section}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {section} must be a table ([{section}])")
        for key, raw in table.items():
            spec = KEYS[section].get(key)
            name = f"{section}.{key}"
            if spec is None:
                raise ConfigError(f"{where}: unknown key {name}")
            try:
                value = _typed(raw, spec.kind)
            except TypeError:
                raise ConfigError(f"{where}: {name} must be {_KIND_NAMES[spec.kind]}, got {raw!r}") from None
            problem = spec.check(value) if spec.check is not None else None
            if problem:
                raise ConfigError(f"{where}: {name}: {problem}")
            values[section][key] = value


def load_config(
    path: Path | None, data: Path, overrides: dict[str, dict[str, Any]] | None = None
) -> UpConfig:
    """Defaults, then ``path`` (TOML) over them, then ``overrides`` (command-line options, already
    checked); paths resolved under ``data``."""
    values = {s: {k: spec.default for k, spec in keys.items()} for s, keys in KEYS.items()}
    if path is not None:
        where = path.name
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--config {str(path)!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: not UTF-8 text") from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from None
        _merge(values, doc, where)
        where_checks = where
    else:
        where_checks = "defaults"
    for section, table in (overrides or {}).items():
        values[section].update(table)
    _cross_check(values, where_checks)
    return resolve(UpConfig(data, values))


def _cross_check(values: dict[str, dict[str, Any]], where: str) -> None:
    http, gw, broker = values["http"], values["gateway"], values["broker"]
    if bool(http["tls_cert"]) != bool(http["tls_key"]):
        raise ConfigError(f"{where}: http.tls_cert and http.tls_key go together")
    if not gw["udp"] and not gw["dtls"]:
        raise ConfigError(f"{where}: gateway.udp or gateway.dtls (or both) must be set")
    if not broker["url"] and (broker["gateway_password_file"] or broker["bridge_password_file"]):
        raise ConfigError(f"{where}: broker.gateway_password_file needs broker.url (an external broker)")
    if not broker["url"] and not broker["listen"]:
        raise ConfigError(f"{where}: broker.listen must be set when broker.url is empty")
    if values["database"]["schema"] and not values["database"]["url"].startswith("postgresql"):
        raise ConfigError(f"{where}: database.schema is for PostgreSQL only")
    role = values["node"]["role"]
    if role != "all" and not broker["url"]:
        raise ConfigError(f"{where}: node.role = {role!r} needs broker.url (the broker all nodes share)")
    if role == "bridge" and not values["database"]["url"].startswith("postgresql"):
        raise ConfigError(
            f"{where}: node.role = 'bridge' needs database.url = postgresql://... (the workers share it)"
        )
    if values["supervisor"]["restart_backoff_max"] < values["supervisor"]["restart_backoff"]:
        raise ConfigError(f"{where}: supervisor.restart_backoff_max must be >= supervisor.restart_backoff")


def resolve(config: UpConfig) -> UpConfig:
    """Fill the empty paths in below the data directory (absolute)."""
    data = config.data.resolve()
    v = {s: dict(t) for s, t in config.values.items()}
    if not v["database"]["url"]:
        v["database"]["url"] = f"sqlite:///{data / 'meshota.db'}"
    if not v["artifacts"]["dir"]:
        v["artifacts"]["dir"] = str(data / "artifacts")
    if not v["gateway"]["psk_file"]:
        v["gateway"]["psk_file"] = str(data / "keys" / "psk.txt")
    return UpConfig(data, v)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _redact_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:REDACTED@{host}"


def render_toml(config: UpConfig) -> str:
    """The effective configuration as TOML; a password inside a URL is redacted (files holding
    secrets are named, never read here)."""
    lines = [f"# effective configuration of meshota up (data directory {config.data})"]
    for section, keys in KEYS.items():
        lines.append(f"\n[{section}]")
        for key in keys:
            value = config.values[section][key]
            if isinstance(value, str) and "://" in value:
                value = _redact_url(value)
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
