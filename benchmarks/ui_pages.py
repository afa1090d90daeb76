"""Admin UI pages with a large fleet (issue 17): server time per page, bytes sent, first render.

An in-process server (bridge.http.BackgroundServer) on SQLite with ``--devices`` accepted devices
(default 10,000: inventory device_type, artifact_name in 5 versions, 20 groups), seeded straight
into the database (the device API would take minutes to enrol them; the pages only read).

For each page, ``--repeat`` requests over one keep-alive connection:

* server time: measured inside the process (an observer on the UI's router and on the API's
  router: the handler's time, without the client and the socket);
* bytes: the response body sent;
* the baseline in the same run: the management API's JSON call(s) that give the same data (the
  dashboard's counts: ``fleet/summary``; the device list: the inventory page + the devauth
  statuses of its ids), so the ratio is what the HTML costs over the API it is built on.

Then chromium (Playwright, /usr/bin/chromium) loads each page ``--repeat`` times, logged in:
first contentful paint and the load event, from the browser's own performance timeline.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/ui_pages.py [--devices 10000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.api import Settings, create_user  # noqa: E402
from bridge.http import BackgroundServer, ServerConfig  # noqa: E402
from bridge.store import DEFAULT_ORG_ID, tenant_scope  # noqa: E402
from bridge.store import tables as t  # noqa: E402

ADMIN = ("bench-ui@example.com", "bench-password")
VERSIONS = ["release-1.0", "release-1.1", "release-1.2", "release-2.0", "release-2.1"]


async def _seed(server: BackgroundServer, count: int) -> None:
    ts = time.time()
    with tenant_scope(DEFAULT_ORG_ID):
        async with server.context.store.transaction() as conn:
            await create_user(conn, *ADMIN)
        for start in range(0, count, 2000):
            devices, sets, inv = [], [], []
            for i in range(start, min(count, start + 2000)):
                dev = str(uuid.uuid4())
                id_data = json.dumps({"mac": f"02:00:{i:08x}"}, separators=(",", ":"))
                # every 50th device is pending; every 40th accepted one went quiet two days ago
                status = "pending" if i % 50 == 0 else "accepted"
                seen = ts - 2 * 86400 if i % 40 == 0 else ts
                devices.append(
                    {
                        "id": dev,
                        "id_data_sha256": uuid.uuid4().hex + uuid.uuid4().hex,
                        "id_data": id_data,
                        "status": status,
                        "created_ts": ts + i * 1e-3,
                        "updated_ts": seen,
                    }
                )
                sets.append(
                    {
                        "id": str(uuid.uuid4()),
                        "device_id": dev,
                        "pubkey": f"key-{i}",
                        "status": status,
                        "ts": ts,
                    }
                )
                for scope, name, value in (
                    ("inventory", "device_type", "node-v1"),
                    ("inventory", "artifact_name", VERSIONS[i % len(VERSIONS)]),
                    ("system", "group", f"mesh-{i % 20:02d}"),
                ):
                    inv.append(
                        {"device_id": dev, "scope": scope, "name": name, "value": value, "updated_ts": ts}
                    )
            async with server.context.store.transaction() as conn:
                await conn.execute(sa.insert(t.devices), devices)
                await conn.execute(sa.insert(t.auth_sets), sets)
                await conn.execute(sa.insert(t.inventory), inv)


class Timings:
    """Handler seconds per route pattern, from the routers' observers."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def observe(self, pattern: str, method: str, status: int, transport: str, seconds: float) -> None:
        self.seconds.setdefault(pattern, []).append(seconds)

    def take(self) -> dict[str, list[float]]:
        out, self.seconds = self.seconds, {}
        return out


