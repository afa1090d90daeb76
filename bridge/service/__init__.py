"""The service layer beneath every adapter (issue 15): who may do what, in which organisation.

``Governance.unit(principal, permission, groups)`` is the one door: :func:`authorize` (deny by
default, roles optionally limited to device groups), the tenant scope of every statement, one
transaction, audit entries in that transaction. The HTTP and MQTT handlers, ``meshota admin``,
bundle import and the UI all call through it; none checks permissions on its own.
"""

from ._audit import GENESIS, AuditBreak, entry_hash, verify_chain
from ._orgs import Organization, create_org, map_identity, org_by_name, tenant_of_device
from ._permissions import BUILTIN_ROLES, GROUP_SCOPED, PERMISSIONS, Denied, Grant, Principal, Role, authorize
from ._units import Governance, UnitOfWork, operator, system

__all__ = [
    "BUILTIN_ROLES",
    "GENESIS",
    "GROUP_SCOPED",
    "PERMISSIONS",
    "AuditBreak",
    "Denied",
    "Governance",
    "Grant",
    "Organization",
    "Principal",
    "Role",
    "UnitOfWork",
    "authorize",
    "create_org",
    "entry_hash",
    "map_identity",
    "operator",
    "org_by_name",
    "system",
    "tenant_of_device",
    "verify_chain",
]
