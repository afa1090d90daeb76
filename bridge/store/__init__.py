"""The database: SQLAlchemy Core tables, async engine, Alembic migrations.

SQLite file by default (``sqlite:///path``); PostgreSQL by URL (``postgresql://...``, asyncpg).
"""

from . import _fleet_tables as fleet_tables
from . import _rollout_tables as rollout_tables
from . import _tables as tables
from ._engine import Batch, BatchFailed, Store, StoreConfigError, after_commit, normalize_url
from ._sealed_state import SealedRecordState

__all__ = [
    "Batch",
    "BatchFailed",
    "SealedRecordState",
    "Store",
    "StoreConfigError",
    "after_commit",
    "fleet_tables",
    "normalize_url",
    "rollout_tables",
    "tables",
]
