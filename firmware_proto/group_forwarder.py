"""Multi-hop group streaming (sans-I/O): a node that holds a committed image streams it to its children.

The group link of :mod:`firmware_proto.group_stream` is one broadcast domain. A mesh is many: a
root reaches its one-hop neighbours only. :class:`GroupRelay` carries the stream further with the
product's own pieces and no new frame type, pipelined (Deluge forwards page by page; we forward
each block as soon as this node verified it) and, once the node runs the image, from its flash:

0. While the node still downloads, :meth:`GroupRelay.follow` hands the relay's core the node's
   own receive state (:class:`~firmware_proto.block_source.ReceiverSource`): the relay takes its
   children's WANT at once and, each round, sends the blocks they NACK that this node has
   verified (a page against the signed root, a chunk against its verified leaf); nothing
   unverified is forwarded. The driver defers the node's install reboot until that stream ends
   (:attr:`GroupRelay.busy`), as a root's.

1. While a node downloads, its update agent keeps the verified head, leaves and chunks in flash.
   When its image is complete, :meth:`GroupRelay.capture` (called by the driver before the install
   reboot) copies head + leaves into record ``relay-map`` (full chunk-map form, SPEC.md §2.3).
2. After the node committed that image, :meth:`GroupRelay.load` finds the record, checks it names
   the image running in the active slot (size, SHA-256, sequence), and the relay serves it: a
   :class:`GroupStreamRoot` whose ``FetchArtifact`` is answered from the node's own flash. Same
   signed map → same ``stream_id``, so children keep the bitmaps they built from any other sender.
3. Cell rules (:func:`relay_accepts`, :func:`agent_accepts`) keep each node in its own cell of the
   routing tree: a relay takes WANT/NACK only from its children; an agent follows HEAD/POLL/END of
   its parent only (its rounds; HEAD from anyone, it is signed), overhears NACKs of its siblings
   only (suppression), and takes DATA of its stream from anyone in range (opportunistic: every
   chunk is checked anyway).

The relay holds no key and is trusted for nothing: what it sends is checked by its children against
the signed head exactly as if a root sent it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from firmware_proto import boot as bootmod
from firmware_proto.block_source import BlockSource
from firmware_proto.chunk_receiver import REC_BITMAP, REC_HEAD, REC_LEAVES
from firmware_proto.flash_store import ChunkBitmap, FlashStore
from firmware_proto.group_link import GroupLink
from firmware_proto.group_stream import FetchArtifact, GroupStreamRoot, RootConfig, StreamFinished
from wire.chunk_map import HASH_LEN, ChunkMap, ChunkMapError, MapHead
from wire.frames import FRAME_MAGIC, T_CODED, T_DATA, T_HEAD, T_NACK, T_PART, T_WANT

__all__ = ["REC_RELAY", "GroupRelay", "agent_accepts", "frame_type", "relay_accepts"]

REC_RELAY = "relay-map"


def frame_type(data: bytes) -> int:
    """The frame type byte (0 for bytes that are not a group-link frame): routing needs no decode."""
    return data[1] if len(data) >= 2 and data[0] == FRAME_MAGIC else 0


def relay_accepts(kind: int, sender: Hashable, is_child: Callable[[Hashable], bool]) -> bool:
    """A relay (or root) serves its children: it takes their WANT and NACK frames, nothing else."""
    return kind in (T_WANT, T_NACK) and is_child(sender)


def agent_accepts(
    kind: int, sender: Hashable, parent: Hashable | None, is_sibling: Callable[[Hashable], bool]
) -> bool:
    """An agent follows its parent's rounds, overhears its siblings' NACKs, takes DATA from anyone."""
    if kind in (T_DATA, T_CODED, T_PART):
        return True
    if kind == T_NACK:
        return is_sibling(sender)
    if kind == T_WANT:
        return False
    if kind == T_HEAD:
        return True  # signed: whoever sends it, the agent checks it
    return sender == parent


class GroupRelay:
    """Streams the image this node runs to its children, from its own flash."""

    # one per forwarder, asked for its timer after every frame: no per-instance dict
    __slots__ = ("_pending", "core", "finished", "flash", "head", "map_bytes", "slot", "source")

    def __init__(self, flash: FlashStore, link: GroupLink, config: RootConfig) -> None:
        self.flash = flash
        self.core = GroupStreamRoot(link, config)
        self.map_bytes = b""
        self.head: MapHead | None = None
        self.slot = -1
        self.finished: list[StreamFinished] = []
        self.source: BlockSource | None = None  # pipelining: what the node verified so far
        self._pending: list[FetchArtifact] = []  # fetches waiting for follow()

    # -- what the node holds ------------------------------------------------------------------------
    @staticmethod
    def capture(flash: FlashStore) -> bool:
        """Keep the verified map of a just-completed stream (call before the install reboot)."""
        head_raw = flash.read_record(REC_HEAD)
        leaves = flash.read_record(REC_LEAVES)
        bits = flash.read_record(REC_BITMAP)
        if head_raw is None or leaves is None or bits is None:
            return False
        try:
            head = MapHead.decode(head_raw)
            if not ChunkBitmap(head.block_count, bits).complete:
                return False
        except (ChunkMapError, ValueError):
            return False
        table = tuple(leaves[i : i + HASH_LEN] for i in range(0, len(leaves), HASH_LEN))
        flash.write_record(REC_RELAY, ChunkMap(head, table).encode())
        return True

    def load(self, booted_slot: int, map_cache: dict[bytes, ChunkMap] | None = None) -> bool:
        """Serve the captured map if it names the image the node now runs; False if there is none."""
        raw = self.flash.read_record(REC_RELAY)
        info = bootmod.read_slot_info(self.flash, booted_slot)
        if raw is None or info is None:
            return False
        try:
            cmap = map_cache.get(raw) if map_cache is not None else None
            if cmap is None:
                cmap = ChunkMap.decode(raw)  # checks the leaf table against the signed root
                if map_cache is not None:
                    map_cache[raw] = cmap
        except ChunkMapError:
            return False
        head = cmap.head
        if (head.artifact_size, head.artifact_sha256, head.sequence) != (
            info.size,
            info.sha256,
            info.sequence,
        ):
            return False  # the relay record belongs to another image (rolled back, or older)
        self.map_bytes, self.head, self.slot = raw, head, booted_slot
        return True

    @property
    def serving(self) -> bool:
        return self.head is not None

    @property
    def busy(self) -> bool:
        """A group of children is being collected or streamed to."""
        return self.core.busy

    def follow(self, source: BlockSource, now: float) -> None:
        """Forward from what the node is downloading (pipelining); answers fetches that waited."""
        if self.head is not None:
            return  # the node runs the image: its flash serves it whole
        self.source = source
        pending, self._pending = self._pending, []
        for action in pending:
            self._answer(action, now, None)

    # -- the root core, fed from flash ----------------------------------------------------------------
    def receive(self, data: bytes, sender: Hashable, now: float) -> None:
        self.core.receive(data, sender, now)

    def next_timer(self) -> float | None:
        return self.core.next_timer()

    def handle_timer(self, now: float, artifact: Callable[[], bytes] | None = None) -> None:
        """Run the core; a fetch of the served artifact is answered from the active slot at once.

        ``artifact`` may supply the slot bytes (a driver that shares one copy between relays)."""
        self.core.handle_timer(now)
        for action in self.core.actions():
            if isinstance(action, FetchArtifact):
                self._answer(action, now, artifact)
            else:
                self.finished.append(action)

    def _answer(self, action: FetchArtifact, now: float, artifact: Callable[[], bytes] | None) -> None:
        head = self.head
        if head is not None:
            if action.artifact_id != head.artifact_id:
                self.core.fetch_failed(action.artifact_id, now)
                return
            data = (
                artifact() if artifact is not None else self.flash.read_slot(self.slot, 0, head.artifact_size)
            )
            self.core.artifact_fetched(action.artifact_id, data, self.map_bytes, now)
        elif self.source is None:
            self._pending.append(action)  # the node has not begun downloading yet
        elif self.source.head.artifact_id == action.artifact_id:
            self.core.source_ready(action.artifact_id, self.source, now)
        else:
            self.core.fetch_failed(action.artifact_id, now)
