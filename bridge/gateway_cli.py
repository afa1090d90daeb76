"""``meshota gateway``: run the MQTT-SN gateway over UDP in front of an MQTT broker."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from meshota.config import ConfigError, parse_hostport, parse_url_hostport
from mqttsn import GatewayConfig, LocalProtocolError, PredefinedTopics

__all__ = ["build_parser", "gateway_main", "load_config"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="meshota gateway",
        description="MQTT-SN v1.2 gateway (UDP) bridging onto an MQTT broker.",
    )
    ap.add_argument("--broker", required=True, metavar="mqtt://H:P", help="MQTT broker to bridge onto")
    ap.add_argument("--udp", required=True, metavar="H:P", help="UDP address to listen on")
    ap.add_argument(
        "--predefined-topics",
        metavar="FILE",
        help="predefined topic ids, lines 'ClientId|*, topic, id' ('#' comments)",
    )
    ap.add_argument(
        "--mode",
        choices=("transparent", "aggregating"),
        default="transparent",
        help="one broker connection per client (default) or one for all",
    )
    ap.add_argument("--gateway-id", type=int, default=1, help="GwId in ADVERTISE/GWINFO (1-255)")
    ap.add_argument(
        "--max-packet-size", type=int, default=1500, help="largest datagram accepted (default 1500)"
    )
    ap.add_argument("--retry-interval", type=float, default=10.0, help="T_RETRY seconds (default 10)")
    ap.add_argument("--max-retries", type=int, default=5, help="N_RETRY (default 5)")
    ap.add_argument("--max-buffered", type=int, default=1000, help="messages kept per sleeping client")
    ap.add_argument("--advertise", type=float, metavar="SECONDS", help="send ADVERTISE this often")
    ap.add_argument("--multicast", metavar="H:P", help="multicast group for ADVERTISE")
    ap.add_argument("--broker-username", help="MQTT username for every broker connection")
    ap.add_argument("--broker-password", help="MQTT password for every broker connection")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    return ap


def load_config(args: argparse.Namespace) -> GatewayConfig:
    if not 1 <= args.gateway_id <= 255:
        raise ConfigError(f"--gateway-id: {args.gateway_id} is not in 1..255")
    if not 16 <= args.max_packet_size <= 65535:
        raise ConfigError(f"--max-packet-size: {args.max_packet_size} is not in 16..65535")
    if args.retry_interval <= 0:
        raise ConfigError(f"--retry-interval: {args.retry_interval} must be > 0")
    if args.max_retries < 0:
        raise ConfigError(f"--max-retries: {args.max_retries} must be >= 0")
    predefined = PredefinedTopics()
    if args.predefined_topics:
        path = Path(args.predefined_topics)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--predefined-topics: cannot read {path}: {exc.strerror}") from None
        try:
            predefined = PredefinedTopics.parse(text, str(path))
        except LocalProtocolError as exc:
            raise ConfigError(f"--predefined-topics: {exc}") from None
    return GatewayConfig(
        gw_id=args.gateway_id,
        mode=args.mode,
        max_packet_size=args.max_packet_size,
        retry_interval=args.retry_interval,
        max_retries=args.max_retries,
        max_buffered=args.max_buffered,
        advertise_interval=args.advertise,
        predefined=predefined,
    )


async def _serve(args: argparse.Namespace, config: GatewayConfig) -> int:
    import aiomqtt

    from .gateway import GatewayServer

    broker = parse_url_hostport(args.broker, "--broker", ("mqtt",), 1883)
    udp = parse_hostport(args.udp, "--udp")
    multicast = parse_hostport(args.multicast, "--multicast") if args.multicast else None
    server = GatewayServer(
        config,
        broker,
        udp,
        broker_username=args.broker_username,
        broker_password=args.broker_password,
        multicast=multicast,
    )
    try:
        await server.start()
    except aiomqtt.MqttError as exc:
        print(f"meshota gateway: cannot connect to broker {args.broker}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"meshota gateway: --udp {args.udp}: {exc.strerror}", file=sys.stderr)
        return 2
    host, port = server.address
    print(f"meshota gateway: udp {host}:{port} -> {args.broker} ({config.mode})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()
    return 0


def gateway_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        config = load_config(args)
        parse_url_hostport(args.broker, "--broker", ("mqtt",), 1883)
        parse_hostport(args.udp, "--udp")
        if args.multicast:
            parse_hostport(args.multicast, "--multicast")
    except ConfigError as exc:
        print(f"meshota gateway: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args, config))
