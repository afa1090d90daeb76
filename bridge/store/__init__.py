"""The database: SQLAlchemy Core tables, async engine, Alembic migrations.

SQLite file by default (``sqlite:///path``); PostgreSQL by URL (``postgresql://...``, asyncpg).
"""

from . import _fleet_tables as fleet_tables
from . import _gov_tables as gov_tables
from . import _rollout_tables as rollout_tables
from . import _tables as tables
from ._coordination import DEVICE_CHANNEL, Listener, SingletonJob, notify
from ._engine import Batch, BatchFailed, Store, StoreConfigError, after_commit, normalize_url
from ._gov_tables import DEFAULT_ORG_ID
from ._request_log import Claim, RequestLog, request_key
from ._sealed_state import SealedRecordState
from ._tenancy import TenantScopeError, cross_tenant, current_tenant, tenant_scope

__all__ = [
    "DEFAULT_ORG_ID",
    "DEVICE_CHANNEL",
    "Batch",
    "BatchFailed",
    "Claim",
    "Listener",
    "RequestLog",
    "SealedRecordState",
    "SingletonJob",
    "Store",
    "StoreConfigError",
    "TenantScopeError",
    "after_commit",
    "cross_tenant",
    "current_tenant",
    "fleet_tables",
    "gov_tables",
    "normalize_url",
    "notify",
    "request_key",
    "rollout_tables",
    "tables",
    "tenant_scope",
]
