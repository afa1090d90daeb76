"""Fixtures every test folder may use.

``mosquitto``: a real broker on a free loopback port, started and stopped per test.
``db``: runs a test once on SQLite (a file in tmp_path) and once on PostgreSQL (its own schema,
dropped afterwards; see tests/support/mender.py for the server it expects).
``running``: the device-management server (HTTP adapter) on ``db``, with an admin token.

Fixtures live in conftest.py files only; plain helpers live in ``tests/support/`` and are
imported as ``from tests.support.X import ...``. The database fixtures import the server lazily,
so a test run that needs no server does not import it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.broker import Mosquitto, start_test_mosquitto

if TYPE_CHECKING:
    from tests.support.mender import Db, RunningServer


@pytest.fixture(autouse=True, scope="session")
def default_organisation() -> Iterator[None]:
    """Test code that opens a Store itself acts in the default organisation (every statement on
    a tenant table needs one: bridge/store/_tenancy.py). Servers started by a test run in their
    own threads and tasks, so they never see this: their handlers scope every request themselves."""
    from bridge.store import DEFAULT_ORG_ID, tenant_scope

    with tenant_scope(DEFAULT_ORG_ID):
        yield


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    m = start_test_mosquitto(tmp_path / "mosquitto")
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    from tests.support.mender import Db, pg_schema, pg_url

    if request.param == "sqlite":
        yield Db(f"sqlite:///{tmp_path / 'meshota.sqlite'}", None, "sqlite")
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    pg_schema("create", schema)
    try:
        yield Db(pg_url(), schema, "postgresql")
    finally:
        pg_schema("drop", schema)


@pytest.fixture
def running(db: Db, tmp_path: Path) -> Iterator[RunningServer]:
    from tests.support.mender import RunningServer, admin_token, start_server

    server = start_server(db, tmp_path)
    try:
        yield RunningServer(server, server.url, admin_token(server), tmp_path / "artifacts")
    finally:
        server.stop()
