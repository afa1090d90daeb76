"""firmware_proto/mesh_report.py: a root's progress reports from the real GroupStreamRoot."""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import Any, cast

import pytest

from firmware_proto.aio.device_mqttsn import MqttSnDevice
from firmware_proto.device_api import MESH_REPORT_CONTENT_TYPE
from firmware_proto.group_stream import StreamProgress
from firmware_proto.mesh_report import MeshReporter, report_of
from mqttsn._codec import encode
from mqttsn._packets import Publish
from tests.support.update import Artifacts, all_final, harness
from wire.envelope import RequestEnvelope
from wire.mesh_report import NODE_DONE, NODE_RECEIVING, MeshNode, decode_mesh_report, encode_mesh_report


def test_reports_follow_a_lossy_stream_and_end_with_a_final_one(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=5, loss=0.25, seed=3)
    root = h.add_root("root")
    reporter = MeshReporter(root, 2.0, lambda member: f"dev-{member}")
    for n in h.nodes:
        h.learn(n, "d2", "a2", "mem://a2")
    sent: list[tuple[float, bytes]] = []
    while h.now < 300 and not (all_final(h) and not root.busy) and h.step():
        sent += [(h.now, r) for r in reporter.due(h.now)]
    sent += [(h.now, r) for r in reporter.due(h.now)]
    reports = [(t, decode_mesh_report(r)) for t, r in sent]
    assert len(reports) >= 2
    running = [(t, r) for t, r in reports if not r.final]
    assert running, "no report while the stream ran"
    times = [t for t, _ in running]
    assert all(b - a >= 2.0 for a, b in itertools.pairwise(times))  # the interval holds
    # some node missed blocks under 25 % loss, and a report said so
    assert any(n.state == NODE_RECEIVING and n.missing > 0 for _, r in running for n in r.nodes)
    _, last = reports[-1]
    assert last.final and last.complete and last.artifact_id == "a2" and last.artifact_name == "v2"
    assert {n.device_id for n in last.nodes} == {f"dev-{n}" for n in h.nodes} and last.members == 5
    # done, or silent through the quiet polls that ended the stream (their DONE may have been lost)
    assert all(n.missing == 0 and n.state in (NODE_DONE, NODE_RECEIVING) for n in last.nodes)
    assert any(n.state == NODE_DONE for n in last.nodes)
    assert last.bytes_on_air == root.bytes_sent and last.frames_on_air == root.frames_sent
    assert sum(1 for _, r in reports if r.final) == 1  # the end is reported once
    assert reporter.due(h.now + 100) == [] and reporter.next_timer() is None


def test_nothing_to_report_before_a_stream_starts(artifacts: Artifacts) -> None:
    h = harness(artifacts, nodes=2)
    root = h.add_root("root")
    reporter = MeshReporter(root, 1.0, str)
    assert reporter.due(0.0) == [] and reporter.next_timer() is None
    with pytest.raises(ValueError, match="interval"):
        MeshReporter(root, 0, str)


def test_a_small_transport_gets_the_neediest_nodes_that_fit() -> None:
    """``max_bytes`` (MQTT-SN: one datagram): nodes that miss most stay listed, done ones go first;
    ``members`` still counts every node; the record never exceeds the room."""
    members = frozenset(range(40))
    done = frozenset(range(20))
    missing: dict[Hashable, int] = {m: m for m in range(20, 40)}  # node 39 misses most
    p = StreamProgress(
        "a2", "v2", b"\x07" * 8, 64, 3, False, False, 9_000, 12, members, done, missing
    )  # fmt: skip

    def name(m: Hashable) -> str:
        return f"{m:036d}"  # UUID-long ids

    whole = report_of(p, name)
    assert len(whole.nodes) == 40
    for room in (1_500, 700, 200, len(encode_mesh_report(whole)), 10_000):
        rep = report_of(p, name, room)
        assert len(encode_mesh_report(rep)) <= max(room, 0) and rep.members == 40
        assert rep.nodes == whole.nodes[: len(rep.nodes)]  # a prefix: neediest first
        per_node = 1 + 36 + 5
        assert room - len(encode_mesh_report(rep)) < per_node or len(rep.nodes) == 40  # as many as fit
    assert report_of(p, name, 700).nodes[0] == MeshNode(name(39), NODE_RECEIVING, 39)
    assert all(n.state == NODE_RECEIVING for n in report_of(p, name, 700).nodes)
    assert report_of(p, name, 50).nodes == ()  # not even one fits: the counts alone


@pytest.mark.parametrize("token_len", [0, 380, 700])
def test_mqttsn_room_is_what_one_publish_of_max_packet_carries(token_len: int) -> None:
    """The PUBLISH of a report of exactly ``mesh_report_room()`` bytes, with the highest request id
    and serial, is at most ``max_packet`` bytes (a bigger one would end the DTLS session)."""
    dev = MqttSnDevice(cast(Any, None), "root-0", "02:00:00:00:00:00", request_ids=8)
    dev.token = "t" * token_len
    room = dev.mesh_report_room()
    assert room > 0
    env = RequestEnvelope(
        "7", "POST", dev.token or None, MESH_REPORT_CONTENT_TYPE, b"\x00" * room, {}, {}, 2**32 - 1
    ).encode()
    packet = encode(Publish(topic_id=0xFFFF, data=env, qos=1, msg_id=0xFFFF))
    assert dev.max_packet - 8 <= len(packet) <= dev.max_packet  # little wasted either
