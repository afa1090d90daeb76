"""``meshota gateway``: run the MQTT-SN gateway (UDP and/or DTLS) in front of an MQTT broker."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from meshota.cli._args import (
    CliParser,
    ConfigError,
    format_address,
    parse_broker_url,
    parse_hostport,
    usage_error,
)
from mqttsn import GatewayConfig, LocalProtocolError, PredefinedTopics

log = logging.getLogger("meshota.gateway")

if TYPE_CHECKING:
    from bridge.gateway.dtls_admission import HandshakeLimits
    from bridge.gateway.dtls_listener import DtlsListener
    from bridge.gateway.udp import GatewayServer
    from bridge.observe import Metrics
    from wire.dtls_credentials import DtlsServerConfig

__all__ = [
    "DtlsOptions",
    "build_parser",
    "check_udp_identities",
    "gateway_main",
    "load_broker_password",
    "load_config",
    "load_dtls_options",
]


# Half-open DTLS handshakes (docs/limits.md, bridge/gateway/dtls_admission.py).
_HALF_OPEN_FLAGS: tuple[tuple[str, type, float, str, str], ...] = (
    ("--dtls-handshake-timeout", float, 15.0, "S", "seconds a DTLS handshake may take after its cookie"),
    ("--dtls-max-handshakes", int, 256, "N", "half-open DTLS handshakes in all (one mbedTLS context each)"),
    ("--dtls-handshakes-per-source", int, 32, "N", "half-open DTLS handshakes per source IP (IPv6: /64)"),
    ("--dtls-handshakes-per-relay", int, 16, "N", "half-open DTLS handshakes through one relay address"),
    ("--dtls-handshake-rate", float, 20.0, "R", "new DTLS handshakes per second per source (burst: twice)"),
)


def build_parser() -> argparse.ArgumentParser:
    ap = CliParser(
        prog="meshota gateway",
        description="MQTT-SN v1.2 gateway (UDP and/or DTLS 1.2) bridging onto an MQTT broker.",
    )
    ap.add_argument(
        "--broker", required=True, metavar="mqtt://H:P", help="MQTT broker (port 1883 if omitted)"
    )
    ap.add_argument("--udp", metavar="H:P", help="plain UDP address to listen on")
    ap.add_argument("--dtls", metavar="H:P", help="DTLS 1.2 address to listen on (direct and relayed)")
    ap.add_argument(
        "--psk-file", metavar="FILE",
        help="DTLS PSK provisioning file: lines 'identity,hexkey[,organisation id]'",
    )
    ap.add_argument(
        "--tenant-map", metavar="FILE",
        help="lines 'identity,organisation id': the organisation of certificate identities (CN) "
        "or of PSK identities without a third column (re-read on SIGHUP with --psk-file)",
    )
    ap.add_argument(
        "--tenant-credentials", metavar="FILE",
        help="broker passwords of organisations, lines 'organisation id:password' (meshota "
        "broker-config --tenant writes it): their nodes' connections log in as their organisation",
    )
    ap.add_argument("--cert", metavar="FILE", help="gateway certificate (PEM, ECDSA P-256) for DTLS")
    ap.add_argument("--key", metavar="FILE", help="private key of --cert (PEM)")
    ap.add_argument("--ca", metavar="FILE", help="CA that device certificates must chain to (PEM)")
    ap.add_argument(
        "--max-dtls-sessions", type=int, default=10_000, metavar="N",
        help="established DTLS sessions at most; handshakes past it are refused (default 10000)",
    )
    ap.add_argument(
        "--dtls-idle-timeout", type=float, default=900.0, metavar="S",
        help="close a DTLS session silent this long (default 900; keep it above keep-alive/sleep)",
    )
    for flag, kind, default, metavar, text in _HALF_OPEN_FLAGS:
        ap.add_argument(
            flag, type=kind, default=default, metavar=metavar, help=f"{text} (default {default:g})"
        )
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
    ap.add_argument("--multicast", metavar="H:P", help="multicast group: ADVERTISE sent, SEARCHGW heard")
    ap.add_argument(
        "--multicast-interface", metavar="IP", help="IPv4 address of the interface for --multicast"
    )
    ap.add_argument("--broker-username", help="MQTT username for every broker connection")
    secret = ap.add_mutually_exclusive_group()
    secret.add_argument(
        "--broker-password-file", metavar="FILE", type=_raw_value,
        help="read the MQTT password from FILE (one trailing newline is ignored)",
    )
    secret.add_argument(
        "--broker-password-env", metavar="VAR", type=_raw_value,
        help="take the MQTT password from environment variable VAR",
    )
    secret.add_argument(
        "--broker-password", metavar="PASSWORD", type=_raw_value,
        help="MQTT password (discouraged: visible in ps; use --broker-password-file or -env)",
    )
    ap.add_argument(
        "--udp-allow-unverified", action="store_true",
        help="let plain --udp clients use client ids a DTLS key would authenticate (PSK file "
        "identities; with --ca any id); ids a verified node has used stay refused",
    )
    ap.add_argument(
        "--max-unverified-sessions", type=int, default=GatewayConfig().max_unverified_sessions, metavar="N",
        help="sessions of keyless (plain UDP) clients at most (default %(default)s)",
    )
    ap.add_argument(
        "--max-unverified-per-source", type=int, default=GatewayConfig().max_unverified_per_source,
        metavar="N", help="keyless sessions per source host at most (default %(default)s)",
    )
    ap.add_argument(
        "--unverified-connect-rate", type=float, default=GatewayConfig().unverified_connect_rate,
        metavar="R", help="new keyless sessions per second at most, in all (default %(default)s)",
    )
    ap.add_argument(
        "--unverified-connect-rate-per-source", type=float,
        default=GatewayConfig().unverified_connect_rate_per_source, metavar="R",
        help="new keyless sessions per second per source host at most (default %(default)s)",
    )
    ap.add_argument(
        "--max-broker-connecting", type=int, default=64, metavar="N",
        help="MQTT connection attempts to the broker in flight at most (default %(default)s)",
    )
    ap.add_argument(
        "--client-id", default="meshota-gateway", metavar="ID",
        help="the gateway's own MQTT client id; keep it stable: in aggregating mode its broker "
        "session (subscriptions, messages not yet acked by a node) is resumed at restart "
        "(default %(default)s)",
    )
    ap.add_argument(
        "--session-expiry", type=int, default=86400, metavar="S",
        help="aggregating mode: seconds the broker keeps the gateway's session after its "
        "connection ends (default %(default)s)",
    )
    ap.add_argument(
        "--unrouted-hold", type=float, default=GatewayConfig().unrouted_hold, metavar="S",
        help="aggregating mode: seconds a QoS 1/2 message no node subscribes to stays "
        "unacknowledged, waiting for one (e.g. after a restart; default %(default)s)",
    )
    ap.add_argument(
        "--broker-client", choices=("mqtt5", "aiomqtt"), default="mqtt5",
        help="broker link implementation; aiomqtt is the former one (acks on receipt), kept as "
        "a benchmark baseline only",
    )
    ap.add_argument(
        "--metrics", metavar="H:P", default=None,
        help="serve /healthz, /readyz and Prometheus /metrics on this TCP address (default: none)",
    )  # fmt: skip
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
    if not 0 <= args.session_expiry <= 0xFFFFFFFF:
        raise ConfigError(f"--session-expiry: {args.session_expiry} is not in 0..4294967295")
    if not 0 <= args.unrouted_hold < float("inf"):
        raise ConfigError(f"--unrouted-hold: {args.unrouted_hold} must be a finite number >= 0")
    if not args.client_id or len(args.client_id.encode()) > 65535 or any(c in args.client_id for c in "+#\0"):
        raise ConfigError(f"--client-id: {args.client_id!r} is not a usable MQTT client id")
    for flag, value in (
        ("--max-unverified-sessions", args.max_unverified_sessions),
        ("--max-unverified-per-source", args.max_unverified_per_source),
        ("--max-broker-connecting", args.max_broker_connecting),
    ):
        if value < 0 or (value == 0 and flag == "--max-broker-connecting"):
            raise ConfigError(f"{flag}: {value} must be >= {1 if flag == '--max-broker-connecting' else 0}")
    for flag, rate in (
        ("--unverified-connect-rate", args.unverified_connect_rate),
        ("--unverified-connect-rate-per-source", args.unverified_connect_rate_per_source),
    ):
        if not rate >= 0 or rate == float("inf"):
            raise ConfigError(f"{flag}: {rate} must be a finite number >= 0")
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
        max_unverified_sessions=args.max_unverified_sessions,
        max_unverified_per_source=args.max_unverified_per_source,
        unverified_connect_rate=args.unverified_connect_rate,
        unverified_connect_rate_per_source=args.unverified_connect_rate_per_source,
        unrouted_hold=args.unrouted_hold,
    )


def load_broker_password(args: argparse.Namespace) -> str | None:
    """The broker password from --broker-password-file, --broker-password-env or (discouraged,
    visible in ps) --broker-password; None without any."""
    if args.broker_password_file:
        path = Path(args.broker_password_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--broker-password-file: cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--broker-password-file: {path} is not UTF-8 text") from None
        text = text.removesuffix("\n").removesuffix("\r")
        if not text:
            raise ConfigError(f"--broker-password-file: {path} is empty")
        return text
    if args.broker_password_env:
        value = os.environ.get(args.broker_password_env)
        if not value:
            raise ConfigError(f"--broker-password-env: {args.broker_password_env} is not set or empty")
        return value
    password: str | None = args.broker_password
    return password


_VALUE_OPTIONS = ("--broker-password", "--broker-password-file", "--broker-password-env")


def _join_values(argv: list[str]) -> list[str]:
    """``--broker-password -x`` as ``--broker-password=<RAW>-x``: argparse would take a value that
    starts with '-' for an option, and drops a value that is exactly ``--`` (CPython < 3.13); a
    password (or a file name) may well be either. The marker keeps the value opaque to argparse and
    :func:`_raw_value` (the options' ``type``) removes it."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUE_OPTIONS and i + 1 < len(argv):
            out.append(f"{arg}={_RAW}{argv[i + 1]}")
            i += 2
            continue
        name, eq, value = arg.partition("=")
        if eq and name in _VALUE_OPTIONS:
            arg = f"{name}={_RAW}{value}"
        out.append(arg)
        i += 1
    return out


# NUL cannot occur in a real command-line argument, so it cannot collide with a user's value.
_RAW = "\x00"


def _raw_value(text: str) -> str:
    return text.removeprefix(_RAW)


def check_udp_identities(args: argparse.Namespace, dtls: DtlsOptions | None) -> None:
    """Plain UDP next to a certificate CA: any client id may be a certificate CN, so plain UDP
    would refuse every client unless told otherwise."""
    if args.udp is None or dtls is None or args.udp_allow_unverified:
        return
    if dtls.credentials.certificate is not None:
        raise ConfigError(
            "--udp: with --ca any client id may belong to a certificate, so plain UDP would refuse "
            "every client; add --udp-allow-unverified to accept keyless clients (ids that verified "
            "nodes used stay refused)"
        )


@dataclass(frozen=True, slots=True)
class DtlsOptions:
    address: tuple[str, int]
    credentials: DtlsServerConfig
    max_sessions: int
    idle_timeout: float
    handshake_timeout: float = 15.0
    limits: HandshakeLimits | None = None
    tenants: dict[str, str] = field(default_factory=dict)  # identity -> organisation id (PSK file)


def load_dtls_options(args: argparse.Namespace) -> DtlsOptions | None:
    """Check the DTLS options and load the credentials; None without ``--dtls``."""
    cert_opts = {"--cert": args.cert, "--key": args.key, "--ca": args.ca}
    if args.dtls is None:
        only = {"--psk-file": args.psk_file, "--tenant-map": args.tenant_map, **cert_opts}
        given = [name for name, value in only.items() if value]
        if given:
            raise ConfigError(f"{given[0]}: only used with --dtls H:P")
        return None
    address = parse_hostport(args.dtls, "--dtls")
    if args.max_dtls_sessions < 1:
        raise ConfigError(f"--max-dtls-sessions: {args.max_dtls_sessions} must be >= 1")
    if not args.dtls_idle_timeout > 0:
        raise ConfigError(f"--dtls-idle-timeout: {args.dtls_idle_timeout} must be > 0")
    for flag, *_ in _HALF_OPEN_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{flag}: {value} must be a finite number > 0")
    some_cert = any(cert_opts.values())
    if some_cert and not all(cert_opts.values()):
        missing = [name for name, value in cert_opts.items() if not value]
        raise ConfigError(f"{missing[0]}: needed with {', '.join(n for n, v in cert_opts.items() if v)}")
    if not args.psk_file and not some_cert:
        raise ConfigError(f"--dtls {args.dtls}: needs --psk-file FILE or --cert/--key/--ca")

    from bridge.gateway.dtls_admission import HandshakeLimits
    from wire.dtls_credentials import (
        CertificateCredentials,
        CredentialsError,
        DtlsServerConfig,
        load_psk_file,
        load_psk_tenants,
        load_tenant_map,
    )

    psk = certificate = None
    tenants: dict[str, str] = {}
    try:
        if args.psk_file:
            psk = load_psk_file(args.psk_file)
            tenants = load_psk_tenants(args.psk_file)
        if some_cert:
            certificate = CertificateCredentials.from_files(args.cert, args.key, args.ca)
    except CredentialsError as exc:
        where = "--psk-file" if args.psk_file and psk is None else "--cert/--key/--ca"
        text = str(exc)
        raise ConfigError(text if text.startswith("--") else f"{where}: {text}") from None
    try:
        tenants = merge_tenants(tenants, load_tenant_map(args.tenant_map) if args.tenant_map else {})
    except CredentialsError as exc:
        raise ConfigError(f"--tenant-map: {exc}") from None
    return DtlsOptions(
        address,
        DtlsServerConfig(psk=psk, certificate=certificate),
        args.max_dtls_sessions,
        args.dtls_idle_timeout,
        args.dtls_handshake_timeout,
        HandshakeLimits(
            max_handshakes=args.dtls_max_handshakes,
            per_source=args.dtls_handshakes_per_source,
            per_relay=args.dtls_handshakes_per_relay,
            rate=args.dtls_handshake_rate,
            burst=max(1, round(2 * args.dtls_handshake_rate)),
            known_peers=args.max_dtls_sessions,
        ),
        tenants,
    )


def merge_tenants(from_psk: dict[str, str], from_map: dict[str, str]) -> dict[str, str]:
    """The PSK file's organisation column and --tenant-map together; they must agree."""
    from wire.dtls_credentials import CredentialsError

    for identity, tenant in from_map.items():
        if from_psk.get(identity, tenant) != tenant:
            raise CredentialsError(f"{identity!r}: {tenant!r} here, {from_psk[identity]!r} in --psk-file")
    return {**from_psk, **from_map}


def load_tenant_passwords(args: argparse.Namespace) -> dict[str, str]:
    """--tenant-credentials: organisation id -> broker password."""
    if not args.tenant_credentials:
        return {}
    from meshota.broker_config import BrokerConfigError, read_tenant_credentials

    try:
        return read_tenant_credentials(Path(args.tenant_credentials))
    except BrokerConfigError as exc:
        raise ConfigError(f"--tenant-credentials: {exc}") from None


async def _serve(
    args: argparse.Namespace,
    config: GatewayConfig,
    dtls: DtlsOptions | None,
    password: str | None,
    tenant_passwords: dict[str, str] | None = None,
) -> int:
    # DTLS (mbedTLS, ~6 MB of RSS) is imported only when --dtls asks for it
    from bridge.gateway.udp import GatewayServer, MulticastError
    from bridge.mqtt5 import Mqtt5Error

    broker = parse_broker_url(args.broker)
    udp = parse_hostport(args.udp, "--udp") if args.udp else None
    multicast = parse_hostport(args.multicast, "--multicast") if args.multicast else None
    psk_ids: set[str] = set()
    if dtls is not None and dtls.credentials.psk is not None and not args.udp_allow_unverified:
        # keyless clients never use an identity of the PSK file (kept current on SIGHUP)
        psk_ids.update(dtls.credentials.psk)
        config.protected_client_id = psk_ids.__contains__
    # organisations: the PSK file's third column (kept current on SIGHUP); docs/topics.md
    tenants: dict[str, str] = dict(dtls.tenants) if dtls is not None else {}
    server = GatewayServer(
        config,
        broker,
        udp,
        broker_username=args.broker_username,
        broker_password=password,
        multicast=multicast,
        multicast_interface=args.multicast_interface,
        max_broker_connecting=args.max_broker_connecting,
        client_id=args.client_id,
        session_expiry=args.session_expiry,
        broker_client=args.broker_client,
        tenant_of=tenants.get,
        tenant_passwords=tenant_passwords or {},
    )
    listener: DtlsListener | None = None
    if dtls is not None:
        from bridge.gateway.dtls_listener import DtlsListener
        from bridge.gateway.dtls_server import DtlsServer

        listener = DtlsListener(
            server,
            DtlsServer(
                dtls.credentials,
                max_sessions=dtls.max_sessions,
                idle_timeout=dtls.idle_timeout,
                handshake_timeout=dtls.handshake_timeout,
                limits=dtls.limits,
            ),
            dtls.address,
        )
    try:
        await server.start()
    except Mqtt5Error as exc:
        print(f"meshota gateway: cannot connect to broker {args.broker}: {exc}", file=sys.stderr)
        return 1
    except MulticastError as exc:
        return usage_error("meshota gateway", f"--multicast {exc}")
    except OSError as exc:
        return usage_error("meshota gateway", f"--udp {args.udp}: {exc.strerror}")
    if listener is not None:
        try:
            await listener.start()
        except OSError as exc:
            await server.close()
            return usage_error("meshota gateway", f"--dtls {args.dtls}: {exc.strerror}")
    probe = None
    if args.metrics:
        from bridge.observe import ProbeServer

        metrics = _export_gateway(server, listener)
        host, port = parse_hostport(args.metrics, "--metrics")
        try:
            probe = await ProbeServer(metrics, ready=server.broker_ready, host=host, port=port).start()
        except OSError as exc:
            if listener is not None:
                await listener.close()
            await server.close()
            return usage_error("meshota gateway", f"--metrics {args.metrics}: {exc.strerror}")
    ends = []
    if udp is not None:
        ends.append(f"udp {format_address(*server.address)}")
    if listener is not None:
        ends.append(f"dtls {format_address(*listener.address)}")
    if probe is not None:
        ends.append(f"metrics http://{format_address(*probe.address)}/metrics")
    print(f"meshota gateway: {', '.join(ends)} -> {args.broker} ({config.mode})", flush=True)
    _release_startup_memory()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if listener is not None and args.psk_file:
        dtls_listener = listener

        def reload_psk() -> None:
            """SIGHUP: read --psk-file again (as mosquitto does its password file); a device whose
            line is gone or changed loses its session at once; a bad file keeps the old table."""
            from wire.dtls_credentials import (
                CredentialsError,
                load_psk_file,
                load_psk_tenants,
                load_tenant_map,
            )

            try:
                keys = load_psk_file(args.psk_file)
                extra = load_tenant_map(args.tenant_map) if args.tenant_map else {}
                new_tenants = merge_tenants(load_psk_tenants(args.psk_file), extra)
            except CredentialsError as exc:
                log.error("SIGHUP: --psk-file not reloaded, old keys kept: %s", exc)
                return
            closed = dtls_listener.replace_psk(keys)
            tenants.clear()  # new broker connections take the new organisation
            tenants.update(new_tenants)
            if config.protected_client_id is not None:
                psk_ids.clear()
                psk_ids.update(keys)
            log.warning("SIGHUP: --psk-file reloaded: %d identities; sessions ended: %s",
                        len(keys), ", ".join(closed) or "none")  # fmt: skip

        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, reload_psk)
    await stop.wait()
    if probe is not None:
        await probe.close()
    if listener is not None:
        await listener.close()
    await server.close()
    return 0


