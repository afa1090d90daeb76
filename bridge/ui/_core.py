"""The UI's plumbing: the session cookie, CSRF, calling the management API, rendering.

The UI holds no authority of its own. The browser keeps the user's JWT (from useradm's login route)
in an ``HttpOnly; SameSite=Strict`` cookie scoped to ``/ui``; every page and action turns into
requests to the management API's routing table, in process, with that token as the bearer, so
the route's permission check, tenant scope and audit apply exactly as for any API client. What
the user may do (to show or hide buttons) is read from the same roles the API checks, and the API
refuses anyway.

CSRF: besides ``SameSite=Strict``, every state-changing form carries a token derived from the
session (HMAC of the JWT under the server secret); a POST without the right one is refused (403).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import jinja2

from bridge.api import ApiContext, ApiError, Request, Response, Router
from bridge.api._auth import require_user
from bridge.service import PERMISSIONS, Denied, Principal, authorize

__all__ = ["COOKIE", "Session", "Ui", "UiError", "check_origin", "form_of", "html_response", "redirect"]

COOKIE = "meshota_ui"
_HERE = Path(__file__).parent
# no inline script or style anywhere: a value that slipped past escaping still cannot run
_SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
    ("X-Frame-Options", "DENY"),
]


class UiError(Exception):
    """An API refusal the UI shows as a page (status and the API's message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    principal: Principal
    csrf: str
    can: frozenset[str]  # permissions held (on some devices at least)
    request: Request = field(repr=False)

    @property
    def user(self) -> str:
        return self.principal.name


def html_response(body: str, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(
        status,
        [("Content-Type", "text/html; charset=utf-8"), *_SECURITY_HEADERS, *headers],
        body.encode(),
    )


def redirect(location: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(303, [("Location", location), *_SECURITY_HEADERS, *headers])


def form_of(req: Request) -> dict[str, str]:
    """An urlencoded form body: each field's first value."""
    if not req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise ApiError(415, "expected a form (application/x-www-form-urlencoded)")
    try:
        parsed = parse_qs(req.body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "malformed form") from None
    return {k: v[0] for k, v in parsed.items()}


def check_origin(req: Request) -> None:
    """A POST whose browser names another site as its origin is refused (403), the login form's
    included (it has no session to carry a CSRF token). The host is compared, not the scheme: a
    TLS-terminating proxy in front changes the scheme the server sees."""
    origin = req.headers.get("origin")
    if origin is None:
        return  # not a browser, or an old one: the CSRF token and SameSite still apply
    host = req.base_url.partition("://")[2]
    if origin == "null" or urlsplit(origin).netloc != host:
        raise ApiError(403, "cross-site request refused")


def cookie_value(req: Request, name: str = COOKIE) -> str | None:
    for part in req.headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


def _money(n: object) -> str:
    """A byte count for people."""
    if not isinstance(n, int | float):
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


class Ui:
    """Everything a UI handler needs: the API's router, its context, the templates."""

    def __init__(self, api: Router[ApiContext]) -> None:
        self.api = api
        self.ctx: ApiContext = api.context
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,  # every value is escaped unless a template says otherwise (none does)
            undefined=jinja2.ChainableUndefined,  # an API field left out renders empty, never a 500
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["bytes"] = _money
        self.env.filters["qs"] = lambda d: urlencode({k: v for k, v in d.items() if v not in (None, "")})
        self.env.filters["pathq"] = lambda s: quote(str(s), safe="")

    # -- session ------------------------------------------------------------------------------
    def csrf_of(self, token: str) -> str:
        return hmac.new(self.ctx.secret, b"ui-csrf\x00" + token.encode(), hashlib.sha256).hexdigest()[:40]

    async def session(self, req: Request) -> Session | None:
        """The logged-in user behind the cookie (None: not logged in, or the token is no good)."""
        token = cookie_value(req)
        if token is None or len(token) > 4096:
            return None
        probe = Request("GET", req.path, headers={"authorization": f"Bearer {token}"})
        try:
            principal = await require_user(self.ctx, probe)
        except ApiError:
            return None
        can = set()
        for perm in PERMISSIONS:
            try:
                authorize(principal, perm)
            except Denied:
                continue
            can.add(perm)
        return Session(token, principal, self.csrf_of(token), frozenset(can), req)

    def check_csrf(self, session: Session, value: str | None) -> None:
        check_origin(session.request)
        if value is None or not hmac.compare_digest(value, session.csrf):
            raise ApiError(403, "missing or wrong CSRF token: reload the page and try again")

    # -- the management API, in process ------------------------------------------------------
    async def call(
        self,
        session: Session,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | list[str] | None] | None = None,
        body: object = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        stream: Any = None,
        ok: Iterable[int] = (200, 201, 204),
    ) -> Response:
        """The API's answer to ``method path`` as this user; an answer not in ``ok`` raises UiError."""
        q: dict[str, list[str]] = {}
        for k, v in (query or {}).items():
            if v is None or v == "":
                continue
            q[k] = list(v) if isinstance(v, list) else [v]
        headers = {"authorization": f"Bearer {session.token}"}
        data = b""
        if raw is not None:
            data = raw
            headers["content-type"] = content_type
        elif body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        outer = session.request
        request = Request(
            method=method,
            path=path,
            query=q,
            headers=headers,
            body=data,
            base_url=outer.base_url,
            request_id=uuid.uuid4().hex,
            body_stream=stream,
            client=outer.client,
        )
        response = await self.api.handle(request)
        if response.status not in set(ok):
            raise UiError(response.status, _message(response))
        return response

    async def get_json(self, session: Session, path: str, **query: str | list[str] | None) -> Any:
        return (await self.call(session, "GET", path, query=query)).json()

    # -- pages ----------------------------------------------------------------------------------
    def render(self, name: str, session: Session | None, http_status: int = 200, **values: Any) -> Response:
        template = self.env.get_template(name)
        values.setdefault("nav", "")
        page = template.render(session=session, msg=values.pop("msg", None), **values)
        return html_response(page, http_status)

    def error_page(self, session: Session | None, status: int, message: str) -> Response:
        return self.render("error.html", session, http_status=status, status_code=status, message=message)


def _message(response: Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status}"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return f"HTTP {response.status}"
