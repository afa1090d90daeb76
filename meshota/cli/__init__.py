"""The ``meshota`` command: one entry point, subcommands imported lazily."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "gateway": ("meshota.cli.gateway", "gateway_main", "MQTT-SN gateway (UDP) onto an MQTT broker"),
    "server": ("meshota.cli.server", "server_main", "Mender-compatible device-management server (HTTP)"),
    "admin": ("meshota.cli.server", "admin_main", "operator tasks: create-user, accept-device, deploy"),
    "relay": ("firmware_proto.aio.relay_udp", "relay_main", "root-node relay: children <-> gateway over UDP"),
    "broker-config": ("meshota.broker_config", "broker_config_main", "mosquitto ACL/passwords for meshota"),
    "sim": ("mesh_sim.cli", "sim_main", "simulate a mesh OTA scenario (metrics.json + PNG plots)"),
    "demo": ("meshota.demo", "demo_main", "a whole signed mesh OTA on embedded defaults"),
}

USAGE = "usage: meshota COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(
    f"  {name:<14} {help_}" for name, (_, _, help_) in COMMANDS.items()
)


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
        print(f"meshota: unknown command {args[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    module, func, _ = entry
    fn = getattr(importlib.import_module(module), func)
    return int(fn(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
