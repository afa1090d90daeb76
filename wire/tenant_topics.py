"""Tenant-carrying MQTT topics of the device API (docs/topics.md, "Organisations").

Nodes never see these: they speak the node-visible topics of :mod:`wire.envelope`
(``/mender/api/...``, ``/mender/bulk/v1``, ``/mender/responses/{device}/{request}``). The gateway
knows each node's organisation and moves its traffic onto the organisation's own subtree on the
broker, where a broker ACL can keep one organisation's credentials off another's topics::

    node-visible                          on the broker, organisation T (not the default one)
    /mender/api/devices/v1/...        ->  /mender/t/T/api/devices/v1/...
    /mender/bulk/v1                   ->  /mender/t/T/bulk/v1
    /mender/responses/{dev}/{req}     <-  /mender/t/T/responses/{dev}/{req}

The default organisation keeps the node-visible topics unchanged on the broker (a single-tenant
installation is exactly what it was). ``/mender/t/default/...`` is not a topic: every topic has
one spelling, so an ACL on one cannot be bypassed by the other. The organisation level is the
organisation id (``meshota admin create-org`` prints it): 1-64 characters of ``[A-Za-z0-9._-]``.
"""

from __future__ import annotations

import functools
import re

from wire.errors import WireError

__all__ = [
    "DEFAULT_TENANT",
    "TENANT_TOPIC_PREFIX",
    "TenantTopicError",
    "check_tenant",
    "is_tenant_topic",
    "split_tenant_topic",
    "tenant_topic",
]

DEFAULT_TENANT = "default"  # the default organisation's id (bridge.store.DEFAULT_ORG_ID)
TENANT_TOPIC_PREFIX = "/mender/t/"
_TENANT = re.compile(r"[A-Za-z0-9._-]{1,64}")
# the node-visible device-API subtrees an organisation gets its own copy of (after "/mender/")
_KINDS = ("api/", "responses/")
_BULK = "bulk/v1"


class TenantTopicError(WireError):
    """An organisation id that cannot be a topic level."""


def check_tenant(tenant: object) -> str:
    """``tenant`` if it can name an organisation's topics, else :class:`TenantTopicError`."""
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise TenantTopicError(f"bad organisation id {tenant!r}: expected 1-64 of A-Z a-z 0-9 . _ -")
    if tenant == DEFAULT_TENANT or tenant in (".", ".."):
        raise TenantTopicError(f"organisation id {tenant!r} has no topics of its own")
    return tenant


def _device_api(rest: str) -> bool:
    return rest.startswith(_KINDS) or rest == _BULK


def tenant_topic(topic: str, tenant: str | None) -> str:
    """The broker topic of node-visible ``topic`` for organisation ``tenant``: unchanged for the
    default organisation (or None) and for topics outside the device API."""
    if tenant is None or tenant == DEFAULT_TENANT or not topic.startswith("/mender/"):
        return topic
    rest = topic[len("/mender/") :]
    return f"{TENANT_TOPIC_PREFIX}{tenant}/{rest}" if _device_api(rest) else topic


def is_tenant_topic(topic: str) -> bool:
    """``topic`` (or a filter) lies in the organisations' subtree: only the gateway may choose it."""
    return topic.startswith(TENANT_TOPIC_PREFIX) or topic == TENANT_TOPIC_PREFIX[:-1]


@functools.lru_cache(maxsize=4096)  # request topics repeat (one per API path and organisation)
def split_tenant_topic(topic: str) -> tuple[str, str] | None:
    """(organisation id, node-visible topic) of a broker topic; the default organisation for a
    topic outside ``/mender/t/``; None for a ``/mender/t/`` topic that is not an organisation's
    device-API topic (a bad id, ``default``, or another subtree)."""
    if not topic.startswith(TENANT_TOPIC_PREFIX):
        return DEFAULT_TENANT, topic
    tenant, sep, rest = topic[len(TENANT_TOPIC_PREFIX) :].partition("/")
    if not sep or not _device_api(rest):
        return None
    try:
        check_tenant(tenant)
    except TenantTopicError:
        return None
    return tenant, "/mender/" + rest