def _release_startup_memory() -> None:
    """Once listening: hand back to the kernel what starting up used and freed (argument
    parsing, the PSK file, compiled patterns), ~0.7 MB of RSS that glibc's malloc would keep."""
    import gc

    gc.collect()
    if sys.platform == "linux":
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)


def _export_gateway(server: GatewayServer, listener: DtlsListener | None) -> Metrics:
    """The gateway's gauges, read at scrape time from the objects that hold them."""
    from bridge.observe import process_metrics

    metrics = process_metrics()
    metrics.gauge_source("meshota_mqttsn_sessions", lambda: len(server.gateway.sessions()))
    if listener is not None:
        dtls = listener.front.server
        metrics.gauge_source("meshota_dtls_sessions", lambda: dtls.session_count - dtls.handshake_count)
        metrics.gauge_source("meshota_dtls_handshakes", lambda: dtls.handshake_count)
    return metrics


def gateway_main(argv: list[str]) -> int:
    args = build_parser().parse_args(_join_values(argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        config = load_config(args)
        parse_broker_url(args.broker)
        if args.udp is None and args.dtls is None:
            raise ConfigError("--udp H:P or --dtls H:P (or both) is required")
        if args.udp is not None:
            parse_hostport(args.udp, "--udp")
        if args.multicast:
            parse_hostport(args.multicast, "--multicast")
        dtls = load_dtls_options(args)
        check_udp_identities(args, dtls)
        password = load_broker_password(args)
        tenant_passwords = load_tenant_passwords(args)
    except ConfigError as exc:
        return usage_error("meshota gateway", str(exc))
    return asyncio.run(_serve(args, config, dtls, password, tenant_passwords))
