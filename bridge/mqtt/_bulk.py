"""Sealed records in a root's batch: open each, run the same handler, answer each sealed.

The root that packed the batch sees only ciphertext; the bridge opens each record with the
device's record key (wire.sealed), checks its sequence number against that device's
replay window, runs the device-API handler with the device's token, and seals the reply with the
same key. One bad record (forged, altered, replayed) gets an error code in its slot; the others
proceed.

Server state, in the store's ``settings`` table so several bridges and restarts agree:

- ``seal-seq:<hash of device>`` — the replay window (``highest:bitmap``), updated by
  compare-and-swap so two bridges can never both accept one sequence number;
- ``seal-tok:<hash of device>`` — the Mender token the device last obtained over its own stamped
  MQTT session (auth_requests answered 200). Sealed records carry no token (it would cost
  hundreds of bytes per record); the record key authenticates the node, the bound token says
  which Mender device it is and is checked by the handlers like any bearer token (so a rejected
  or decommissioned device loses access at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from bridge.api import Request, Router
from bridge.mqtt._adapter import read_body
from bridge.store import Batch, BatchFailed, Store
from bridge.store import tables as t
from wire.envelope import BulkError, BulkReply, BulkRequest, EnvelopeError
from wire.sealed import (
    TO_NODE,
    RecordKey,
    RecordOp,
    ReplayWindow,
    SealedRecordError,
    decode_request,
    encode_reply,
    open_record,
    parse_header,
    seal_record,
)

__all__ = ["SealedRecordService", "load_record_keys"]

log = logging.getLogger("meshota.bridge")

_ROUTES: dict[RecordOp, tuple[str, str]] = {
    RecordOp.INVENTORY_PATCH: ("PATCH", "/api/devices/v1/inventory/device/attributes"),
    RecordOp.INVENTORY_PUT: ("PUT", "/api/devices/v1/inventory/device/attributes"),
    RecordOp.NEXT: ("POST", "/api/devices/v2/deployments/device/deployments/next"),
    RecordOp.STATUS: ("PUT", "/api/devices/v1/deployments/device/deployments/{arg}/status"),
}


def load_record_keys(psks: Mapping[str, bytes]) -> dict[str, RecordKey]:
    """Record keys derived from the gateway's PSK provisioning (``identity -> PSK``)."""
    from wire.sealed import derive_record_key

    return {device: derive_record_key(device, psk) for device, psk in psks.items()}


# built once (SQLAlchemy memoizes a statement's cache key on the object)
_SETTINGS_IN = sa.select(t.settings.c.key, t.settings.c.value).where(
    t.settings.c.key.in_(sa.bindparam("b_keys", expanding=True))
)
_INSERT_SETTING = sa.insert(t.settings)
_SWAP_SETTING = (  # compare-and-swap: only if nobody changed it since we read it
    sa.update(t.settings)
    .where(t.settings.c.key == sa.bindparam("b_key"), t.settings.c.value == sa.bindparam("b_old"))
    .values(value=sa.bindparam("b_new"))
)


def _setting_key(kind: str, device: str) -> str:
    return f"seal-{kind}:{hashlib.sha256(device.encode()).hexdigest()[:40]}"


@dataclass(slots=True)
class _Opened:
    index: int
    key: RecordKey
    seq: int
    plain: bytes


class _LostRace(Exception):
    """Another bridge changed a replay window between our read and our write."""


