"""The ``meshota`` command: one entry point, subcommands imported lazily.

Every command's main lives in this package (``meshota/cli/<command>.py``) and parses with
:mod:`meshota.cli._args` (one address parser, one one-line error style, exit 2 on usage errors).
This module imports nothing beyond the standard library until a command is chosen, so
``meshota --help`` loads no bridge, SQLAlchemy or mbedTLS.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "up": ("meshota.cli.up", "up_main", "the whole server side: broker, gateway, HTTP API + MQTT bridge"),
    "gateway": ("meshota.cli.gateway", "gateway_main", "MQTT-SN gateway (UDP, DTLS) onto an MQTT broker"),
    "server": ("meshota.cli.server", "server_main", "Mender-compatible device-management server (HTTP)"),
    "admin": (
        "meshota.cli.server",
        "admin_main",
        "operator tasks: create-user, deployment-key, accept-device, deploy",
    ),
    "relay": ("meshota.cli.relay", "relay_main", "root-node relay: children <-> gateway over UDP"),
    "broker-config": (
        "meshota.cli.broker_config",
        "broker_config_main",
        "mosquitto ACL + passwords for meshota",
    ),
    "sim": ("meshota.cli.sim", "sim_main", "simulate a mesh OTA scenario (metrics.json + PNG plots)"),
    "demo": ("meshota.cli.demo", "demo_main", "a whole signed mesh OTA on embedded defaults"),
    "bundle": (
        "meshota.cli.bundle",
        "bundle_main",
        "air-gapped sites: signed bundles export/verify/import, status back",
    ),
    "telemetry": ("meshota.cli.telemetry", "telemetry_main", "show byte for byte what telemetry sends"),
    "collector": ("meshota.cli.collector", "collector_main", "receive telemetry, publish weekly totals"),
}

USAGE = "usage: meshota COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(
    f"  {name:<14} {help_}" for name, (_, _, help_) in COMMANDS.items()
)


def _bare_package(name: str) -> None:
    """Register package ``name`` without running its ``__init__``, so that ``from name import
    sub`` loads that submodule (and what it needs) only. python-mbedtls's ``__init__`` imports
    every submodule (ciphers, HKDF, HMAC, secrets, ...: each a ~2 MB extension with its own copy
    of mbedTLS); the gateway uses ``tls``, ``x509``, ``pk`` and ``exceptions``. Gateway process only."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if name not in sys.modules and spec is not None and spec.submodule_search_locations is not None:
        sys.modules[name] = importlib.util.module_from_spec(spec)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] == "--version":
        from meshota import __version__

        print(f"meshota {__version__}")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"meshota: error: unknown command {args[0]!r} (one of: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module, func, _ = entry
    no_ssl = "aiomqtt" not in args and not any(a == "--metrics" or a.startswith("--metrics=") for a in args)
    if argv is None and args[0] == "gateway" and "ssl" not in sys.modules and no_ssl:
        # A gateway process speaks plain MQTT to its broker (mqtt:// only) and DTLS through
        # mbedTLS: Python's ssl (OpenSSL, ~5 MB of RSS asyncio would load at import) is never
        # used, so asyncio runs without it. Only for a real process (argv None), never in-process,
        # and not for the aiomqtt baseline link (--broker-client aiomqtt) nor with --metrics:
        # both import ssl (prometheus-client's exposition module does).
        sys.modules["ssl"] = None  # type: ignore[assignment]
        if any(a == "--dtls" or a.startswith("--dtls=") for a in args):
            _bare_package("mbedtls")
    fn = getattr(importlib.import_module(module), func)
    return int(fn(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
