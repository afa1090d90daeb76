"""Audit log (filters, CSV), users, roles and personal access tokens."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from bridge.api import Request, Response
from bridge.service import PERMISSIONS

from ._core import Session, Ui, UiError, redirect
from ._pages import action, view

__all__ = [
    "audit",
    "audit_csv",
    "role_create",
    "token_create",
    "token_revoke",
    "user_create",
    "user_delete",
    "users",
]

_AUDIT = "/api/management/v1/auditlogs/logs"
_USERADM = "/api/management/v1/useradm"
_AUDIT_FILTERS = ("action", "object_type", "object_id", "actor_email")


def _audit_query(req: Request) -> dict[str, str | list[str] | None]:
    return {k: (req.query_one(k) or "").strip() or None for k in _AUDIT_FILTERS}


@view
async def audit(ui: Ui, s: Session, req: Request) -> Response:
    query = _audit_query(req)
    page = req.query_one("page") or "1"
    answer = await ui.call(s, "GET", _AUDIT, query={**query, "page": page, "per_page": "50"})
    total = int(answer.header("X-Total-Count") or 0)
    filters = {k: v or "" for k, v in query.items()}
    return ui.render(
        "audit.html",
        s,
        rows=answer.json(),
        total=total,
        page=int(page) if page.isdigit() else 1,
        filters=filters,
        nav="audit",
    )


@view
async def audit_csv(ui: Ui, s: Session, req: Request) -> Response:
    answer = await ui.call(s, "GET", f"{_AUDIT}/export", query=_audit_query(req))
    keep = [(k, v) for k, v in answer.headers if k.lower() in ("content-type", "content-disposition")]
    return Response(
        200, [*keep, ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store")], answer.body
    )


@view
async def users(ui: Ui, s: Session, req: Request) -> Response:
    people = await ui.get_json(s, f"{_USERADM}/users") if "users:read" in s.can else None
    roles = await ui.get_json(s, f"{_USERADM}/roles") if "users:read" in s.can else None
    tokens = await ui.get_json(s, f"{_USERADM}/settings/tokens") if "tokens:manage" in s.can else None
    return ui.render(
        "users.html",
        s,
        people=people,
        roles=roles,
        tokens=tokens,
        permissions=list(PERMISSIONS),
        new_token=None,
        nav="users",
        msg=req.query_one("msg"),
    )


def _back(msg: str) -> Response:
    return redirect("/ui/users?" + urlencode({"msg": msg}))


@action
async def user_create(ui: Ui, s: Session, req: Request, form: dict[str, str]) -> Response:
    roles = [r for r in form.get("roles", "").split(",") if r.strip()]
    body = {
        "email": form.get("email", ""),
        "password": form.get("password", ""),
        "roles": [r.strip() for r in roles],
    }
    await ui.call(s, "POST", f"{_USERADM}/users", body=body)
    return _back(f"User {body['email']} created.")


@action
async def user_delete(ui: Ui, s: Session, req: Request, form: dict[str, str]) -> Response:
    await ui.call(s, "DELETE", f"{_USERADM}/users/{quote(req.path_params['id'], safe='')}")
    return _back("User deleted.")


@action
async def role_create(ui: Ui, s: Session, req: Request, form: dict[str, str]) -> Response:
    perms = [p for p in PERMISSIONS if form.get(f"perm_{p}") == "on"]
    groups = [g.strip() for g in form.get("groups", "").split(",") if g.strip()]
    body = {
        "name": form.get("name", ""),
        "description": form.get("description", ""),
        "permissions": perms,
        "groups": groups,
    }
    await ui.call(s, "POST", f"{_USERADM}/roles", body=body)
    return _back(f"Role {body['name']} created.")


@action
async def token_create(ui: Ui, s: Session, req: Request, form: dict[str, str]) -> Response:
    raw_days = form.get("days", "30").strip() or "30"
    if not raw_days.isdigit():
        raise UiError(400, "days must be a whole number")
    body = {"name": form.get("name", ""), "expires_in": int(raw_days) * 86400}
    answer = await ui.call(s, "POST", f"{_USERADM}/settings/tokens", body=body)
    tokens = await ui.get_json(s, f"{_USERADM}/settings/tokens")
    # shown once, on this page only (never put in a URL)
    return ui.render(
        "users.html",
        s,
        people=None,
        roles=None,
        tokens=tokens,
        permissions=list(PERMISSIONS),
        new_token=answer.body.decode(),
        nav="users",
        msg="Token created: copy it now, it is not shown again.",
    )


@action
async def token_revoke(ui: Ui, s: Session, req: Request, form: dict[str, str]) -> Response:
    await ui.call(s, "DELETE", f"{_USERADM}/settings/tokens/{quote(req.path_params['id'], safe='')}")
    return _back("Token revoked.")