class SealedRecordService:
    def __init__(
        self, router: Router[Any], store: Store, keys: Mapping[str, RecordKey], *, window: int = 64
    ) -> None:
        self.router = router
        self.store = store
        self.window = window
        self._by_kid: dict[bytes, list[RecordKey]] = defaultdict(list)
        for key in keys.values():
            self._by_kid[key.kid].append(key)
        self._sealing = frozenset(key.device_id for key in keys.values())
        self.max_records = 1000

    # --- token binding --------------------------------------------------------------------------

    async def bind_token(self, device: str, token: str) -> None:
        if device not in self._sealing:
            return  # no record key: this device can never send a sealed record, nothing to remember
        await self._put_setting(_setting_key("tok", device), token)

    async def bound_token(self, device: str) -> str | None:
        async with self.store.transaction() as conn:
            row = (
                await conn.execute(
                    sa.select(t.settings.c.value).where(t.settings.c.key == _setting_key("tok", device))
                )
            ).first()
        return None if row is None else str(row[0])

    async def _put_setting(self, key: str, value: str) -> None:
        for _ in range(5):
            try:
                async with self.store.transaction() as conn:
                    done = await conn.execute(
                        sa.update(t.settings).where(t.settings.c.key == key).values(value=value)
                    )
                    if done.rowcount == 0:
                        await conn.execute(sa.insert(t.settings).values(key=key, value=value))
                return
            except IntegrityError:
                continue  # another bridge inserted it first: update then

    # --- replay window --------------------------------------------------------------------------

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

    # --- batches --------------------------------------------------------------------------------

    async def handle_batch(self, payload: bytes) -> tuple[str | None, bytes]:
        """(batch id or None, encoded BulkReply)."""
        try:
            batch = BulkRequest.decode(payload, max_records=self.max_records)
        except EnvelopeError as exc:
            log.warning("bad bulk request: %s", exc)
            return None, BulkReply(400, []).encode()
        entries: list[bytes | int] = [BulkError.UNOPENABLE] * len(batch.records)
        per_device: dict[str, list[_Opened]] = defaultdict(list)
        for index, record in enumerate(batch.records):
            try:
                kid, _, _ = parse_header(record)
                key, seq, plain = open_record(self._by_kid.get(kid, ()), record)
            except SealedRecordError as exc:
                log.info("bulk %s record %d refused: %s", batch.batch_id, index, exc)
                continue
            per_device[key.device_id].append(_Opened(index, key, seq, plain))
        if per_device:
            # group commit: the whole batch (replay windows and every record's handler) in one
            # transaction; if any record's handler fails after it may have written, nothing of
            # the batch is kept and the records run again one by one in their own transactions
            tried = list(entries)
            async with self.store.batch() as shared:
                with contextlib.suppress(BatchFailed):  # e.g. a replay-window race lost to another bridge
                    await self._records(per_device, tried, stop_on=shared)
            if shared.failed:
                log.info("bulk %s: a record failed inside the group commit; running them one by one",
                         batch.batch_id)  # fmt: skip
                await self._records(per_device, entries)
            else:
                entries = tried
        return batch.batch_id, BulkReply(200, entries).encode()

    async def _records(
        self, per_device: dict[str, list[_Opened]], entries: list[bytes | int], stop_on: Batch | None = None
    ) -> None:
        seqs = {device: [o.seq for o in ops] for device, ops in per_device.items()}
        fresh, tokens = await self.accept_batch(seqs)
        if stop_on is not None:  # one task, one shared connection: records in order
            for device, opened in per_device.items():
                await self._device_records(device, opened, fresh[device], tokens[device], entries, stop_on)
                if stop_on.failed:
                    return
            return
        await asyncio.gather(
            *(
                self._device_records(device, opened, fresh[device], tokens[device], entries)
                for device, opened in per_device.items()
            )
        )

    async def _device_records(
        self,
        device: str,
        opened: list[_Opened],
        fresh: list[bool],
        token: str | None,
        entries: list[bytes | int],
        stop_on: Batch | None = None,
    ) -> None:
        for record, ok in zip(opened, fresh, strict=True):
            if stop_on is not None and stop_on.failed:
                return
            if not ok:
                log.info("replayed record from %s (seq %d) refused", device, record.seq)
                entries[record.index] = BulkError.REPLAYED
                continue
            try:
                op, arg, body = decode_request(record.plain)
            except SealedRecordError:
                entries[record.index] = BulkError.MALFORMED
                continue
            status, reply_body = await self._run(device, token, op, arg, body)
            entries[record.index] = seal_record(
                record.key, record.seq, encode_reply(status, reply_body), direction=TO_NODE
            )

    async def _run(
        self, device: str, token: str | None, op: RecordOp, arg: str, body: object
    ) -> tuple[int, bytes]:
        if token is None:
            return 401, b'{"error":"no token bound: authenticate over your own session first"}'
        method, path = _ROUTES[op]
        if "{arg}" in path:
            if not arg or "/" in arg:
                return 400, b'{"error":"record needs a deployment id"}'
            path = path.replace("{arg}", arg)
        request = Request(
            method=method,
            path=path,
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
            body=body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode(),
            identity=device,  # the bound token was issued over this identity's own session
        )
        response = await self.router.handle(request)
        return response.status, await read_body(response)
