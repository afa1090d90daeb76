"""Permissions, roles and the ONE check: :func:`authorize`.

A principal (a user, a personal access token, the ``meshota admin`` operator, a device) holds
roles; a role grants permissions, optionally only on devices in some groups. Deny by default:
a permission no role grants is refused, and so is a group-limited permission used on an object
outside the role's groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "BUILTIN_ROLES",
    "PERMISSIONS",
    "Denied",
    "Grant",
    "Principal",
    "Role",
    "authorize",
]

# permission -> what it allows (the management routes each name one: docs/governance.md)
PERMISSIONS: Mapping[str, str] = {
    "devices:read": "list and show devices, their inventory, groups and saved filters",
    "devices:manage": "accept, reject, preauthorize, decommission devices; set their groups; saved filters",
    "artifacts:read": "list and show artifacts, download links",
    "artifacts:upload": "upload artifacts",
    "artifacts:delete": "delete artifacts",
    "deployments:read": "list and show deployments, statistics, device logs",
    "deployments:manage": "create and abort deployments, act on phased rollouts, set fleet/group policies",
    "deviceconfig:read": "show a device's configured and reported configuration",
    "deviceconfig:manage": "set and deploy a device's configuration",
    "users:read": "list users and roles",
    "users:manage": "create and delete users, roles, role assignments",
    "tokens:manage": "create and revoke one's own personal access tokens",
    "audit:read": "read and export the audit log",
    "remoteaccess:grant": "the device owner's switch: grant (time-boxed) or revoke remote access to a device",
    "remoteaccess:use": "open remote shell and file-transfer sessions on devices whose owner granted it",
}

# permissions that apply to devices and so can be limited to device groups
GROUP_SCOPED = frozenset(
    {
        "devices:read",
        "devices:manage",
        "deployments:read",
        "deployments:manage",
        "deviceconfig:read",
        "deviceconfig:manage",
        "remoteaccess:grant",
        "remoteaccess:use",
    }
)


class Denied(Exception):
    """The principal may not do this: 403 (or 404 when the object must not be revealed)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    description: str
    permissions: frozenset[str]
    groups: frozenset[str] = frozenset()  # empty: every device; else only devices in these groups
    builtin: bool = False


def _role(name: str, description: str, permissions: Iterable[str]) -> Role:
    perms = frozenset(permissions)
    assert perms <= PERMISSIONS.keys(), perms - PERMISSIONS.keys()
    return Role(name, description, perms, builtin=True)


_READ = ("devices:read", "artifacts:read", "deployments:read")
# Mender Enterprise's built-in role names where one exists (RBAC_ROLE_PERMIT_ALL, _OBSERVER, _CI)
BUILTIN_ROLES: Mapping[str, Role] = {
    r.name: r
    for r in (
        _role("RBAC_ROLE_PERMIT_ALL", "Admin: every permission", PERMISSIONS),
        _role(
            "RBAC_ROLE_RELEASE_MANAGER",
            "Release manager: artifacts, deployments, rollouts, policies, device configuration",
            (
                *_READ,
                "artifacts:upload",
                "artifacts:delete",
                "deployments:manage",
                "deviceconfig:read",
                "deviceconfig:manage",
                "tokens:manage",
            ),
        ),
        _role("RBAC_ROLE_OBSERVER", "Read-only: devices, artifacts, deployments", _READ),
        _role(
            "RBAC_ROLE_SUPPORT",
            "Support: devices and their groups, read deployments, configuration and the audit log; "
            "remote sessions where the owner granted them",
            (*_READ, "devices:manage", "deviceconfig:read", "audit:read", "remoteaccess:use"),
        ),
        _role(
            "RBAC_ROLE_DEVICE_OWNER",
            "Device owner: sees devices, grants or revokes time-boxed remote access to them",
            ("devices:read", "remoteaccess:grant"),
        ),
        _role(
            "RBAC_ROLE_CI",
            "CI uploader: upload and list artifacts",
            ("artifacts:read", "artifacts:upload", "tokens:manage"),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who acts: ``kind`` is ``user``, ``token`` (a personal access token), ``operator`` (meshota
    admin), ``system`` (a server job: the rollout ticker) or ``device``; ``tenant_id`` the
    organisation every statement is scoped to."""

    kind: str
    id: str
    name: str
    tenant_id: str
    roles: tuple[Role, ...] = ()
    # permissions this principal holds at all, whatever the groups (computed once)
    _perms: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def of(cls, kind: str, id: str, name: str, tenant_id: str, roles: Iterable[Role]) -> Principal:
        roles = tuple(roles)
        perms = frozenset(p for r in roles for p in r.permissions)
        return cls(kind, id, name, tenant_id, roles, perms)


@dataclass(frozen=True, slots=True)
class Grant:
    """What :func:`authorize` allowed: ``groups`` None = on every device, else only on these."""

    permission: str
    groups: frozenset[str] | None

    def covers(self, groups: Iterable[str]) -> bool:
        """May an object in ``groups`` (a device's group, a deployment's target) be touched?"""
        return self.groups is None or any(g in self.groups for g in groups)


def authorize(principal: Principal, permission: str, groups: Iterable[str] | None = None) -> Grant:
    """The one permission check (deny by default). ``groups``: the device groups of the object
    acted on, when there is one; then a group-limited role must cover one of them."""
    if permission not in PERMISSIONS:
        raise Denied(f"unknown permission {permission!r}")
    if permission not in principal._perms:
        raise Denied(f"{permission} is not granted to {principal.name}")
    allowed: set[str] | None = set()
    for role in principal.roles:
        if permission not in role.permissions:
            continue
        if not role.groups or permission not in GROUP_SCOPED:
            allowed = None
            break
        allowed.update(role.groups)  # type: ignore[union-attr]
    grant = Grant(permission, None if allowed is None else frozenset(allowed))
    if groups is not None and not grant.covers(groups):
        raise Denied(f"{permission} is not granted to {principal.name} on this device's groups")
    return grant
