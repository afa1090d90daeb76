"""Sealed records over two relays on real UDP loopback (SPEC.md §5.1): nodes → relay → relay → the
root's collector; the relays pack, see no plaintext, and every answer finds its node."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from firmware_proto.aio.sealed_uplink_udp import RecordCollectorUdp, SealedUplinkUdp, UplinkRelayUdp
from firmware_proto.sealed_uplink import PACKED, RecordBatcher, SealedRecordSender
from firmware_proto.testing.flash import MemoryFlash
from wire.sealed import (
    TO_NODE,
    RecordOp,
    decode_request,
    derive_record_key,
    encode_reply,
    open_record,
    seal_record,
)

KEYS = [derive_record_key(f"node-{i}", bytes([0x40 + i]) * 16) for i in range(5)]


async def _bridge(records: Sequence[bytes]) -> list[bytes | int]:
    """What the bridge answers for a batch (wire.sealed only): 204 for a status, else 400."""
    out: list[bytes | int] = []
    for record in records:
        key, seq, plain = open_record(KEYS, record)
        op, _arg, _body = decode_request(plain)
        status = 204 if op == RecordOp.STATUS else 400
        out.append(seal_record(key, seq, encode_reply(status, b""), direction=TO_NODE))
    return out


def test_two_relays_pack_and_every_node_gets_its_answer() -> None:
    async def scenario() -> tuple[list[int], RecordCollectorUdp, UplinkRelayUdp, UplinkRelayUdp]:
        root = await RecordCollectorUdp(RecordBatcher(window=0.2), _bridge).open()
        upper = await UplinkRelayUdp(root.address, pace=0.2).open()
        lower = await UplinkRelayUdp(upper.address, pace=0.2).open()
        # nodes 0-2 under the lower relay, node 3 under the upper one, node 4 straight to the root
        parents = [lower.address] * 3 + [upper.address, root.address]
        nodes = [
            await SealedUplinkUdp(SealedRecordSender(k, MemoryFlash()), p, timeout=5.0).open()
            for k, p in zip(KEYS, parents, strict=True)
        ]
        junk = await SealedUplinkUdp(SealedRecordSender(KEYS[0], MemoryFlash()), lower.address).open()
        assert junk._transport is not None
        junk._transport.sendto(b"\x53\x04\x02\x05abc", lower.address)  # counts say 2, holds less
        try:
            answers = await asyncio.gather(
                *(n.call(RecordOp.STATUS, "dep-7", {"status": "downloading"}) for n in nodes)
            )
            again = await nodes[1].call(RecordOp.STATUS, "dep-7", {"status": "installing"})
        finally:
            for n in [*nodes, junk]:
                n.close()
            lower.close()
            upper.close()
            root.close()
        assert again.status == 204
        return [a.status or 0 for a in answers], root, upper, lower

    statuses, root, upper, lower = asyncio.run(scenario())
    assert statuses == [204] * 5
    assert lower.packer.stats.dropped == 1  # the malformed frame; nothing else lost
    assert lower.packer.stats.records == 4 and lower.packer.stats.replies == 4
    # the lower relay packed its three nodes' first records into one frame, and so on up
    assert lower.frames_up == 2 and upper.packer.stats.records == 5
    assert any(d[:2] == bytes((0x53, PACKED)) for d in root.seen)
    ups = [d for d in root.seen if d[1] in (1, PACKED)]
    assert len(ups) < 6  # six records reached the root in fewer datagrams
    assert sum(root.batch_sizes) == 6
    assert all(b"downloading" not in d and b"dep-7" not in d for d in root.seen)  # sealed end to end
