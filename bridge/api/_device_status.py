"""A short-lived cache of accepted devices, so a device request needs no extra DB round trip.

The token's signature proves who the device is; the cache answers "is that auth set still
accepted?". Entries live ``ttl`` seconds. Every change of an auth set's status (accept,
reject, decommission, delete) calls :func:`invalidate_device` after its commit, which clears
the entry in every cache of this process and bumps a generation counter, so a lookup that
read the database before the change cannot put a stale entry back. Other processes on the same
PostgreSQL database (more bridge workers, ``meshota admin``) are told by ``NOTIFY`` when the change
commits (:class:`bridge.store.Listener`, started by :meth:`ApiContext.create`); a process that
missed notifications (lost its LISTEN connection) clears everything; SQLite: the TTL bounds them.
"""

from __future__ import annotations

import weakref

__all__ = ["DeviceStatusCache", "invalidate_all_devices", "invalidate_device"]

_CACHES: weakref.WeakSet[DeviceStatusCache] = weakref.WeakSet()


class DeviceStatusCache:
    """device id -> (accepted auth set id, expiry). Only positive answers are kept."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self.generation = 0
        self._accepted: dict[str, tuple[str, float]] = {}
        _CACHES.add(self)

    def is_accepted(self, device_id: str, auth_set_id: str, now: float) -> bool:
        entry = self._accepted.get(device_id)
        if entry is None:
            return False
        if entry[1] <= now:
            del self._accepted[device_id]
            return False
        return entry[0] == auth_set_id

    def remember(self, device_id: str, auth_set_id: str, now: float, generation: int) -> None:
        """Keep an answer read from the database when :attr:`generation` was ``generation``."""
        if self.ttl > 0 and generation == self.generation:
            self._accepted[device_id] = (auth_set_id, now + self.ttl)

    def invalidate(self, device_id: str) -> None:
        self.generation += 1
        self._accepted.pop(device_id, None)

    def clear(self) -> None:
        self.generation += 1
        self._accepted.clear()

    def __len__(self) -> int:
        return len(self._accepted)


def invalidate_device(device_id: str) -> None:
    """Forget ``device_id`` in every cache of this process (call after the change committed)."""
    for cache in list(_CACHES):
        cache.invalidate(device_id)


def invalidate_all_devices() -> None:
    """Forget every device in every cache of this process (notifications may have been missed)."""
    for cache in list(_CACHES):
        cache.clear()
