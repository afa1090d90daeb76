"""The admin UI over plain HTTP (no browser): sessions, CSRF, permissions, tenants, escaping.

One server per module (SQLite), users in two organisations (tests/support/ui.py). The browser
scenario is test_ui_browser.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import markupsafe
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.mender import make_artifact, write_keys
from tests.support.ui import (
    ADMIN,
    ADMIN_B,
    OBSERVER,
    Device,
    UiFleet,
    add_devices,
    check_in,
    csrf_of,
    post_mesh_report,
    report,
    report_inventory,
    stream_of,
    ui_login,
)
from wire.mesh_report import MeshNode, MeshReport, encode_mesh_report


@pytest.fixture(scope="module")
def devices(fleet: UiFleet) -> list[Device]:
    return add_devices(fleet, 3, group="canary", prefix="a-")


PAGES = ["/ui/", "/ui/devices", "/ui/mesh", "/ui/artifacts", "/ui/deployments", "/ui/users"]


def test_pages_need_a_login_and_set_a_strict_httponly_cookie(fleet: UiFleet) -> None:
    with httpx.Client(base_url=fleet.url, follow_redirects=False) as anon:
        for page in [*PAGES, "/ui/audit", "/ui/deployments/new"]:
            r = anon.get(page)
            assert r.status_code == 303 and r.headers["location"].startswith("/ui/login"), page
        # a bad password shows the login page again, no cookie
        r = anon.post("/ui/login", data={"email": ADMIN[0], "password": "wrong-password"})
        assert r.status_code == 401 and "set-cookie" not in r.headers
        assert "Wrong user name or password" in r.text
        # a forged cookie is no session
        anon.cookies.set("meshota_ui", "eyJhbGciOiJIUzI1NiJ9.e30.AAAA", path="/ui")
        assert anon.get("/ui/").status_code == 303
        # no open redirect through next=
        r = anon.post("/ui/login", data={"email": ADMIN[0], "password": ADMIN[1], "next": "//evil.example/"})
        assert r.headers["location"] == "/ui/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert httpx.get(f"{fleet.url}/ui", follow_redirects=False).headers["location"] == "/ui/"


def test_every_page_renders_for_the_admin_with_a_strict_csp(fleet: UiFleet, devices: list[Device]) -> None:
    with ui_login(fleet.url, ADMIN) as ui:
        for page in [*PAGES, "/ui/audit", "/ui/deployments/new", f"/ui/devices/{devices[0].id}"]:
            r = ui.get(page)
            assert r.status_code == 200, (page, r.text[-400:])
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert "<script>" not in r.text  # no inline script anywhere
        dash = ui.get("/ui/").text
        assert "3</strong> accepted" in dash and "release-1" in dash
        listing = ui.get("/ui/devices", params={"group": "canary"}).text
        assert all(d.id in listing for d in devices) and "3 devices match" in listing
        assert "canary" in ui.get("/ui/mesh").text
        assert ui.get("/ui/static/nope.js").status_code == 404


def test_a_post_without_the_sessions_csrf_token_is_refused(fleet: UiFleet, devices: list[Device]) -> None:
    with ui_login(fleet.url, ADMIN) as ui:
        target = f"/ui/devices/{devices[2].id}/group"
        for token in (None, "0" * 40):
            data = {"group": "moved"} if token is None else {"group": "moved", "csrf": token}
            r = ui.post(target, data=data)
            assert r.status_code == 403 and "CSRF" in r.text
        page = ui.get(f"/ui/devices/{devices[2].id}").text
        assert "moved" not in page
        r = ui.post(target, data={"group": "canary", "csrf": csrf_of(page), "old_group": "canary"})
        assert r.status_code == 303


def test_a_read_only_user_sees_no_write_button_and_a_forged_post_is_refused(
    fleet: UiFleet, devices: list[Device]
) -> None:
    with ui_login(fleet.url, ADMIN) as admin_ui:
        admin_page = admin_ui.get(f"/ui/devices/{devices[1].id}").text
    assert "Decommission" in admin_page and 'name="csrf"' in admin_page
    with ui_login(fleet.url, OBSERVER) as ui:
        pages = {p: ui.get(p) for p in [*PAGES, f"/ui/devices/{devices[1].id}"]}
        for page, r in pages.items():
            assert r.status_code == 200, page
            text = r.text
            assert 'method="post" action="/ui/logout"' in text
            # the only form that changes anything is the logout form
            assert text.count('method="post"') == 1, page
            assert "New deployment" not in text and 'id="upload"' not in text
        assert "Audit" not in pages["/ui/"].text.split("</nav>")[0]  # no audit:read, no link
        assert ui.get("/ui/audit").status_code == 403
        # a forged POST carrying the observer's own valid CSRF token (no page hands it one: derive
        # it as the server does), so only the API's permission check stands in the way
        session_token = ui.cookies.get("meshota_ui")
        assert session_token is not None
        own = hmac.new(fleet.server.context.secret, b"ui-csrf\x00" + session_token.encode(), hashlib.sha256)
        for path, data in (
            (f"/ui/devices/{devices[1].id}/decommission", {}),
            (f"/ui/devices/{devices[1].id}/group", {"group": "x"}),
            (
                "/ui/users",
                {"email": "evil@example.com", "password": "12345678", "roles": "RBAC_ROLE_PERMIT_ALL"},
            ),
        ):
            r = ui.post(path, data={**data, "csrf": own.hexdigest()[:40]})
            assert r.status_code == 403, (path, r.status_code)
            assert "not granted" in r.text
    with fleet.api() as api:
        assert api.get(f"/api/management/v2/devauth/devices/{devices[1].id}").status_code == 200
        assert "evil@example.com" not in api.get("/api/management/v1/useradm/users").text


def test_a_user_of_organisation_b_never_sees_a(fleet: UiFleet, devices: list[Device]) -> None:
    b_devices = add_devices(fleet, 1, group="b-only", admin=ADMIN_B, tenant=fleet.tenant_b_token, prefix="b-")
    with ui_login(fleet.url, ADMIN_B) as ui:
        text = "".join(ui.get(p).text for p in [*PAGES, "/ui/audit"])
        assert b_devices[0].id in text and "b-only" in text
        for d in devices:
            assert d.id not in text
        assert "canary" not in text and ADMIN[0] not in text
        r = ui.get(f"/ui/devices/{devices[0].id}")
        assert r.status_code == 404 and devices[0].mac not in r.text
    with ui_login(fleet.url, ADMIN) as ui:
        text = "".join(ui.get(p).text for p in [*PAGES, "/ui/audit"])
        assert b_devices[0].id not in text and "b-only" not in text and ADMIN_B[0] not in text


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.handlers: list[tuple[str, str]] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs).get("src"))
        if tag in ("img", "iframe", "svg", "object"):
            self.images += 1
        self.handlers += [(tag, k) for k, _ in attrs if k.startswith("on")]


_NASTY = st.sampled_from(
    [
        "<script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "'><svg onload=alert(1)>",
        "</td></tr></table><iframe src=//evil>",
        "{{ 7*7 }}{% raw %}",
        "javascript:alert(1)",
    ]
)
_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(_NASTY, _TEXT, st.tuples(_TEXT, _NASTY).map("".join)))
def test_inventory_values_are_escaped_everywhere(fleet: UiFleet, devices: list[Device], value: str) -> None:
    dev = devices[0]
    report_inventory(fleet.url, dev, {"note": value, "artifact_name": value})
    with ui_login(fleet.url, ADMIN) as ui:
        for page in (f"/ui/devices/{dev.id}", "/ui/", "/ui/devices?group=canary"):
            text = ui.get(page).text
            tags = _Tags()
            tags.feed(text)
            assert tags.scripts == ["/ui/static/ui.js"], page
            assert tags.handlers == [] and tags.images == 0, page
            # the value is on the page, as text (markupsafe is what the templates escape with)
            assert str(markupsafe.escape(value)) in text, page
    report_inventory(fleet.url, dev, {"artifact_name": "release-1"})


def test_the_csv_export_and_static_assets(fleet: UiFleet, tmp_path: Path) -> None:
    with ui_login(fleet.url, ADMIN) as ui:
        r = ui.get("/ui/audit/export.csv", params={"action": "device.auth_status"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.text.startswith("seq,time,") and "device.auth_status" in r.text
        js = ui.get("/ui/static/ui.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]


def test_a_post_from_another_origin_is_refused_login_included(fleet: UiFleet, devices: list[Device]) -> None:
    evil = {"Origin": "http://evil.example"}
    with httpx.Client(base_url=fleet.url, follow_redirects=False) as anon:
        r = anon.post("/ui/login", data={"email": ADMIN[0], "password": ADMIN[1]}, headers=evil)
        assert r.status_code == 403 and "set-cookie" not in r.headers
        same = {"Origin": fleet.url}
        assert (
            anon.post("/ui/login", data={"email": ADMIN[0], "password": ADMIN[1]}, headers=same).status_code
            == 303
        )
    with ui_login(fleet.url, ADMIN) as ui:
        page = ui.get(f"/ui/devices/{devices[2].id}").text
        data = {"group": "moved-by-evil", "csrf": csrf_of(page)}
        r = ui.post(f"/ui/devices/{devices[2].id}/group", data=data, headers=evil)
        assert r.status_code == 403 and "cross-site" in r.text
        assert "moved-by-evil" not in ui.get(f"/ui/devices/{devices[2].id}").text


def test_the_ui_can_be_left_out(tmp_path: Path) -> None:
    from bridge.http import BackgroundServer, ServerConfig

    config = ServerConfig(
        db_url=f"sqlite:///{tmp_path / 'x.sqlite'}", artifacts_dir=tmp_path / "a", port=0, ui=False
    )
    with BackgroundServer(config) as server:
        assert httpx.get(f"{server.url}/ui/login").status_code == 404
        assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_a_deployment_page_shows_device_status_and_the_escaped_log(
    fleet: UiFleet, devices: list[Device], tmp_path: Path
) -> None:
    artifact = make_artifact(tmp_path, "release-log")
    with fleet.api() as api:
        files = {"artifact": ("a.mender", artifact.read_bytes(), "application/octet-stream")}
        assert api.post("/api/management/v1/deployments/artifacts", files=files).status_code == 201
    with ui_login(fleet.url, ADMIN) as ui:
        form = csrf_of(ui.get("/ui/deployments/new").text)
        body = {"csrf": form, "name": "with a log", "artifact_name": "release-log", "target": "group:canary"}
        r = ui.post("/ui/deployments", data=body)
        assert r.status_code == 303, r.text
        dep_page = r.headers["location"].split("?")[0]
        dep = dep_page.rsplit("/", 1)[-1]
        dev = devices[0]
        assert check_in(fleet.url, dev) == dep
        report(fleet.url, dev, dep, "failure")
        messages = [
            {"timestamp": "2026-01-01T00:00:00Z", "level": "error", "message": "<script>x()</script> failed"}
        ]
        r = httpx.put(
            f"{fleet.url}/api/devices/v1/deployments/device/deployments/{dep}/log",
            json={"messages": messages},
            headers={"Authorization": f"Bearer {dev.token}"},
        )
        assert r.status_code == 204, r.text
        page = ui.get(dep_page).text
        assert "failure" in page and f"/ui/deployments/{dep}/devices/{dev.id}/log" in page
        progress = ui.get(f"{dep_page}/progress").text  # the fragment the page polls
        assert progress.startswith('<div id="progress"') and "failure" in progress
        log = ui.get(f"/ui/deployments/{dep}/devices/{dev.id}/log").text
        assert "&lt;script&gt;x()&lt;/script&gt; failed" in log and "<script>x()" not in log
        # abort through the UI (not phased: Mender's abort)
        csrf = csrf_of(page)
        assert ui.post(f"{dep_page}/abort", data={"csrf": csrf, "phased": "0"}).status_code == 303
        assert "finished" in ui.get(dep_page).text


def test_save_a_filter_for_deployments_and_delete_an_artifact(
    fleet: UiFleet, devices: list[Device], tmp_path: Path
) -> None:
    keys = write_keys(tmp_path / "keys")
    with fleet.api() as api:
        for artifact in (
            make_artifact(tmp_path, "to-delete"),
            make_artifact(tmp_path, "vendor-signed", key=keys["ecdsa-private"]),
        ):
            files = {"artifact": ("a.mender", artifact.read_bytes(), "application/octet-stream")}
            assert api.post("/api/management/v1/deployments/artifacts", files=files).status_code == 201
    with ui_login(fleet.url, ADMIN) as ui:
        listing = ui.get("/ui/devices", params={"group": "canary"}).text
        assert "Save filter" in listing
        data = {"csrf": csrf_of(listing), "group": "canary", "attr": "", "value": "", "name": "canary-dyn"}
        assert ui.post("/ui/filters", data=data).status_code == 303
        assert "filter canary-dyn" in ui.get("/ui/deployments/new").text
        page = ui.get("/ui/artifacts").text
        # the signature state: recorded (this server has no verification key configured)
        assert re.search(r"<td>vendor-signed</td><td>[^<]*</td><td>signed</td>", page)
        assert re.search(r"<td>to-delete</td><td>[^<]*</td><td>unsigned</td>", page)
        assert "no verification keys configured" in page
        (art,) = [
            a
            for a in fleet.api().get("/api/management/v1/deployments/artifacts").json()
            if a["name"] == "to-delete"
        ]
        assert f"/ui/artifacts/{art['id']}/delete" in page
        assert ui.post(f"/ui/artifacts/{art['id']}/delete", data={"csrf": csrf_of(page)}).status_code == 303
        assert "to-delete" not in ui.get("/ui/artifacts").text
    with ui_login(fleet.url, OBSERVER) as ui:
        assert "Save filter" not in ui.get("/ui/devices", params={"group": "canary"}).text


def test_the_mesh_page_shows_roots_reports_as_an_escaped_tree(fleet: UiFleet, tmp_path: Path) -> None:
    root, relay, leaf = add_devices(fleet, 3, group="mesh-g", prefix="m-")
    name = 'mesh-<b>x&"q"'  # an artifact name is shown as text (no "/": it is a file name too)
    with fleet.api() as api:
        art = make_artifact(tmp_path, name)
        files = {"artifact": ("a.mender", art.read_bytes(), "application/octet-stream")}
        assert api.post("/api/management/v1/deployments/artifacts", files=files).status_code == 201
        r = api.post(
            "/api/management/v1/deployments/deployments/group/mesh-g",
            json={"name": "mesh", "artifact_name": name},
        )
        assert r.status_code == 201, r.text
        dep = r.headers["location"].rsplit("/", 1)[-1]
        aid = api.get(f"/api/management/v1/deployments/deployments/{dep}").json()["artifacts"][0]
    for d in (root, relay, leaf):
        assert check_in(fleet.url, d, "release-1") == dep
    sid = stream_of(fleet.url, root, aid)

    def rep(nodes: list[tuple[str, int, int]], on_air: int) -> bytes:
        listed = tuple(MeshNode(*n) for n in nodes)
        return encode_mesh_report(MeshReport(sid, aid, "x", 0, 3, 80, on_air, 99, len(listed), listed))

    assert (
        post_mesh_report(fleet.url, root, rep([(relay.id, 0, 20), (root.id, 1, 0)], 123456)).status_code
        == 204
    )
    assert post_mesh_report(fleet.url, relay, rep([(leaf.id, 0, 80)], 7777)).status_code == 204
    for user in (ADMIN, OBSERVER):
        with ui_login(fleet.url, user) as ui:
            page = ui.get("/ui/mesh").text
        assert "<b>x" not in page and str(markupsafe.escape(name)) in page
        assert f"reported by root {root.id}" in page and f"reported by root {relay.id}" in page
        assert "123456 bytes in 99 frames on air" in page and "7777 bytes" in page
        assert f'aria-label="{relay.id}: blocks held"' in page and 'max="80" value="60"' in page
        assert "20 missing" in page and "80 missing" in page
        # the relay's own report hangs under the relay's entry in the root's report
        relay_entry = page.split(f'title="{relay.id}"', 1)[1]
        assert relay_entry.index(f"reported by root {relay.id}") < relay_entry.index(f'title="{leaf.id}"')
    with ui_login(fleet.url, ADMIN_B) as ui_b:
        page_b = ui_b.get("/ui/mesh").text
    assert root.id not in page_b and "No root has reported a stream yet." in page_b
