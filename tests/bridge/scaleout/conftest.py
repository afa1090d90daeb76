"""Several bridge workers on one PostgreSQL database and one broker (issue 20).

``pg_db``: a schema of its own on the test PostgreSQL (127.0.0.1:5432, database ``test``; set
``MESHOTA_TEST_PG_URL`` to use another server), dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.mender import Db, pg_schema, pg_url


@pytest.fixture
def pg_db() -> Iterator[Db]:
    schema = f"w_{uuid.uuid4().hex[:16]}"
    pg_schema("create", schema)
    try:
        yield Db(pg_url(), schema, "postgresql")
    finally:
        pg_schema("drop", schema)
