"""Handler wrappers (session, CSRF, errors as pages), login/logout, static files."""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from bridge.api import ApiError, Request, Response

from ._core import COOKIE, Session, Ui, UiError, check_origin, form_of, html_response, redirect

__all__ = ["action", "login_form", "login_submit", "logout", "static", "view"]

View = Callable[[Ui, Session, Request], Awaitable[Response]]
Action = Callable[[Ui, Session, Request, dict[str, str]], Awaitable[Response]]
Handler = Callable[[Ui, Request], Awaitable[Response]]
_STATIC = Path(__file__).parent / "static"
_STATIC_FILES = {p.name: p for p in _STATIC.iterdir() if p.is_file()} if _STATIC.is_dir() else {}


def _to_login(req: Request) -> Response:
    return redirect("/ui/login?next=" + quote(req.path, safe="/"))


def _refused(ui: Ui, session: Session | None, req: Request, status: int, message: str) -> Response:
    if status == 401:
        return _to_login(req)
    return ui.error_page(session, status, message)


def view(fn: View) -> Handler:
    """A page: logged in, or sent to the login page; API refusals render as an error page."""

    async def handler(ui: Ui, req: Request) -> Response:
        session = await ui.session(req)
        if session is None:
            return _to_login(req)
        try:
            return await fn(ui, session, req)
        except UiError as exc:
            return _refused(ui, session, req, exc.status, exc.message)
        except ApiError as exc:
            return _refused(ui, session, req, exc.status, exc.message)

    return handler


def action(fn: Action) -> Handler:
    """A form POST: logged in, the session's CSRF token in the form, then the API call(s)."""

    async def handler(ui: Ui, req: Request) -> Response:
        session = await ui.session(req)
        if session is None:
            return Response(401, [("Content-Type", "text/plain")], b"not logged in")
        try:
            form = form_of(req)
            ui.check_csrf(session, form.get("csrf"))
            return await fn(ui, session, req, form)
        except UiError as exc:
            return _refused(ui, session, req, exc.status, exc.message)
        except ApiError as exc:
            return ui.error_page(session, exc.status, exc.message)

    return handler


def _safe_next(value: str | None) -> str:
    """Only a path of this UI (no open redirect)."""
    if value and value.startswith("/ui/") and "//" not in value and "\\" not in value:
        return value
    return "/ui/"


async def login_form(ui: Ui, req: Request) -> Response:
    return ui.render("login.html", None, next=_safe_next(req.query_one("next")), error=None)


async def login_submit(ui: Ui, req: Request) -> Response:
    """useradm's login route with the form's name and password; its JWT becomes the cookie."""
    try:
        check_origin(req)
        form = form_of(req)
    except ApiError as exc:
        return ui.error_page(None, exc.status, exc.message)
    email, password = form.get("email", ""), form.get("password", "")
    basic = base64.b64encode(f"{email}:{password}".encode()).decode()
    login = Request(
        "POST",
        "/api/management/v1/useradm/auth/login",
        headers={"authorization": f"Basic {basic}"},
        base_url=req.base_url,
        client=req.client,
    )
    answer = await ui.api.handle(login)
    nxt = _safe_next(form.get("next"))
    if answer.status != 200:
        error = "Wrong user name or password." if answer.status == 401 else "Login refused: try again later."
        page = ui.render("login.html", None, http_status=answer.status, next=nxt, error=error)
        return page
    token = answer.body.decode()
    secure = "; Secure" if req.base_url.startswith("https:") else ""
    cookie = f"{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict{secure}"
    return redirect(nxt, [("Set-Cookie", cookie)])


async def logout(ui: Ui, req: Request) -> Response:
    # a POST from this site only (SameSite=Strict); it only forgets the cookie
    expired = f"{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
    return redirect("/ui/login", [("Set-Cookie", expired)])


async def static(ui: Ui, req: Request) -> Response:
    name = req.path_params["name"]
    path = _STATIC_FILES.get(name)
    if path is None:
        return html_response("not found", 404)
    data = path.read_bytes()
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype == "application/javascript":
        ctype += "; charset=utf-8"
    etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
    headers = [
        ("Content-Type", ctype),
        ("Cache-Control", "public, max-age=3600"),
        ("ETag", etag),
        ("X-Content-Type-Options", "nosniff"),
    ]
    return Response(200, headers, data)
