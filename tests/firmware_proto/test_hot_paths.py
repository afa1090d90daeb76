"""What per-frame and per-node paths of the product do to stay cheap when one process runs many
nodes (the simulator): firmware_proto.boot.image_sha256 hashes a ``bytes`` object once (the
bootloader and the update agent of many nodes check one shared image), and the agent's state
constants are AgentState's members without an Enum lookup per frame."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from firmware_proto import boot


@given(st.binary(max_size=4096))
def test_the_digest_is_sha256(data: bytes) -> None:
    assert boot.image_sha256(data) == hashlib.sha256(data).digest()


def test_the_same_object_is_hashed_once_and_equal_bytes_are_not_confused() -> None:
    calls: list[int] = []
    real = hashlib.sha256

    def counting(data: bytes) -> object:
        calls.append(len(data))
        return real(data)

    image = bytes(range(256)) * 64
    boot._digests.clear()
    try:
        hashlib.sha256 = counting  # type: ignore[assignment]
        first = boot.image_sha256(image)
        assert boot.image_sha256(image) == first and len(calls) == 1  # the memo
        other = bytes(bytearray(image))  # equal bytes, another object: hashed (identity only)
        assert other is not image and boot.image_sha256(other) == first and len(calls) == 2
        tampered = image[:-1] + b"\x00"
        assert boot.image_sha256(tampered) != first and len(calls) == 3
    finally:
        hashlib.sha256 = real  # type: ignore[assignment]


def test_mutable_buffers_are_hashed_every_time() -> None:
    buf = bytearray(b"image" * 100)
    before = boot.image_sha256(buf)  # type: ignore[arg-type]
    buf[0] ^= 1  # the same object, other bytes: a memo keyed by identity would be wrong here
    after = boot.image_sha256(buf)  # type: ignore[arg-type]
    assert before != after == hashlib.sha256(buf).digest()


def test_the_memo_is_bounded() -> None:
    boot._digests.clear()
    for i in range(3 * boot._DIGESTS_MAX):
        boot.image_sha256(bytes([i]) * 100)
    assert len(boot._digests) <= boot._DIGESTS_MAX


def test_the_agents_state_constants_are_agentstate_s_members() -> None:
    """update_agent._S mirrors AgentState member for member (the same objects): a new state
    added to AgentState must be added there too."""
    from firmware_proto import update_agent
    from firmware_proto.update_state import AgentState

    mirrored = {k: v for k, v in vars(update_agent._S).items() if k.isupper()}
    assert mirrored == dict(AgentState.__members__)
    assert all(v is AgentState[k] for k, v in mirrored.items())
