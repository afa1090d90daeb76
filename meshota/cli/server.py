"""``meshota server`` and ``meshota admin``: thin mains over bridge.http and the service layer.

Exit codes: 0 ok, 1 the operation was refused (message from the API), 2 usage/config error
with a one-line message naming the bad value.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from bridge.api import (
    ApiError,
    Settings,
    create_deployment,
    create_user,
    group_devices,
    set_auth_status,
)
from bridge.artifacts import VerifyKey, load_verify_key
from bridge.service import (
    BUILTIN_ROLES,
    Denied,
    Governance,
    UnitOfWork,
    create_org,
    map_identity,
    operator,
    org_by_name,
)
from bridge.store import DEFAULT_ORG_ID, Store, StoreConfigError, normalize_url
from meshota.cli._args import CliParser, ConfigError, parse_hostport, usage_error

if TYPE_CHECKING:
    from bridge.http import ServerConfig

__all__ = ["admin_main", "server_config", "server_main"]

T = TypeVar("T")


_SCHEMA_HELP = "PostgreSQL only: keep every table in this schema (created if missing)"


def _check_schema(url: str, schema: str | None) -> str | None:
    """A one-line message naming the bad --db-schema value, or None."""
    if schema is None:
        return None
    try:
        normalize_url(url)
    except StoreConfigError:
        return None  # reported as a bad --db value
    try:
        Store.check_schema(url, schema)
    except StoreConfigError as exc:
        return f"bad --db-schema value {schema!r}: {exc}"
    return None


def _add_telemetry_options(p: CliParser) -> None:
    from meshota.up.config import TELEMETRY_URL

    g = p.add_argument_group("installation telemetry (docs/privacy.md)")
    g.add_argument("--telemetry-level", choices=("off", "minimal", "full"), default="off")
    g.add_argument("--telemetry-url", default=TELEMETRY_URL, metavar="URL", help="the collector")
    g.add_argument("--telemetry-state", type=Path, default=None, metavar="FILE", help="DATA/telemetry.json")


def _add_rollout_options(p: CliParser) -> None:
    g = p.add_argument_group("phased rollouts (docs/rollouts.md)")
    g.add_argument(
        "--rollout-tick",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often the rollout ticker checks gates and phase start times (0: off)",
    )


def server_main(argv: Sequence[str]) -> int:
    from bridge.http import serve

    config, code = server_config(argv)
    if config is None:
        return code
    try:
        serve(config)
    except RuntimeError as exc:
        print(f"meshota server: {exc}", file=sys.stderr)
        return 1
    return 0


def server_config(
    argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> tuple[ServerConfig | None, int]:
    """``meshota server``'s options checked: ``(config, 0)``, or ``(None, exit status)`` once the
    one-line error is printed. ``environ``: where ``--broker-password-env`` is read (default
    ``os.environ``; ``meshota up`` passes the server's own, see meshota/cli/_up_inprocess.py)."""
    from bridge.http import ServerConfig
    from meshota.cli._bridge_options import add_bridge_options, bridge_service_from_args

    prog = "meshota server"
    p = CliParser(prog=prog, description="HTTP device-management API (Mender-compatible)")
    p.add_argument("--http", required=True, metavar="H:P")
    p.add_argument("--db", required=True, metavar="URL")
    p.add_argument("--db-schema", default=None, metavar="NAME", help=_SCHEMA_HELP)
    p.add_argument("--artifacts", required=True, metavar="DIR", type=Path)
    p.add_argument("--broker", metavar="mqtt://H:P", help="also run the MQTT bridge against this broker")
    p.add_argument("--tls-cert", type=Path, metavar="PEM")
    p.add_argument("--tls-key", type=Path, metavar="PEM")
    p.add_argument(
        "--verify-key",
        type=Path,
        action="append",
        default=[],
        metavar="PEM",
        help="vendor public key; when given, unsigned artifacts are refused",
    )
    p.add_argument(
        "--public-url", default="", metavar="URL", help="base URL put into artifact download links"
    )
    p.add_argument("--log-level", default="info")
    p.add_argument("--access-log", action="store_true", help="log every request (off: faster)")
    p.add_argument(
        "--public-stats", action="store_true", help="publish the fleet's weekly totals (/stats/fleet)"
    )
    _add_telemetry_options(p)
    _add_rollout_options(p)
    add_bridge_options(p)
    args = p.parse_args(list(argv))
    try:
        host, port = parse_hostport(args.http, "--http")
    except ConfigError as exc:
        return None, usage_error(prog, str(exc))
    try:
        normalize_url(args.db)
    except StoreConfigError as exc:
        return None, usage_error(prog, f"bad --db value: {exc}")
    schema_error = _check_schema(args.db, args.db_schema)
    if schema_error:
        return None, usage_error(prog, schema_error)
    if (args.tls_cert is None) != (args.tls_key is None):
        return None, usage_error(prog, "--tls-cert and --tls-key go together")
    for opt, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path is not None and not path.is_file():
            return None, usage_error(prog, f"bad {opt} value {str(path)!r}: no such file")
    keys: list[VerifyKey] = []
    for path in args.verify_key:
        try:
            keys.append(load_verify_key(path.read_bytes()))
        except (OSError, ValueError) as exc:
            return None, usage_error(prog, f"bad --verify-key value {str(path)!r}: {exc}")
    try:
        args.artifacts.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return None, usage_error(prog, f"bad --artifacts value {str(args.artifacts)!r}: {exc.strerror}")
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    services = []
    if args.broker:
        service, bridge_error = bridge_service_from_args(args, environ)
        if bridge_error:
            return None, usage_error(prog, bridge_error)
        services.append(service)
    if not 0 <= args.rollout_tick <= 3600:
        return None, usage_error(prog, f"bad --rollout-tick value {args.rollout_tick:g}: 0..3600 seconds")
    if args.rollout_tick > 0:
        from bridge.api import rollout_ticker_service

        services.append(rollout_ticker_service(args.rollout_tick))
    if args.telemetry_level != "off":
        from meshota import __version__
        from meshota.telemetry.sender import telemetry_service

        if args.telemetry_state is None:
            return None, usage_error(prog, "--telemetry-level needs --telemetry-state FILE")
        state = args.telemetry_state
        services.append(telemetry_service(args.telemetry_level, args.telemetry_url, state, __version__))
    settings = Settings(public_url=args.public_url, verify_keys=tuple(keys), public_stats=args.public_stats)
    config = ServerConfig(
        db_url=args.db,
        artifacts_dir=args.artifacts,
        host=host,
        port=port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        db_schema=args.db_schema,
        settings=settings,
        access_log=args.access_log,
        services=tuple(services),
    )
    return config, 0


def _run_in_store(
    prog: str,
    url: str,
    schema: str | None,
    operation: Callable[[UnitOfWork], Awaitable[T]],
    *,
    org: str | None = None,
    permission: str = "users:manage",
    new_org: str | None = None,
    token_out: list[str] | None = None,
) -> tuple[int, T | None]:
    """Run ``operation`` in one unit of work of the service layer, as the operator principal of
    organisation ``org`` (by name; None: the default one) — the same permission check, tenant
    scope and audit as an API call. ``new_org``: create that organisation first (its own
    transaction), then act in it (its tenant token goes to ``token_out``)."""

    async def run() -> T:
        store = Store.open(url, schema=schema)
        try:
            await store.migrate()
            gov = Governance(store)
            if new_org is not None:
                async with store.transaction() as conn:
                    created = await create_org(conn, new_org)
                if token_out is not None and created.tenant_token is not None:
                    token_out.append(created.tenant_token)
                async with gov.unit(operator(created.id), permission) as uow:
                    await uow.audit("organization.create", "organization", created.id, {"name": new_org})
                    return await operation(uow)
            org_id = DEFAULT_ORG_ID
            if org is not None:
                async with store.read() as conn:
                    org_id = (await org_by_name(conn, org)).id
            async with gov.unit(operator(org_id), permission) as uow:
                return await operation(uow)
        finally:
            await store.close()

    try:
        return 0, asyncio.run(run())
    except StoreConfigError as exc:
        return usage_error(prog, f"bad --db value: {exc}"), None
    except (ApiError, Denied) as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return 1, None
    except (SQLAlchemyError, OSError) as exc:
        return usage_error(prog, f"cannot use database {url!r}: {exc.__class__.__name__}: {exc}"), None


def read_password(file: str | None, env: str | None) -> str:
    """The password from ``file`` ('-' or neither option: stdin, one line) or environment ``env``."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"--password-env: {env} is not set or empty")
        return value
    try:
        text = sys.stdin.readline() if file in (None, "-") else Path(str(file)).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--password-file: cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--password-file: {file} is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ConfigError(f"--password-file: {file or 'stdin'} gave an empty password")
    return text


def _deployment_key(prog: str, url: str, schema: str | None, out: Path | None) -> int:
    from bridge.api import ApiContext, deployment_public_key_pem
    from bridge.artifacts import BlobStore

    async def run() -> bytes:
        store = Store.open(url, schema=schema)
        try:
            await store.migrate()
            with tempfile.TemporaryDirectory() as blobs:
                ctx = await ApiContext.create(store, BlobStore(Path(blobs)), Settings())
                return await deployment_public_key_pem(ctx)
        finally:
            await store.close()

    try:
        pem = asyncio.run(run())
    except StoreConfigError as exc:
        return usage_error(prog, f"bad --db value: {exc}")
    except (SQLAlchemyError, OSError) as exc:
        return usage_error(prog, f"cannot use database {url!r}: {exc.__class__.__name__}: {exc}")
    if out is None:
        sys.stdout.write(pem.decode())
        return 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(pem)
    except OSError as exc:
        return usage_error(prog, f"bad --out value {str(out)!r}: {exc.strerror}")
    print(out)
    return 0


def _audit_verify(prog: str, url: str, schema: str | None, org: str | None) -> int:
    """Check every organisation's chain (or one); exit 1 naming the first broken entry."""
    from bridge.service import verify_chain
    from bridge.store import gov_tables, tenant_scope

    async def run() -> list[tuple[str, int, str | None]]:
        store = Store.open(url, schema=schema)
        try:
            await store.migrate()
            async with store.read() as conn:
                if org is not None:
                    found = await org_by_name(conn, org)
                    orgs = [(found.id, found.name)]
                else:
                    # organisations are installation-wide: no tenant scope needed to list them
                    rows = await conn.execute(gov_tables.organizations.select().order_by("created_ts"))
                    orgs = [(r.id, r.name) for r in rows]
                out = []
                for org_id, name in orgs:
                    with tenant_scope(org_id):
                        count, broken = await verify_chain(conn)
                    where = None
                    if broken is not None:
                        entry = (
                            "the chain head"
                            if broken.seq is None
                            else f"entry seq={broken.seq} id={broken.id}"
                        )
                        where = f"{entry}: {broken.reason}"
                    out.append((name, count, where))
                return out
        finally:
            await store.close()

    try:
        results = asyncio.run(run())
    except StoreConfigError as exc:
        return usage_error(prog, f"bad --db value: {exc}")
    except Denied as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        return usage_error(prog, f"cannot use database {url!r}: {exc.__class__.__name__}: {exc}")
    code = 0
    for name, count, where in results:
        if where is None:
            print(f"{name}: {count} entries, chain intact")
        else:
            print(f"{name}: BROKEN at {where} ({count} entries intact before it)")
            code = 1
    return code


def admin_main(argv: Sequence[str]) -> int:
    prog = "meshota admin"
    p = CliParser(prog=prog, description="operator commands that write through the service layer")
    sub = p.add_subparsers(dest="command", required=True, parser_class=CliParser)
    cu = sub.add_parser("create-user", help="create an operator (like useradm)")
    cu.add_argument("--db", required=True, metavar="URL")
    cu.add_argument("--db-schema", default=None, metavar="NAME", help=_SCHEMA_HELP)
    cu.add_argument("--username", required=True)
    cu.add_argument(
        "--org", default=None, metavar="NAME", help="the user's organisation (default: the default one)"
    )
    cu.add_argument(
        "--role",
        action="append",
        default=None,
        metavar="ROLE",
        help=f"a role (repeatable; built in: {', '.join(BUILTIN_ROLES)}; default RBAC_ROLE_PERMIT_ALL)",
    )
    secret = cu.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-file", metavar="FILE", help="read the password from FILE ('-': stdin; default: stdin)"
    )
    secret.add_argument(
        "--password-env", metavar="VAR", help="take the password from environment variable VAR"
    )
    dk = sub.add_parser(
        "deployment-key", help="create the chunk-map signing key if missing; print its public key"
    )
    dk.add_argument("--db", required=True, metavar="URL")
    dk.add_argument("--db-schema", default=None, metavar="NAME", help=_SCHEMA_HELP)
    dk.add_argument("--out", type=Path, default=None, metavar="FILE", help="write the public key PEM here")
    ad = sub.add_parser("accept-device", help="accept a device's newest auth set")
    ad.add_argument("--db", required=True, metavar="URL")
    ad.add_argument("--db-schema", default=None, metavar="NAME", help=_SCHEMA_HELP)
    ad.add_argument("--org", default=None, metavar="NAME", help="the device's organisation")
    co = sub.add_parser("create-org", help="create an organisation; prints its id and tenant token")
    co.add_argument("--db", required=True, metavar="URL")
    co.add_argument("--db-schema", default=None, metavar="NAME", help=_SCHEMA_HELP)
    co.add_argument("name")
    mi = sub.add_parser(
        "map-identity", help="devices with this PSK identity / certificate subject enrol into an org"
    )
    mi.add_argument("--db", required=True, metavar="URL")
    mi.add_argument("--db-schema", default=None, metavar="NAME", help=_SCHEMA_HELP)
    mi.add_argument("--org", required=True, metavar="NAME")
    mi.add_argument("identity")
    au = sub.add_parser("audit", help="the audit log")
    au_sub = au.add_subparsers(dest="audit_command", required=True, parser_class=CliParser)
    av = au_sub.add_parser("verify", help="check the hash chain; name the first broken entry")
    av.add_argument("--db", required=True, metavar="URL")
    av.add_argument("--db-schema", default=None, metavar="NAME", help=_SCHEMA_HELP)
    av.add_argument("--org", default=None, metavar="NAME", help="one organisation (default: every one)")
    ad.add_argument("device_id")
    dp = sub.add_parser("deploy", help="deploy an artifact to devices or a static group")
    dp.add_argument("--db", required=True, metavar="URL")
    dp.add_argument("--db-schema", default=None, metavar="NAME", help=_SCHEMA_HELP)
    dp.add_argument("--org", default=None, metavar="NAME", help="the organisation deploying")
    dp.add_argument("--artifact", required=True, metavar="NAME")
    target = dp.add_mutually_exclusive_group(required=True)
    target.add_argument("--devices", metavar="ID,...")
    target.add_argument("--group", metavar="G")
    dp.add_argument("--name", default=None)
    dp.add_argument("--force", action="store_true", help="install even if already installed")
    argv = list(argv)
    if "--password" in argv or any(a.startswith("--password=") for a in argv):
        return usage_error(
            f"{prog} create-user",
            "--password is not accepted (a secret on the command line is visible in ps); "
            "use --password-file FILE, --password-env VAR or stdin",
        )
    args = p.parse_args(argv)
    sub_prog = f"{prog} {args.command}"
    schema_error = _check_schema(args.db, args.db_schema)
    if schema_error:
        return usage_error(sub_prog, schema_error)

    if args.command == "create-user":
        try:
            password = read_password(args.password_file, args.password_env)
        except ConfigError as exc:
            return usage_error(sub_prog, str(exc))
        roles = args.role or ["RBAC_ROLE_PERMIT_ALL"]

        async def add_user(uow: UnitOfWork) -> str:
            user_id = await create_user(uow.conn, args.username, password, roles)
            await uow.audit("user.create", "user", user_id, {"email": args.username, "roles": roles})
            return user_id

        code, user_id = _run_in_store(sub_prog, args.db, args.db_schema, add_user, org=args.org)
        if code == 0:
            print(user_id)
        return code
    if args.command == "create-org":
        holder: list[str] = []

        async def created(uow: UnitOfWork) -> str:
            return uow.principal.tenant_id

        code, org_id = _run_in_store(
            sub_prog, args.db, args.db_schema, created, new_org=args.name, token_out=holder
        )
        if code == 0:
            print(f"organisation {args.name}: id {org_id}")
            print(f"tenant token (shown once; devices: TenantToken in mender.conf): {holder[0]}")
        return code
    if args.command == "map-identity":

        async def mapped(uow: UnitOfWork) -> None:
            await map_identity(uow.conn, args.identity, uow.principal.tenant_id)
            await uow.audit("identity.map", "identity", args.identity, {"org": args.org})

        code, _ = _run_in_store(sub_prog, args.db, args.db_schema, mapped, org=args.org)
        if code == 0:
            print(f"{args.identity} -> {args.org}")
        return code
    if args.command == "audit":
        return _audit_verify(sub_prog, args.db, args.db_schema, args.org)
    if args.command == "deployment-key":
        return _deployment_key(sub_prog, args.db, args.db_schema, args.out)
    if args.command == "accept-device":

        async def accept(uow: UnitOfWork) -> str:
            aid = await set_auth_status(uow.conn, args.device_id, None, "accepted")
            await uow.audit(
                "device.auth_status", "device", args.device_id, {"auth_set": aid, "status": "accepted"}
            )
            return aid

        code, aid = _run_in_store(
            sub_prog, args.db, args.db_schema, accept, org=args.org, permission="devices:manage"
        )
        if code == 0:
            print(f"accepted {args.device_id} (auth set {aid})")
        return code

    async def deploy(uow: UnitOfWork) -> str:
        conn = uow.conn
        if args.group is not None:
            ids = await group_devices(conn, args.group)
            if not ids:
                raise ApiError(400, f"group {args.group!r} has no devices")
        else:
            ids = [i.strip() for i in args.devices.split(",") if i.strip()]
        deployment_id = await create_deployment(
            conn,
            name=args.name or args.artifact,
            artifact_name=args.artifact,
            device_ids=ids,
            group=args.group,
            force=args.force,
        )
        change = {"artifact_name": args.artifact, "group": args.group, "devices": len(set(ids))}
        await uow.audit("deployment.create", "deployment", deployment_id, change)
        return deployment_id

    if args.command == "deploy":
        if args.devices is not None and not args.devices.strip(","):
            return usage_error(sub_prog, f"bad --devices value {args.devices!r}")
        code, deployment_id = _run_in_store(
            sub_prog, args.db, args.db_schema, deploy, org=args.org, permission="deployments:manage"
        )
        if code == 0:
            print(deployment_id)
        return code
    return usage_error(prog, f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(server_main(sys.argv[1:]))
