"""The database: SQLAlchemy Core tables, async engine, Alembic migrations.

SQLite file by default (``sqlite:///path``); PostgreSQL by URL (``postgresql://...``, asyncpg).
"""

from . import _tables as tables
from ._engine import Batch, BatchFailed, Store, StoreConfigError, after_commit, normalize_url

__all__ = ["Batch", "BatchFailed", "Store", "StoreConfigError", "after_commit", "normalize_url", "tables"]
