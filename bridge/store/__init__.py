"""The database: SQLAlchemy Core tables, async engine, Alembic migrations.

SQLite file by default (``sqlite:///path``); PostgreSQL by URL (``postgresql://...``, asyncpg).
"""

from . import _tables as tables
from ._engine import Store, StoreConfigError, normalize_url

__all__ = ["Store", "StoreConfigError", "normalize_url", "tables"]