def _measure(client: httpx.Client, timings: Timings, path: str, repeat: int, **kw: Any) -> tuple[float, int]:
    """(median server ms of the outermost handler, bytes of the body) for ``path``."""
    per_request: list[float] = []
    size = 0
    for _ in range(repeat):
        timings.take()
        r = client.get(path, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        size = len(r.content)
        recorded = timings.take()
        # the outermost handler: the UI route when it is a page, else the sum of API calls
        ui = [s for pattern, xs in recorded.items() if pattern.startswith("/ui/") for s in xs]
        per_request.append(sum(ui) if ui else sum(s for xs in recorded.values() for s in xs))
    return statistics.median(per_request) * 1000, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        config = ServerConfig(
            db_url=f"sqlite:///{tmp}/ui.sqlite",
            artifacts_dir=Path(tmp) / "artifacts",
            port=0,
            settings=Settings(),
        )
        with BackgroundServer(config) as server:
            began = time.perf_counter()
            server.run_coroutine(_seed(server, args.devices))
            print(f"seeded {args.devices} devices in {time.perf_counter() - began:.1f} s")
            timings = Timings()
            assert server.app.router is not None and server.app.ui is not None
            server.app.router.observers.append(timings.observe)
            server.app.ui.observers.append(timings.observe)
            token = httpx.post(f"{server.url}/api/management/v1/useradm/auth/login", auth=ADMIN).text
            api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            ui = httpx.Client(base_url=server.url, timeout=60)
            ui.post("/ui/login", data={"email": ADMIN[0], "password": ADMIN[1], "next": "/ui/"})

            ids = [
                d["id"]
                for d in api.get("/api/management/v1/inventory/devices", params={"per_page": 50}).json()
            ]
            rows: list[tuple[str, float, int, str, float, int]] = []
            pages = [
                ("dashboard", "/ui/", [("/api/meshota/v1/management/fleet/summary", {})]),
                (
                    "devices p1",
                    "/ui/devices",
                    [
                        ("/api/management/v1/inventory/devices", {"per_page": 50}),
                        ("/api/management/v2/devauth/devices", {"id": ids, "per_page": 50}),
                        ("/api/management/v1/inventory/groups", {}),
                    ],
                ),
                (
                    "devices p150",
                    "/ui/devices?page=150",
                    [
                        ("/api/management/v1/inventory/devices", {"per_page": 50, "page": 150}),
                        ("/api/management/v2/devauth/devices", {"id": ids, "per_page": 50}),
                        ("/api/management/v1/inventory/groups", {}),
                    ],
                ),
                (
                    "devices group",
                    "/ui/devices?group=mesh-07",
                    [
                        ("/api/management/v1/inventory/devices", {"per_page": 50, "group": "mesh-07"}),
                        ("/api/management/v2/devauth/devices", {"id": ids, "per_page": 50}),
                        ("/api/management/v1/inventory/groups", {}),
                    ],
                ),
                (
                    # with a status filter the page lists devauth's page, then each device's inventory
                    "devices status",
                    "/ui/devices?status=accepted",
                    [
                        ("/api/management/v2/devauth/devices", {"status": "accepted", "per_page": 50}),
                        ("/api/management/v1/inventory/groups", {}),
                    ],
                ),
            ]
            for name, path, baseline in pages:
                ms, size = _measure(ui, timings, path, args.repeat)
                base_ms, base_size = 0.0, 0
                for api_path, params in baseline:
                    m, s = _measure(api, timings, api_path, args.repeat, params=params)
                    base_ms += m
                    base_size += s
                rows.append(
                    (name, ms, size, "+".join(p.rsplit("/", 1)[-1] for p, _ in baseline), base_ms, base_size)
                )
            head = ("page", "server ms", "bytes", "JSON baseline", "ms", "bytes", "ratio")
            print("\n{:<15} {:>10} {:>8}   {:<24} {:>8} {:>8} {:>6}".format(*head))
            for name, ms, size, base, base_ms, base_size in rows:
                ratio = ms / base_ms
                cells = (name, ms, size, base, base_ms, base_size, ratio)
                print("{:<15} {:>10.1f} {:>8}   {:<24} {:>8.1f} {:>8} {:>6.2f}".format(*cells))
            if not args.no_browser:
                _browser(server.url, [p for _, p, _ in pages], args.repeat)


def _browser(url: str, paths: list[str], repeat: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(base_url=url)
        page.goto("/ui/login")
        page.get_by_label("User name").fill(ADMIN[0])
        page.get_by_label("Password").fill(ADMIN[1])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(lambda u: u.endswith("/ui/") and "?" not in u)
        note = f"(median of {repeat}, logged in, cache warm)"
        print(f"\n{'chromium':<26} {'first paint ms':>15} {'load ms':>9}   {note}")
        for path in paths:
            fcp, load = [], []
            for _ in range(repeat):
                page.goto(path, wait_until="load")
                timing = page.evaluate(
                    """() => new Promise(resolve => {
                        const nav = performance.getEntriesByType('navigation')[0];
                        new PerformanceObserver(list => {
                            const e = list.getEntriesByName('first-contentful-paint')[0];
                            if (e) resolve([e.startTime, nav.loadEventEnd]);
                        }).observe({type: 'paint', buffered: true});
                        setTimeout(() => resolve([-1, nav.loadEventEnd]), 2000);
                    })"""
                )
                fcp.append(timing[0])
                load.append(timing[1])
            print(f"{path:<26} {statistics.median(fcp):>15.0f} {statistics.median(load):>9.0f}")
        browser.close()


if __name__ == "__main__":
    main()
