"""``meshota server`` options for the MQTT bridge: strings parsed here, the bridge gets values."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from bridge.mqtt import BridgePolicy, MqttBridgeConfig, bridge_service, load_record_keys
from meshota.cli._args import ConfigError, parse_broker_url
from wire.dtls_credentials import CredentialsError, load_psk_file

__all__ = ["add_bridge_options", "bridge_service_from_args"]


def add_bridge_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MQTT bridge (with --broker)")
    g.add_argument("--broker-username", default=None, metavar="USER")
    g.add_argument(
        "--broker-password-env", default="MESHOTA_BROKER_PASSWORD", metavar="VAR",
        help="environment variable holding the broker password (default MESHOTA_BROKER_PASSWORD)",
    )  # fmt: skip
    g.add_argument("--bridge-client-id", default="meshota-bridge", metavar="ID")
    g.add_argument("--share-group", default=None, metavar="NAME", help="MQTT 5 shared subscription group")
    g.add_argument("--block-size", type=int, default=512, metavar="BYTES", help="artifact bytes per reply")
    g.add_argument(
        "--reply-qos", type=int, choices=(0, 1), default=1,
        help="QoS of replies (default 1; with 0 a lost reply is answered again from the dedupe "
        "cache when the node re-sends its request id)",
    )  # fmt: skip
    g.add_argument(
        "--accept-unverified", action="store_true",
        help="serve requests stamped with a plain-UDP MQTT-SN client id (no DTLS identity)",
    )  # fmt: skip
    g.add_argument(
        "--psk-file", default=None, metavar="F", help="device PSKs: sealed-record keys derive from them"
    )


def bridge_service_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> tuple[Any, str | None]:
    """(service, None) or (None, one-line error naming the bad value). ``environ``: where
    ``--broker-password-env`` is looked up (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    try:
        host, port = parse_broker_url(args.broker)
    except ConfigError as exc:
        return None, str(exc)
    if not 64 <= args.block_size <= 65000:
        return None, f"bad --block-size value {args.block_size} (64..65000)"
    keys = {}
    if args.psk_file:
        try:
            keys = load_record_keys(load_psk_file(args.psk_file))
        except (OSError, CredentialsError) as exc:
            return None, f"bad --psk-file value {args.psk_file!r}: {exc}"
    config = MqttBridgeConfig(
        host=host,
        port=port,
        client_id=args.bridge_client_id,
        username=args.broker_username,
        password=env.get(args.broker_password_env) if args.broker_username else None,
        share_group=args.share_group,
        reply_qos=args.reply_qos,
        policy=BridgePolicy(require_verified=not args.accept_unverified, block_size=args.block_size),
    )
    return bridge_service(config, keys), None
