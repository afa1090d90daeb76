"""``meshota relay``: the root-node relay over real UDP.

    meshota relay --gateway udp://HOST:PORT --listen udp://HOST:PORT

Exit status: 0 on SIGINT/SIGTERM, 2 with a one-line message naming the bad value for a usage or
configuration error (an address that does not parse, bind or connect).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from meshota.cli._args import CliParser, ConfigError, format_address, parse_udp_url, usage_error

__all__ = ["relay_main"]

PROG = "meshota relay"


def relay_main(argv: Sequence[str] | None = None) -> int:
    parser = CliParser(prog=PROG, description="root-node relay over real UDP")
    parser.add_argument("--gateway", required=True, help="udp://HOST:PORT of the MQTT-SN gateway")
    parser.add_argument("--listen", required=True, help="udp://HOST:PORT children send to")
    args = parser.parse_args(argv)
    try:
        gateway = parse_udp_url(args.gateway, "--gateway")
        listen = parse_udp_url(args.listen, "--listen")
    except ConfigError as exc:
        return usage_error(PROG, str(exc))

    from firmware_proto.aio.relay_udp import RelayConfigError, RelayUdp

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        relay = RelayUdp(gateway, listen)
        try:
            await relay.start()
        except RelayConfigError as exc:
            return usage_error(PROG, str(exc))
        ends = f"{format_address(*relay.listen_address)} -> {format_address(*gateway)}"
        print(f"{PROG}: {ends}", file=sys.stderr)
        try:
            await stop.wait()
        finally:
            relay.close()
        return 0

    return asyncio.run(main())
