"""Room boundaries inside bridge/ (ast, no imports run): handlers import no transport, and the MQTT
adapter writes to the database only through the services beneath the handlers (issue 13)."""

from __future__ import annotations

import ast
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"


def imported(package: str) -> dict[str, set[str]]:
    """module file -> every module name it imports (absolute; relative ones resolved)."""
    out: dict[str, set[str]] = {}
    for path in sorted((BRIDGE / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ["bridge", *path.relative_to(BRIDGE).parent.parts]
                    base = base[: len(base) - node.level + 1]
                    names.add(".".join([*base, node.module] if node.module else base))
                else:
                    names.add(node.module or "")
        out[str(path.relative_to(BRIDGE))] = names
    assert out, f"no modules under {BRIDGE / package}"
    return out


def offending(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    return {
        module: sorted(n for n in names if n.split(".")[0] in forbidden or n.startswith(forbidden))
        for module, names in imported(package).items()
        if any(n.split(".")[0] in forbidden or n.startswith(forbidden) for n in names)
    }


def test_handlers_import_no_transport() -> None:
    transports = ("bridge.mqtt", "bridge.http", "bridge.gateway", "aiomqtt", "paho", "uvicorn", "mqttsn")
    assert offending("api", transports) == {}


def test_mqtt_adapter_issues_no_sql() -> None:
    """The MQTT adapter reaches the database only through bridge.api (handlers, AdapterServices)."""
    assert offending("mqtt", ("sqlalchemy", "bridge.store", "aiosqlite", "asyncpg")) == {}


def test_http_adapter_issues_no_sql() -> None:
    """The HTTP wiring opens and migrates the Store for the handlers; it runs no SQL itself."""
    assert offending("http", ("sqlalchemy", "aiosqlite", "asyncpg")) == {}


def test_the_walker_sees_imports() -> None:
    """The checks above can fail: the walker finds what these modules do import."""
    assert "bridge.api" in imported("mqtt")["mqtt/_adapter.py"]
    assert "bridge.store" in imported("api")["api/_services.py"]
    assert offending("api", ("sqlalchemy",))  # the handlers do use SQLAlchemy Core


# every place that reads or writes across organisations, and why (docs/governance.md)
CROSS_TENANT_OK = {
    "api/_artifacts.py",  # a deleted artifact's file stays while another organisation's artifact has it
    "api/_device_deployments.py",  # a signed download link names one artifact id; it carries no token
    "api/_useradm.py",  # login: user names are unique across organisations and find the organisation
    "api/_fleet_stats.py",  # installation telemetry counts every organisation's nodes
    "api/_rollouts.py",  # the rollout ticker finds every organisation's rollouts, steps each in its own
    "store/_engine.py",  # migrations
}


def test_cross_tenant_only_where_listed() -> None:
    """Handlers and services scope every statement; the escape is used only where listed above."""
    users = set()
    for path in sorted(BRIDGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
                if name == "cross_tenant":
                    users.add(str(path.relative_to(BRIDGE)))
    assert users == CROSS_TENANT_OK
