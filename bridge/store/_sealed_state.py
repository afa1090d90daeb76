"""Server state of sealed records, in the ``settings`` table so several bridges and restarts agree.

- ``seal-seq:<hash of device>`` — the replay window (``highest:bitmap``, :class:`wire.sealed.ReplayWindow`),
  updated by compare-and-swap so two bridges can never both accept one sequence number;
- ``seal-tok:<hash of device>`` — the Mender token the device last obtained over its own stamped
  MQTT session; sealed records carry no token, the record's handler runs with this one.

The MQTT adapter calls these methods; it issues no SQL itself (docs/mqtt_bridge.md).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from wire.sealed import ReplayWindow

from . import _tables as t
from ._engine import Store

__all__ = ["SealedRecordState"]

# built once (SQLAlchemy memoizes a statement's cache key on the object)
_SETTINGS_IN = sa.select(t.settings.c.key, t.settings.c.value).where(
    t.settings.c.key.in_(sa.bindparam("b_keys", expanding=True))
)
_SETTING = sa.select(t.settings.c.value).where(t.settings.c.key == sa.bindparam("b_key"))
_INSERT_SETTING = sa.insert(t.settings)
_UPDATE_SETTING = (
    sa.update(t.settings).where(t.settings.c.key == sa.bindparam("b_key")).values(value=sa.bindparam("b_new"))
)
_SWAP_SETTING = (  # compare-and-swap: only if nobody changed it since we read it
    sa.update(t.settings)
    .where(t.settings.c.key == sa.bindparam("b_key"), t.settings.c.value == sa.bindparam("b_old"))
    .values(value=sa.bindparam("b_new"))
)


def _setting_key(kind: str, device: str) -> str:
    return f"seal-{kind}:{hashlib.sha256(device.encode()).hexdigest()[:40]}"


class _LostRace(Exception):
    """Another bridge changed a replay window between our read and our write."""


class SealedRecordState:
    """Replay windows and bound tokens of devices that send sealed records."""

    def __init__(self, store: Store, *, window: int = 64) -> None:
        self.store = store
        self.window = window

    async def bind_token(self, device: str, token: str) -> None:
        """Remember the token ``device`` obtained over its own stamped session."""
        key = _setting_key("tok", device)
        for _ in range(5):
            try:
                async with self.store.transaction() as conn:
                    done = await conn.execute(_UPDATE_SETTING, {"b_key": key, "b_new": token})
                    if done.rowcount == 0:
                        await conn.execute(_INSERT_SETTING, {"key": key, "value": token})
                return
            except IntegrityError:
                continue  # another bridge inserted it first: update then

    async def bound_token(self, device: str) -> str | None:
        async with self.store.read() as conn:
            row = (await conn.execute(_SETTING, {"b_key": _setting_key("tok", device)})).first()
        return None if row is None else str(row[0])

    async def accept_sequence_numbers(self, device: str, seqs: list[int]) -> list[bool]:
        """Atomically mark ``seqs`` seen; True for each one that was new."""
        return (await self.accept_batch({device: seqs}))[0][device]

    async def accept_batch(
        self, seqs: Mapping[str, list[int]]
    ) -> tuple[dict[str, list[bool]], dict[str, str | None]]:
        """One transaction for a whole batch: mark every device's ``seqs`` seen, read its bound token.

        Per device a compare-and-swap on its window row, so two bridges never accept one seq: a
        lost race rolls the whole transaction back and reads again. One transaction per batch
        instead of two per device (with SQLite every writer waits for the one before it).
        """
        seq_keys = {_setting_key("seq", device): device for device in seqs}
        tok_keys = {_setting_key("tok", device): device for device in seqs}
        for _ in range(20):
            try:
                async with self.store.transaction() as conn:
                    rows = {
                        str(key): str(value)
                        for key, value in await conn.execute(_SETTINGS_IN, {"b_keys": [*seq_keys, *tok_keys]})
                    }
                    accepted: dict[str, list[bool]] = {}
                    for key, device in seq_keys.items():
                        old = rows.get(key)
                        window = (
                            ReplayWindow(size=self.window)
                            if old is None
                            else ReplayWindow.loads(old, self.window)
                        )
                        flags = accepted[device] = []
                        for seq in seqs[device]:
                            ok = window.check(seq)
                            if ok:
                                window.accept(seq)
                            flags.append(ok)
                        if not any(flags):
                            continue
                        if old is None:
                            await conn.execute(_INSERT_SETTING, {"key": key, "value": window.dumps()})
                            continue
                        done = await conn.execute(
                            _SWAP_SETTING, {"b_key": key, "b_old": old, "b_new": window.dumps()}
                        )
                        if done.rowcount != 1:
                            raise _LostRace(device)
                    return accepted, {device: rows.get(key) for key, device in tok_keys.items()}
            except (IntegrityError, _LostRace):
                pass
            await asyncio.sleep(0)  # lost a race with another bridge: read again
        raise RuntimeError(f"replay windows of {sorted(seqs)!r} kept changing under us")
