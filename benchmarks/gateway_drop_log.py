"""Log volume of a garbage flood: N random datagrams fed to the UDP gateway driver (no sockets,
no broker needed), counting the WARNING lines and bytes the gateway logs.

    PYTHONPATH=. .venv/bin/python benchmarks/gateway_drop_log.py [--datagrams 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import random

from bridge.gateway.udp import GatewayServer
from mqttsn import GatewayConfig


async def run(datagrams: int) -> tuple[int, int]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logger = logging.getLogger("meshota.gateway")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        server = GatewayServer(GatewayConfig(), ("127.0.0.1", 1), None)
        server.loop = asyncio.get_running_loop()
        rng = random.Random(1)
        for i in range(datagrams):
            server.datagram_received(rng.randbytes(rng.randrange(1, 200)), ("10.6.6.6", 1000 + i % 50))
        await server.close()
    finally:
        logger.removeHandler(handler)
    text = buf.getvalue()
    return text.count("\n"), len(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datagrams", type=int, default=10_000)
    args = ap.parse_args()
    lines, size = asyncio.run(run(args.datagrams))
    print(f"{args.datagrams} garbage datagrams: {lines} WARNING lines, {size} bytes logged")


if __name__ == "__main__":
    main()
