"""Root + nodes on a virtual-time broadcast medium: trust nothing from the root, complete anyway."""

from __future__ import annotations

from firmware_proto import boot as bootmod
from tests.support.update import SERVER_KEY, Artifacts, all_final, harness
from wire.chunk_map import build_chunk_map
from wire.frames import Data, Head, Poll, decode, encode


def _running(h, node) -> str:  # type: ignore[no-untyped-def]
    booted = bootmod.read_boot(h.nodes[node].flash)
    info = bootmod.read_slot_info(h.nodes[node].flash, booted.active)
    return info.artifact_name if info else ""


def _deploy(h, nodes=None) -> None:  # type: ignore[no-untyped-def]
    for n in nodes if nodes is not None else h.nodes:
        h.learn(n, "d2", "a2", "mem://a2")


def test_one_stream_serves_the_group_fetched_once(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=5)
    root = h.add_root("root")
    _deploy(h)
    h.run(120, stop=lambda: all_final(h))
    for n in h.nodes:
        assert [s for d, s in h.service.statuses[n] if d == "d2"] == [
            "downloading",
            "installing",
            "rebooting",
            "success",
        ]
        assert _running(h, n) == "v2"
    assert h.service.root_fetches == 1 and root.fetches == 1
    assert h.service.range_bytes == {}  # nobody needed the fallback
    assert root.bytes_sent < 1.2 * len(artifacts.v2)


def test_already_installed_reported_without_download(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=1)
    h.learn(0, "d1", "a1", "mem://a1")
    assert h.service.statuses[0] == [("d1", "already-installed")]


def test_flipped_byte_is_rejected_rerequested_and_never_installed(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=3)
    h.add_root("root")
    flipped: list[int] = []

    def tamper(frame: bytes) -> bytes:
        f = decode(frame)
        if isinstance(f, Data) and f.block == 5 and not flipped:  # first copy of one chunk
            flipped.append(f.block)
            payload = bytearray(f.payload)
            payload[10] ^= 0x01
            return encode(Data(f.stream_id, f.block, bytes(payload)))
        return frame

    h.medium.taps["root"] = tamper
    _deploy(h)
    h.run(120, stop=lambda: all_final(h))
    assert flipped
    rejected = 0
    for n, rig in h.nodes.items():
        events = rig.events + (rig.agent.events if rig.agent else [])
        rejected += sum("block 5 rejected: chunk hash mismatch" in e for e in events)
        assert h.service.final_status(n, "d2") == "success"
        assert _running(h, n) == "v2"
    assert rejected == len(h.nodes)  # every node saw the bad copy and refused it
    assert h.service.range_bytes == {}  # the repair round re-sent it, no fallback


def test_flipped_chunk_rejection_event() -> None:
    """Directly: a chunk whose hash differs from its verified leaf is refused and stays missing."""
    from firmware_proto.chunk_receiver import ChunkReceiver
    from firmware_proto.testing.flash import MemoryFlash

    image = bytes(range(256)) * 20
    cmap = build_chunk_map(
        image, artifact_id="a", artifact_name="n", chunk_size=128, sequence=1, key=SERVER_KEY
    )
    rec = ChunkReceiver.start(MemoryFlash(8192), 1, cmap.head)
    assert rec.accept_block(0, cmap.page_payload(0)).accepted
    good = image[:128]
    bad = bytes([good[0] ^ 0xFF]) + good[1:]
    result = rec.accept_block(cmap.head.page_count, bad)
    assert not result.accepted and result.reason == "chunk hash mismatch"
    assert cmap.head.page_count in rec.missing()
    assert rec.accept_block(cmap.head.page_count, good).accepted
    bad_page = bytearray(cmap.page_payload(1))
    bad_page[0] ^= 1
    assert rec.accept_block(1, bytes(bad_page)).reason == "page does not match the signed Merkle root"


def test_root_replaying_an_older_signed_map_is_rejected_by_sequence(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=2, fallback_timeout=1000)
    # the nodes already committed a map with sequence 5
    from firmware_proto.update_agent import UpdateAgent

    for rig in h.nodes.values():
        rig.flash.write_record("seq", (5).to_bytes(8, "big"))
    old = build_chunk_map(
        artifacts.v2, artifact_id="a2", artifact_name="v2", chunk_size=512, sequence=3, key=SERVER_KEY
    )
    _deploy(h)
    for rig in h.nodes.values():
        assert isinstance(rig.agent, UpdateAgent)
        rig.agent.receive(encode(Head(old.head.stream_id(), old.head.encode())), "evil-root", h.now)
        rig.agent.receive(encode(Poll(old.head.stream_id(), 0, 100)), "evil-root", h.now)
        for block in range(old.head.page_count):
            rig.agent.receive(
                encode(Data(old.head.stream_id(), block, old.page_payload(block))), "evil-root", h.now
            )
        assert any("sequence 3 <= 5" in e for e in rig.agent.events)
        assert rig.agent.state.name == "REQUESTED"
    # a freshly signed map (sequence above 5, as the server issues for any re-deployment) is taken
    h.service.sequence = 9
    h.add_root("root")
    h.run(200, stop=lambda: all_final(h))
    assert all(h.service.final_status(n, "d2") == "success" for n in h.nodes)
    assert all(rig.agent and rig.agent.sequence_counter == 10 for rig in h.nodes.values())


