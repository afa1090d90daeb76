"""asyncio drivers of the node ↔ root hop for sealed records (cores in firmware_proto/sealed_uplink.py).

:class:`SealedUplinkUdp` (node): ``await call(op, arg, body)`` seals a record, sends it to the
root's collector address and waits for the answer to that sequence number.
:class:`RecordCollectorUdp` (root): one UDP socket; drives a :class:`RecordBatcher` with
``loop.call_at`` and sends each batch with ``send_batch(records) -> entries`` (the root's own
device session, e.g. :meth:`MqttSnDevice.send_batch`), then hands every entry back to its node.
:class:`UplinkRelayUdp` (a relay between them, SPEC.md §5.1): drives an :class:`UplinkPacker`, packing
what its children send up into one frame for its parent and routing answers back down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from firmware_proto.device_api import DeviceApiError, DeviceApiTimeout
from firmware_proto.sealed_uplink import (
    UPLINK_PACE,
    RecordAnswer,
    RecordBatcher,
    SealedRecordSender,
    SendBatch,
    UplinkFrameError,
    UplinkPacker,
)
from wire.sealed import RecordOp

__all__ = [
    "RecordCollectorUdp",
    "SealedUplinkUdp",
    "SendBatchFn",
    "UplinkRelayUdp",
]

log = logging.getLogger("meshota.device")

SendBatchFn = Callable[[Sequence[bytes]], Awaitable[Sequence[bytes | int]]]


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)


async def _bind(
    on_datagram: Callable[[bytes, Any], None], listen: tuple[str, int]
) -> tuple[asyncio.DatagramTransport, tuple[str, int]]:
    """A UDP socket on ``listen`` handing datagrams to ``on_datagram``, and its bound address."""
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Socket(on_datagram), local_addr=listen
    )
    host, port = transport.get_extra_info("sockname")[:2]
    return transport, (str(host), int(port))


class SealedUplinkUdp:
    """The node's sealed-record channel to its root (one UDP socket)."""

    def __init__(self, sender: SealedRecordSender, root: tuple[str, int], *, timeout: float = 5.0) -> None:
        self.sender = sender
        self.root = root
        self.timeout = timeout
        self.bytes_sent = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._waiting: dict[int, asyncio.Future[RecordAnswer]] = {}

    async def open(self) -> SealedUplinkUdp:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Socket(self._on_datagram), local_addr=("127.0.0.1", 0)
        )
        return self

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        try:
            answer = self.sender.open_answer(data)
        except UplinkFrameError as exc:
            log.info("dropped uplink frame from %s: %s", addr, exc)
            return
        fut = self._waiting.get(answer.seq)
        if fut is not None and not fut.done():
            fut.set_result(answer)

    async def call(self, op: RecordOp, arg: str, body: object) -> RecordAnswer:
        """Seal, send, await the answer; DeviceApiTimeout when the root gives none in time."""
        if self._transport is None:
            raise DeviceApiError("sealed uplink is not open")
        seq, frame = self.sender.seal(op, arg, body)
        fut: asyncio.Future[RecordAnswer] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = fut
        try:
            self.bytes_sent += len(frame)
            self._transport.sendto(frame, self.root)
            return await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise DeviceApiTimeout(f"no answer from the root for sealed record {seq}") from None
        finally:
            self._waiting.pop(seq, None)


class RecordCollectorUdp:
    """The root's collector: children's sealed records in, one bulk request per batch out."""

    def __init__(
        self, batcher: RecordBatcher, send_batch: SendBatchFn, listen: tuple[str, int] = ("127.0.0.1", 0)
    ) -> None:
        self.batcher = batcher
        self.send_batch = send_batch
        self.listen = listen
        self.address: tuple[str, int] = ("", 0)
        self.seen: list[bytes] = []  # every datagram the root handled (tests: no plaintext in it)
        self.batch_sizes: list[int] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> RecordCollectorUdp:
        self._transport, self.address = await _bind(self._on_datagram, self.listen)
        return self

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        self.seen.append(data)
        self.batcher.receive(data, addr, asyncio.get_running_loop().time())
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self.batcher.handle_timer(asyncio.get_running_loop().time())
        self._pump()

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        for action in self.batcher.actions():
            task = loop.create_task(self._send(action))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._transport is not None:
            for node, frame in self.batcher.frames_to_send():
                self.seen.append(frame)
                self._transport.sendto(frame, cast(tuple[Any, ...], node))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.batcher.next_timer()
        if at is not None:
            self._timer = loop.call_at(at, self._on_timer)

    async def _send(self, action: SendBatch) -> None:
        self.batch_sizes.append(len(action.records))
        try:
            entries = await self.send_batch(action.records)
        except DeviceApiError as exc:
            log.warning("batch of %d sealed records not delivered: %s", len(action.records), exc)
            self.batcher.batch_failed(action.token)
        else:
            self.batcher.batch_answered(action.token, list(entries))
        self._pump()


class UplinkRelayUdp:
    """A relay's hop for sealed records (SPEC.md §5.1; one UDP socket): up frames from its
    children (its own node's :class:`SealedUplinkUdp` included, pointed at :attr:`address`) go
    through one :class:`UplinkPacker` to ``parent`` (the next relay, or the root's collector). A
    frame leaves ``pace`` s after the first record began to wait — the link busy meanwhile — with
    every waiting record that fits ``room`` bytes; answers from the parent go down by key id to the
    child that sent that key's record up. The relay opens nothing: it has no key."""

    def __init__(
        self,
        parent: tuple[str, int],
        *,
        packer: UplinkPacker | None = None,
        pace: float = UPLINK_PACE,
        room: int = 1200,
        listen: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        self.parent = parent
        self.packer = packer if packer is not None else UplinkPacker()
        self.pace = pace
        self.room = room
        self.listen = listen
        self.address: tuple[str, int] = ("", 0)
        self.frames_up = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def open(self) -> UplinkRelayUdp:
        self._transport, self.address = await _bind(self._on_datagram, self.listen)
        return self

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        if self._transport is None:
            return
        if tuple(addr[:2]) == self.parent:  # an answer coming down
            child = self.packer.route_down(data)
            if child is not None:
                self._transport.sendto(data, cast(tuple[Any, ...], child))
            return
        if self.packer.put(data, tuple(addr[:2])) and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.pace, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._transport is None:
            return
        frame = self.packer.take(self.room)
        if frame is not None:
            self.frames_up += 1
            self._transport.sendto(frame, self.parent)
        if len(self.packer):
            self._timer = asyncio.get_running_loop().call_later(self.pace, self._flush)
