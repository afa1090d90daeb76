"""The admin UI in a real browser: Playwright driving Debian's chromium (``/usr/bin/chromium``;
scripts/setup.sh installs it; a browser download is never needed).

One server and one browser for the module. The scenario: log in, upload an artifact made by the
real mender-artifact, create a phased deployment to a group, watch it progress (the page polls)
while devices report through the device API and the rollout ticker steps, pause it, find the
audit entry; a read-only user sees no write button and a forged POST is refused; a user of
organisation B never sees A. Every page is saved as a screenshot under test-output/ui/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mender import make_artifact
from tests.support.ui import (
    ADMIN,
    ADMIN_B,
    OBSERVER,
    Device,
    UiFleet,
    add_devices,
    check_in,
    post_mesh_report,
    report,
    stream_of,
    tick,
)
from wire.mesh_report import MeshNode, MeshReport, encode_mesh_report

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[3] / "test-output" / "ui"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed: apt-get install chromium (scripts/setup.sh does)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _login(
    browser: object, url: str, user: tuple[str, str], shot: str | None = None, *, keyboard: bool = False
) -> object:
    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto("/ui/")
    assert "/ui/login" in page.url
    if shot:
        page.screenshot(path=SHOTS / shot, full_page=True)
    if keyboard:  # the name field has the focus; Tab to the password, Enter submits
        # (autofocus is applied at a rendering step, which may come after "load": wait for it, or
        # the first keys go nowhere on a busy machine; a page without autofocus fails here)
        page.wait_for_function("document.activeElement && document.activeElement.id === 'email'")  # type: ignore[attr-defined]
        page.keyboard.type(user[0])
        page.keyboard.press("Tab")
        page.keyboard.type(user[1])
        page.keyboard.press("Enter")
    else:
        page.get_by_label("User name").fill(user[0])
        page.get_by_label("Password").fill(user[1])
        page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"^[^?]*/ui/$"))
    return page


def _shot(page: object, name: str) -> None:
    page.screenshot(path=SHOTS / name, full_page=True)  # type: ignore[attr-defined]


def test_release_scenario(fleet: UiFleet, browser: object, tmp_path: Path) -> None:
    expect = playwright_api.expect
    devices = add_devices(fleet, 4, group="fleet-a", prefix="a-")
    artifact = make_artifact(tmp_path, "release-2")
    page = _login(browser, fleet.url, ADMIN, shot="01-login.png")
    expect(page.get_by_text("accepted", exact=False).first).to_be_visible()
    _shot(page, "02-dashboard.png")

    # upload an artifact (XHR with a progress bar), then see it listed with its signature state
    page.get_by_role("link", name="Artifacts").click()
    page.get_by_label("Mender artifact (.mender)").set_input_files(str(artifact))
    page.get_by_label("Description").fill("made by mender-artifact")
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r".*/ui/artifacts\?msg=.*"))
    row = page.get_by_role("row", name=re.compile("release-2"))
    expect(row).to_contain_text("unsigned")
    _shot(page, "03-artifacts.png")

    # a phased deployment to the group: 25 % first (one device), then the rest
    page.get_by_role("link", name="Deployments").click()
    page.get_by_role("link", name="New deployment").click()
    page.get_by_label("Name", exact=True).fill("roll release-2")
    page.get_by_label("Artifact", exact=True).select_option("release-2")
    page.get_by_label("Devices", exact=True).select_option("group:fleet-a")
    page.get_by_label("Percentages of the devices").fill("25,rest")
    page.get_by_label("Success share").fill("1")
    page.get_by_label("Consent").select_option("automatic")
    _shot(page, "04-deployment-new.png")
    page.get_by_role("button", name="Create deployment").click()
    page.wait_for_url(re.compile(r".*/ui/deployments/[0-9a-f-]+\?msg=.*"))
    dep_url = page.url.split("?")[0]
    phases = page.locator("table.phases tbody tr")
    expect(phases).to_have_count(2)

    # devices check in: only the first phase's device is offered it; it reports success and the
    # page (polling every 2 s) shows it without a reload
    tick(fleet)
    offered: list[tuple[Device, str]] = []
    for d in devices:
        dep = check_in(fleet.url, d)
        if dep is not None:
            offered.append((d, dep))
    assert len(offered) == 1
    first, dep_id = offered[0]
    for status in ("downloading", "installing", "success"):
        report(fleet.url, first, dep_id, status)
    expect(phases.nth(0).locator("td").nth(5)).to_have_text("1", timeout=15_000)
    _shot(page, "05-deployment-phase1.png")

    # the gate opens phase 2; its devices start; the page follows
    assert (dep_id, "phase 2 opened") in tick(fleet)
    started = [d for d in devices if d is not first and check_in(fleet.url, d) == dep_id]
    assert len(started) == 3
    report(fleet.url, started[0], dep_id, "downloading")
    expect(phases.nth(1).locator("td").nth(3)).to_have_text("yes", timeout=15_000)
    page.reload()  # the action buttons follow the rollout state on a full render

    # pause it
    page.get_by_role("button", name="Pause").click()
    page.wait_for_url(re.compile(r".*\?msg=.*"))
    expect(page.locator(".rollout-state")).to_have_text("paused")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    _shot(page, "06-deployment-paused.png")

    # the audit entry, by filter
    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Action").fill("rollout.pause")
    page.get_by_role("button", name="Filter").click()
    entry = page.get_by_role("row", name=re.compile("rollout.pause"))
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text(ADMIN[0])
    expect(entry).to_contain_text(dep_id)
    expect(page.get_by_role("link", name="Export as CSV")).to_be_visible()
    _shot(page, "07-audit.png")

    # the other pages, for the record
    page.get_by_role("link", name="Devices", exact=True).click()
    page.get_by_label("Group").select_option("fleet-a")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("main table tbody tr")).to_have_count(4)
    _shot(page, "08-devices.png")
    page.get_by_role("link", name=first.id).click()
    expect(page.get_by_role("heading", name="Deployment history")).to_be_visible()
    expect(page.get_by_role("row", name=re.compile("roll release-2"))).to_contain_text("success")
    _shot(page, "09-device.png")
    # the first device streams to the others and reports it (wire/SPEC.md §7): the mesh page draws it
    (aid,) = [
        a["id"]
        for a in fleet.api().get("/api/management/v1/deployments/artifacts").json()
        if a["name"] == "release-2"
    ]
    sid = stream_of(fleet.url, first, aid)
    listed = tuple(MeshNode(d.id, 0, 10 * i) for i, d in enumerate(started, 1))
    body = encode_mesh_report(MeshReport(sid, aid, "release-2", 0, 2, 64, 81_920, 90, 4, listed))
    assert post_mesh_report(fleet.url, first, body).status_code == 204
    page.get_by_role("link", name="Mesh").click()
    expect(page.locator(".node.root")).to_have_text("fleet-a")
    expect(page.locator(".node.reporter")).to_have_count(1)
    expect(page.locator("ul.report progress")).to_have_count(3)
    expect(page.locator(".airtime")).to_have_text("81920 bytes in 90 frames on air")
    _shot(page, "10-mesh.png")
    page.get_by_role("link", name="Users & tokens").click()
    _shot(page, "11-users.png")
    page.goto(dep_url)
    page.get_by_role("link", name="Dashboard").click()
    _shot(page, "12-dashboard-after.png")
    page.context.close()


def test_read_only_user_and_other_organisation(fleet: UiFleet, browser: object) -> None:
    page = _login(browser, fleet.url, OBSERVER, keyboard=True)
    # keyboard: the first Tab reaches the skip link, the next ones the navigation, Enter follows
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Devices"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/ui/devices$"))
    for path, name in (
        ("/ui/", "20-readonly-dashboard.png"),
        ("/ui/devices", "21-readonly-devices.png"),
        ("/ui/deployments", "22-readonly-deployments.png"),
        ("/ui/artifacts", "23-readonly-artifacts.png"),
    ):
        page.goto(path)
        # nothing the server would refuse is offered: the one POST form is "Log out", the other
        # buttons filter (GET)
        assert set(page.get_by_role("button").all_inner_texts()) <= {"Log out", "Filter"}, path
        assert page.locator("form[method=post]").count() == 1, path
        _shot(page, name)
    page.goto("/ui/deployments")
    dep = page.locator("main table tbody a").first
    if dep.count():  # the release scenario ran first: its deployment
        dep.click()
        assert set(page.get_by_role("button").all_inner_texts()) <= {"Log out", "Filter"}
        assert page.locator("form[method=post]").count() == 1
        _shot(page, "24-readonly-deployment.png")
    # a forged POST from the logged-in page (the session cookie goes with it) is refused
    answer = page.request.post(
        f"{fleet.url}/ui/users", form={"email": "x@example.com", "password": "12345678"}
    )
    assert answer.status == 403
    page.context.close()

    page = _login(browser, fleet.url, ADMIN_B)
    page.goto("/ui/devices")
    assert "fleet-a" not in page.content()
    expect = playwright_api.expect
    expect(page.get_by_text("0 devices match")).to_be_visible()
    _shot(page, "25-org-b-devices.png")
    page.goto("/ui/deployments")
    assert "roll release-2" not in page.content()
    page.context.close()