def test_vendor_signature_failure_never_installs(artifacts: Artifacts) -> None:
    # the server signed a map for bytes the vendor did not sign: the whole-image check catches it
    h = harness(artifacts, nodes=2, v2=artifacts.unsigned_by_vendor)
    h.add_root("root")
    _deploy(h)
    h.run(120, stop=lambda: all_final(h))
    for n in h.nodes:
        assert h.service.final_status(n, "d2") == "failure"
        assert _running(h, n) == "v1"
        assert bootmod.read_boot(h.nodes[n].flash).trial is None


def test_root_withholding_chunks_nodes_fall_back_and_complete(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=3, fallback_timeout=5.0, max_rounds=3)
    h.add_root("root")

    def withhold(frame: bytes) -> bytes | None:
        f = decode(frame)
        return None if isinstance(f, Data) and f.block % 3 == 0 else frame

    h.medium.taps["root"] = withhold
    _deploy(h)
    h.run(300, stop=lambda: all_final(h))
    for n in h.nodes:
        assert h.service.final_status(n, "d2") == "success"
        assert 0 < h.service.range_bytes[n] < len(artifacts.v2)  # only what the root withheld
        assert _running(h, n) == "v2"


def test_root_change_mid_stream_completes_without_restart(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=4, fallback_timeout=1000)
    h.add_root("root-a")
    sent: list[int] = []

    def count(frame: bytes) -> bytes:
        f = decode(frame)
        if isinstance(f, Data):
            sent.append(f.block)
        return frame

    h.medium.taps["root-a"] = count
    _deploy(h)
    h.run(120, stop=lambda: len(sent) >= 12)
    h.remove_root("root-a")  # mid-stream; what it already put on the air still arrives
    h.run(h.now + 0.01)
    got_before = {n: h.nodes[n].agent._receiver.bitmap.count for n in h.nodes}  # type: ignore[union-attr]
    assert all(0 < c < 30 for c in got_before.values())
    root_b = h.add_root("root-b")
    h.run(300, stop=lambda: all_final(h))
    for n in h.nodes:
        assert h.service.final_status(n, "d2") == "success"
        downloading = [s for d, s in h.service.statuses[n] if s == "downloading"]
        assert downloading == ["downloading"]  # never restarted
    head = build_chunk_map(
        artifacts.v2, artifact_id="a2", artifact_name="v2", chunk_size=512, sequence=1, key=SERVER_KEY
    ).head
    total = head.block_count
    # root b sent only what was missing, not the whole image again
    assert root_b.bytes_sent < len(artifacts.v2) + 2000
    assert h.service.range_bytes == {}
    assert total > 12


def test_lossy_link_completes_by_repair_rounds(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=6, loss=0.1, fallback_timeout=1000, seed=7)
    root = h.add_root("root")
    _deploy(h)
    h.run(600, stop=lambda: all_final(h))
    assert all(h.service.final_status(n, "d2") == "success" for n in h.nodes)
    assert h.service.range_bytes == {}
    assert root.bytes_sent < 6 * len(artifacts.v2)  # less than 6 unicast copies even before loss


def test_same_seed_same_trace(artifacts: Artifacts) -> None:
    def trace(seed: int) -> tuple[float, int]:
        h = harness(artifacts, nodes=4, loss=0.1, seed=seed, fallback_timeout=1000)
        root = h.add_root("root")
        _deploy(h)
        h.run(600, stop=lambda: all_final(h))
        return h.now, root.bytes_sent

    assert trace(3) == trace(3)


def test_coded_repair_serves_nodes_that_lost_different_blocks(artifacts: Artifacts) -> None:
    import dataclasses

    from wire.frames import Coded

    def run(coded_max: int) -> tuple[int, int]:
        h = harness(artifacts, nodes=6, loss=0.1, fallback_timeout=1000, seed=7)
        root = h.add_root("root", dataclasses.replace(h.root_config, coded_max=coded_max))
        link = root.link

        class Counting:
            coded = 0

            def send_broadcast(self, frame: bytes) -> None:
                Counting.coded += isinstance(decode(frame), Coded)
                link.send_broadcast(frame)

            def send_unicast(self, node: object, frame: bytes) -> None:
                link.send_unicast(node, frame)

        root.link = Counting()
        _deploy(h)
        h.run(600, stop=lambda: all_final(h))
        assert all(h.service.final_status(n, "d2") == "success" for n in h.nodes)
        assert h.service.range_bytes == {}  # nobody fell back: CODED frames recovered their blocks
        return Counting.coded, root.bytes_sent

    coded, with_coding = run(4)
    plain, without = run(0)
    assert coded > 0 and plain == 0
    assert with_coding < without
