"""``meshota bundle``: signed, expiring bundles for air-gapped sites (docs/bundles.md).

Commands that touch a server act as the operator principal of one organisation (``--org``,
default the default one) through the service layer: permission check, tenant scope, audit.

Exit codes: 0 ok; 1 refused (verification failed, the import or status landing was refused;
one line ``meshota bundle <cmd>: refused: <reason>``, nothing imported); 2 usage or
configuration error (``meshota bundle <cmd>: error: <message naming the bad value>``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from meshota.cli._args import CliParser, usage_error

__all__ = ["bundle_main"]

_SCHEMA_HELP = "PostgreSQL only: the schema the server uses"


def _server_options(p: CliParser) -> None:
    p.add_argument("--db", required=True, metavar="URL", help="the server's database")
    p.add_argument("--db-schema", default=None, metavar="NAME", help=_SCHEMA_HELP)
    p.add_argument("--artifacts", required=True, type=Path, metavar="DIR", help="the server's artifact store")
    p.add_argument(
        "--org",
        default=None,
        metavar="NAME",
        help="act as this organisation's operator (default: the default one)",
    )


def _parser() -> CliParser:
    p = CliParser(prog="meshota bundle", description="signed, expiring bundles for air-gapped sites")
    sub = p.add_subparsers(dest="command", required=True, parser_class=CliParser)
    init = sub.add_parser("init", help="create a signing repository: root keys (offline) and online keys")
    init.add_argument("--repo", required=True, type=Path, metavar="DIR")
    init.add_argument(
        "--root-keys", required=True, type=Path, metavar="DIR", help="offline media for root keys"
    )
    init.add_argument("--root-key-count", type=int, default=1, metavar="N")
    init.add_argument("--root-threshold", type=int, default=1, metavar="T")
    init.add_argument("--online-key-count", type=int, default=1, metavar="N")
    init.add_argument("--online-threshold", type=int, default=1, metavar="T")
    init.add_argument("--root-expires", default="365d", metavar="DURATION")
    rot = sub.add_parser("rotate-root", help="write root N+1 (new root or online keys, revocations)")
    rot.add_argument("--repo", required=True, type=Path, metavar="DIR")
    rot.add_argument("--root-keys", required=True, type=Path, metavar="DIR")
    rot.add_argument(
        "--new-root-keys", type=int, default=0, metavar="N", help="replace the root keys with N new"
    )
    rot.add_argument("--root-threshold", type=int, default=None, metavar="T")
    rot.add_argument("--new-online-keys", type=int, default=0, metavar="N", help="replace the online keys")
    rot.add_argument("--online-threshold", type=int, default=None, metavar="T")
    rot.add_argument(
        "--revoke", action="append", default=[], metavar="KEYID", help="drop a key from every role"
    )
    rot.add_argument("--root-expires", default="365d", metavar="DURATION")
    pin = sub.add_parser("pin", help="trust a root (the first one, handed over out of band)")
    pin.add_argument("--trust", required=True, type=Path, metavar="DIR")
    pin.add_argument("root", type=Path, metavar="ROOT.json")
    exp = sub.add_parser("export", help="sign and write a deployment bundle")
    _server_options(exp)
    exp.add_argument("--repo", required=True, type=Path, metavar="DIR")
    what = exp.add_mutually_exclusive_group(required=True)
    what.add_argument("--deployment", action="append", default=[], metavar="ID")
    what.add_argument("--artifact", action="append", default=[], metavar="NAME")
    exp.add_argument("--target", action="append", default=[], metavar="GROUP", help="with --artifact")
    exp.add_argument("--submesh", action="append", default=[], metavar="MESH_ID",
                     help="only devices whose mesh_id inventory attribute is MESH_ID")  # fmt: skip
    exp.add_argument("--name", default=None)
    exp.add_argument(
        "--force", action="store_true", help="with --artifact: install even if already installed"
    )
    exp.add_argument("--expires", required=True, metavar="DURATION", help="like 30d, 12h")
    exp.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    ver = sub.add_parser("verify", help="check a bundle offline against the pinned root; print each check")
    ver.add_argument("--trust", required=True, type=Path, metavar="DIR")
    ver.add_argument("bundle", type=Path, metavar="FILE")
    imp = sub.add_parser("import", help="verify, then relocate artifacts and create deployments")
    _server_options(imp)
    imp.add_argument("--trust", required=True, type=Path, metavar="DIR")
    imp.add_argument("--verify-key", type=Path, action="append", default=[], metavar="PEM",
                     help="vendor public key, as given to meshota server")  # fmt: skip
    imp.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    imp.add_argument("bundle", type=Path, metavar="FILE")
    sx = sub.add_parser("status-export", help="sign and write the statuses of imported deployments")
    _server_options(sx)
    sx.add_argument(
        "--trust", required=True, type=Path, metavar="DIR", help="where the bundles were imported"
    )
    sx.add_argument("--repo", required=True, type=Path, metavar="DIR", help="this site's signing repository")
    sx.add_argument("--site", required=True, metavar="NAME")
    sx.add_argument("--since", required=True, metavar="T", help="RFC 3339, a duration back (7d), or all")
    sx.add_argument("--expires", default="30d", metavar="DURATION")
    sx.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    si = sub.add_parser("status-import", help="verify a site's status bundle and land its statuses")
    _server_options(si)
    si.add_argument("--trust", required=True, type=Path, metavar="DIR", help="pins the site's root")
    si.add_argument("bundle", type=Path, metavar="FILE")
    return p


def bundle_main(argv: Sequence[str]) -> int:
    from meshota.bundle import BundleError, BundleUsageError

    args = _parser().parse_args(list(argv))
    prog = f"meshota bundle {args.command}"
    store_errors: tuple[type[BaseException], ...] = ()
    if hasattr(args, "db"):  # the server's code loads only for the commands that open it
        from sqlalchemy.exc import SQLAlchemyError

        from bridge.store import StoreConfigError, normalize_url

        try:
            normalize_url(args.db)
        except StoreConfigError as exc:
            return usage_error(prog, f"bad --db value: {exc}")
        store_errors = (StoreConfigError, SQLAlchemyError)
    try:
        return _run(args)
    except BundleUsageError as exc:
        return usage_error(prog, exc.message)
    except BundleError as exc:
        print(f"{prog}: refused: {exc.message}", file=sys.stderr)
        return 1
    except store_errors as exc:
        return usage_error(prog, f"{exc.__class__.__name__}: {exc}")
    except OSError as exc:
        return usage_error(prog, f"{exc.__class__.__name__}: {exc}")


def _open_ctx(args: Any) -> Any:
    from bridge.artifacts import load_verify_key
    from meshota.bundle import BundleUsageError, server_context

    keys = []
    for path in getattr(args, "verify_key", []):
        try:
            keys.append(load_verify_key(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise BundleUsageError(f"bad --verify-key value {str(path)!r}: {exc}") from None

    @contextlib.asynccontextmanager
    async def open_ctx() -> AsyncIterator[Any]:
        async with server_context(args.db, args.artifacts, schema=args.db_schema, verify_keys=keys) as ctx:
            yield ctx

    return open_ctx


def _run(args: Any) -> int:
    from meshota import bundle as b

    say = print
    if args.command == "init":
        repo = b.SigningRepo.init(
            args.repo,
            args.root_keys,
            root_keys=args.root_key_count,
            root_threshold=args.root_threshold,
            online_keys=args.online_key_count,
            online_threshold=args.online_threshold,
            root_expires=b.parse_duration(args.root_expires),
        )
        say(f"signing repository {repo.dir}; hand {repo.dir / 'root_history' / '1.root.json'} to each site")
        return 0
    if args.command == "rotate-root":
        version = b.SigningRepo(args.repo).rotate_root(
            args.root_keys,
            new_root_keys=args.new_root_keys,
            root_threshold=args.root_threshold,
            new_online_keys=args.new_online_keys,
            online_threshold=args.online_threshold,
            revoke=args.revoke,
            root_expires=b.parse_duration(args.root_expires),
        )
        say(f"root v{version} written; every bundle exported from now on carries the chain to it")
        return 0
    if args.command == "pin":
        md = b.pin_root(args.trust, args.root)
        keys = ", ".join(k[:16] for k in md.signed.roles["root"].keyids)
        say(f"pinned root v{md.signed.version} (root keys {keys}) in {args.trust}")
        return 0
    if args.command == "verify":
        kind = b.verify_bundle(args.bundle, args.trust, say)
        say(f"verified: a {kind} bundle; nothing was written")
        return 0
    if args.command == "export":
        if args.artifact and not args.target:
            raise b.BundleUsageError("--artifact needs at least one --target GROUP")
        if args.target and not args.artifact:
            raise b.BundleUsageError("--target goes with --artifact")
        res = b.export_bundle(
            _open_ctx(args),
            b.SigningRepo(args.repo),
            args.output,
            expires=b.parse_duration(args.expires),
            deployment_ids=args.deployment,
            artifact_names=args.artifact,
            groups=args.target,
            submeshes=args.submesh,
            name=args.name,
            force=args.force,
            org=args.org,
        )
        say(
            f"bundle {res.bundle_id} v{res.version}: {res.artifacts} artifact(s), {res.deployments} "
            f"deployment(s) -> {res.path}"
        )
        return 0
    if args.command == "import":
        plan = b.import_bundle(
            args.bundle, args.trust, _open_ctx(args), dry_run=args.dry_run, say=say, org=args.org
        )
        say("")
        for line in plan.lines():
            say(line)
        if args.dry_run:
            say("dry run: nothing was imported")
        elif plan.nothing_to_do and not any(a.state == "relocated" for a in plan.artifacts):
            say("already imported: nothing to do")
        return 0
    if args.command == "status-export":
        version, count = b.status_export(
            _open_ctx(args),
            args.trust,
            b.SigningRepo(args.repo),
            args.output,
            site=args.site,
            since=b.parse_since(args.since),
            expires=b.parse_duration(args.expires),
            org=args.org,
        )
        say(f"status bundle v{version}: {count} status record(s) -> {args.output}")
        return 0
    if args.command == "status-import":
        landing = b.status_import(args.bundle, args.trust, _open_ctx(args), say=say, org=args.org)
        say(landing.line())
        return 0
    raise b.BundleUsageError(f"unknown command {args.command!r}")
