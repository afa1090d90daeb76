"""``meshota broker-config``: write the mosquitto ACL, password file and include snippet the MQTT
bridge's trust model needs (meshota/broker_config.py; docs/mqtt_bridge.md)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from meshota.broker_config import BrokerConfigError, BrokerUsers, broker_acl, write_broker_config
from meshota.cli._args import CliParser, usage_error

__all__ = ["broker_config_main"]

PROG = "meshota broker-config"


def broker_config_main(argv: Sequence[str]) -> int:
    p = CliParser(prog=PROG, description="mosquitto ACL + password file for the gateway and the MQTT bridge")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--gateway-user", default="meshota-gateway", metavar="USER")
    p.add_argument("--bridge-user", default="meshota-bridge", metavar="USER")
    p.add_argument(
        "--gateway-topic",
        action="append",
        default=[],
        metavar="RULE",
        help="extra gateway rule, e.g. 'readwrite meshota/#' (repeatable)",
    )
    p.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="ORG_ID",
        help="an organisation (id from 'meshota admin create-org'): a broker user of that name "
        "confined to its topics; passwords in DIR/tenant-credentials (repeatable)",
    )
    p.add_argument("--acl-only", action="store_true", help="print the ACL to stdout, write nothing")
    args = p.parse_args(list(argv))
    users = BrokerUsers(args.gateway_user, args.bridge_user)
    try:
        if args.acl_only:
            sys.stdout.write(broker_acl(users, args.gateway_topic, args.tenant))
            return 0
        write_broker_config(args.out, users, gateway_topics=args.gateway_topic, tenants=args.tenant)
    except BrokerConfigError as exc:
        return usage_error(PROG, str(exc))
    except OSError as exc:
        return usage_error(PROG, f"bad --out value {str(args.out)!r}: {exc.strerror}")
    print(f"wrote {args.out}/acl, passwd, credentials (0600) and meshota.conf")
    return 0
