"""Sealed records in a root's batch: open each, run the same handler, answer each sealed.

The root that packed the batch sees only ciphertext; the bridge opens each record with the
device's record key (wire.sealed), checks its sequence number against that device's
replay window, runs the device-API handler with the device's token, and seals the reply with the
same key. One bad record (forged, altered, replayed) gets an error code in its slot; the others
proceed.

Server state (bridge.store.SealedRecordState, reached through bridge.api.AdapterServices; this
module issues no SQL): the replay window per device, updated by compare-and-swap so two bridges
can never both accept one sequence number, and the Mender token the device last obtained over its
own stamped MQTT session (auth_requests answered 200). Sealed records carry no token (it would
cost hundreds of bytes per record); the record key authenticates the node, the bound token says
which Mender device it is and is checked by the handlers like any bearer token (so a rejected or
decommissioned device loses access at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.api import AdapterServices, Batch, BatchFailed, Request, Router
from bridge.mqtt._adapter import read_body
from wire.envelope import BulkError, BulkReply, BulkRequest, EnvelopeError
from wire.sealed import (
    TO_NODE,
    RecordKey,
    RecordOp,
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
    RecordOp.COUNT: ("POST", "/api/meshota/v1/devices/fleet_counts"),  # a root's count record
}


def load_record_keys(psks: Mapping[str, bytes]) -> dict[str, RecordKey]:
    """Record keys derived from the gateway's PSK provisioning (``identity -> PSK``)."""
    from wire.sealed import derive_record_key

    return {device: derive_record_key(device, psk) for device, psk in psks.items()}


@dataclass(slots=True)
class _Opened:
    index: int
    key: RecordKey
    seq: int
    plain: bytes


class SealedRecordService:
    def __init__(self, router: Router[Any], services: AdapterServices, keys: Mapping[str, RecordKey]) -> None:
        self.router = router
        self.services = services
        self.state = services.sealed
        self._by_kid: dict[bytes, list[RecordKey]] = defaultdict(list)
        for key in keys.values():
            self._by_kid[key.kid].append(key)
        self._sealing = frozenset(key.device_id for key in keys.values())
        self.max_records = 1000

    async def bind_token(self, device: str, token: str) -> None:
        """Remember the token ``device`` obtained over its own stamped session (its records run with it)."""
        if device not in self._sealing:
            return  # no record key: this device can never send a sealed record, nothing to remember
        await self.state.bind_token(device, token)

    # --- batches --------------------------------------------------------------------------------

    async def handle_batch(self, payload: bytes, tenant: str | None = None) -> tuple[str | None, bytes]:
        """(batch id or None, encoded BulkReply). ``tenant``: the organisation of the topic the
        batch came on; a record whose device's token is of another one is answered 403."""
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
            async with self.services.group_commit() as shared:
                with contextlib.suppress(BatchFailed):  # e.g. a replay-window race lost to another bridge
                    await self._records(per_device, tried, stop_on=shared, tenant=tenant)
            if shared.failed:
                log.info("bulk %s: a record failed inside the group commit; running them one by one",
                         batch.batch_id)  # fmt: skip
                await self._records(per_device, entries, tenant=tenant)
            else:
                entries = tried
        return batch.batch_id, BulkReply(200, entries).encode()

    async def _records(
        self,
        per_device: dict[str, list[_Opened]],
        entries: list[bytes | int],
        stop_on: Batch | None = None,
        tenant: str | None = None,
    ) -> None:
        seqs = {device: [o.seq for o in ops] for device, ops in per_device.items()}
        fresh, tokens = await self.state.accept_batch(seqs)
        if stop_on is not None:  # one task, one shared connection: records in order
            for device, opened in per_device.items():
                await self._device_records(
                    device, opened, fresh[device], tokens[device], entries, stop_on, tenant
                )
                if stop_on.failed:
                    return
            return
        await asyncio.gather(
            *(
                self._device_records(device, opened, fresh[device], tokens[device], entries, None, tenant)
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
        tenant: str | None = None,
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
            status, reply_body = await self._run(device, token, op, arg, body, tenant)
            entries[record.index] = seal_record(
                record.key, record.seq, encode_reply(status, reply_body), direction=TO_NODE
            )

    async def _run(
        self, device: str, token: str | None, op: RecordOp, arg: str, body: object, tenant: str | None = None
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
            transport_tenant=tenant,  # the batch's topic's organisation: another's record -> 403
        )
        response = await self.router.handle(request)
        return response.status, await read_body(response)
