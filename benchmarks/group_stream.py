"""Bytes the root puts on the air for one image to N nodes vs N unicast downloads (same run).

Group: the product's GroupStreamRoot + UpdateAgents on a one-hop broadcast medium (each copy of
each frame lost independently with probability ``loss``), counting every byte the root sent
(HEAD, POLL, DATA, END frames with their headers). Baseline: N unicast downloads of the same
image in the same chunk frames with per-frame retransmission until delivered (ideal ARQ, acks
not counted), losses drawn from the same seeded generator. Node → root traffic (WANT/NACK) is
printed separately. Run: ``.venv/bin/python benchmarks/group_stream.py``.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware_proto.group_stream import RootConfig
from firmware_proto.testing.flash import MemoryFlash
from firmware_proto.testing.group import GroupHarness, MemoryDeviceService, install_initial_image
from firmware_proto.update_agent import AgentConfig
from wire.frames import Data, encode

IMAGE_SIZE = 128 * 1024
CHUNK = 1024


def group_run(n: int, loss: float, image: bytes, seed: int) -> tuple[int, int, float, int]:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32))
    service = MemoryDeviceService(key)
    service.add_artifact("a2", "v2", image)
    # the whole-image vendor check is exercised by the tests; here every image is the right one
    config = AgentConfig(map_key=key.public_key(), image_ok=lambda _: True, fallback_timeout=10_000)
    h = GroupHarness(
        seed=seed,
        service=service,
        agent_config=config,
        loss=loss,
        root_config=RootConfig(collection_window=1.0, chunk_size=CHUNK, max_rounds=50),
    )
    root = h.add_root("root")
    for i in range(n):
        flash = MemoryFlash(IMAGE_SIZE + 4096)
        install_initial_image(flash, b"v1" * 100, "v1")
        h.add_node(i, flash)
        h.learn(i, "d", "a2", "mem://a2")
    h.run(100_000, stop=lambda: all(service.final_status(i, "d") for i in range(n)))
    assert all(service.final_status(i, "d") == "success" for i in range(n))
    assert not service.range_bytes, "a node fell back: the comparison would not be fair"
    node_bytes = sum(c.bytes for m, c in h.medium.sent.items() if m != "root")
    return root.bytes_sent, node_bytes, h.now, root.fetches


def unicast_bytes(n: int, loss: float, image: bytes, seed: int) -> int:
    rng = random.Random(seed)
    total = 0
    for _ in range(n):
        for block, offset in enumerate(range(0, len(image), CHUNK)):
            frame = len(encode(Data(bytes(8), block, image[offset : offset + CHUNK])))
            total += frame
            while rng.random() < loss:
                total += frame
    return total


def main() -> None:
    image = random.Random(0).randbytes(IMAGE_SIZE)
    print(f"image {IMAGE_SIZE} B, chunk {CHUNK} B, one-hop broadcast medium, seed 1")
    print(
        f"{'N':>4} {'loss':>5} {'root sent':>11} {'unicast':>12} {'ratio':>7} {'nodes sent':>11} {'sim s':>7}"
    )
    for n in (10, 100):
        for loss in (0.0, 0.1):
            root_bytes, node_bytes, seconds, fetches = group_run(n, loss, image, seed=1)
            assert fetches == 1
            uni = unicast_bytes(n, loss, image, seed=2)
            print(
                f"{n:>4} {loss:>5.0%} {root_bytes:>11,} {uni:>12,} {uni / root_bytes:>6.1f}x "
                f"{node_bytes:>11,} {seconds:>7.1f}"
            )


if __name__ == "__main__":
    main()
