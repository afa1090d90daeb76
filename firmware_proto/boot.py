"""A/B boot model (MCUboot "test" swap, without the swap): what runs after a reboot.

Records (byte layouts in SPEC.md §4):

* ``boot``  — ``'B' active trial tried``: the confirmed slot, the slot to try once (0xFF: none),
  and whether that try already started. A trial that reboots again without being confirmed is
  rolled back: the bootloader boots ``active`` again.
* ``slot0`` / ``slot1`` — what a slot holds: size, SHA-256, the chunk map sequence number it came
  with, the artifact name. The bootloader boots a slot only if its bytes hash to that SHA-256 and
  the injected image check (the vendor signature: secure boot) accepts them.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

from .flash_store import FlashStore

__all__ = [
    "NO_SLOT",
    "BootState",
    "Booted",
    "SlotInfo",
    "boot",
    "confirm",
    "image_sha256",
    "read_boot",
    "read_slot_info",
    "slot_image",
    "write_slot_info",
    "write_trial",
]

NO_SLOT = 0xFF
_META = struct.Struct(">I32sQ")

_DIGESTS_MAX = 8
_digests: dict[int, tuple[bytes, bytes]] = {}  # id(bytes object) → (that object, its SHA-256)


def image_sha256(data: bytes) -> bytes:
    """SHA-256 of a whole image. ``bytes`` are immutable: the same object hashed again (one process
    running many nodes that hold one shared image, as the simulator does) returns the digest
    computed before. The memo keeps the last ``_DIGESTS_MAX`` objects alive and matches by
    identity, so an id reused by another object never matches; anything but ``bytes`` is hashed
    every time."""
    hit = _digests.get(id(data))
    if hit is not None and hit[0] is data:
        return hit[1]
    digest = hashlib.sha256(data).digest()
    if type(data) is bytes:
        if len(_digests) >= _DIGESTS_MAX:
            _digests.clear()
        _digests[id(data)] = (data, digest)
    return digest


@dataclass(frozen=True, slots=True)
class SlotInfo:
    size: int
    sha256: bytes
    sequence: int
    artifact_name: str

    def encode(self) -> bytes:
        name = self.artifact_name.encode()
        return _META.pack(self.size, self.sha256, self.sequence) + bytes([len(name)]) + name

    @classmethod
    def decode(cls, data: bytes) -> SlotInfo:
        size, digest, seq = _META.unpack_from(data)
        n = data[_META.size]
        return cls(size, digest, seq, data[_META.size + 1 : _META.size + 1 + n].decode())


@dataclass(frozen=True, slots=True)
class BootState:
    active: int
    trial: int | None
    tried: bool

    def encode(self) -> bytes:
        return bytes([0x42, self.active, NO_SLOT if self.trial is None else self.trial, int(self.tried)])

    @classmethod
    def decode(cls, data: bytes) -> BootState:
        if len(data) != 4 or data[0] != 0x42:
            raise ValueError("bad boot record")
        return cls(data[1], None if data[2] == NO_SLOT else data[2], bool(data[3]))


@dataclass(frozen=True, slots=True)
class Booted:
    slot: int
    trial: bool


def read_boot(flash: FlashStore) -> BootState:
    raw = flash.read_record("boot")
    return BootState.decode(raw) if raw is not None else BootState(0, None, False)


def read_slot_info(flash: FlashStore, slot: int) -> SlotInfo | None:
    raw = flash.read_record(f"slot{slot}")
    return SlotInfo.decode(raw) if raw is not None else None


def write_slot_info(flash: FlashStore, slot: int, info: SlotInfo | None) -> None:
    if info is None:
        flash.delete_record(f"slot{slot}")
    else:
        flash.write_record(f"slot{slot}", info.encode())


def slot_image(flash: FlashStore, slot: int) -> bytes | None:
    """The image in ``slot`` if its metadata exists and its bytes match the SHA-256."""
    info = read_slot_info(flash, slot)
    if info is None or info.size > flash.slot_size:
        return None
    data = flash.read_slot(slot, 0, info.size)
    return data if image_sha256(data) == info.sha256 else None


def write_trial(flash: FlashStore, slot: int) -> None:
    """Ask the bootloader to try ``slot`` once on the next boot."""
    state = read_boot(flash)
    flash.write_record("boot", BootState(state.active, slot, False).encode())


def confirm(flash: FlashStore, slot: int) -> None:
    """The running trial image is good: make it the active slot."""
    flash.write_record("boot", BootState(slot, None, False).encode())


def boot(flash: FlashStore, image_ok: Callable[[bytes], bool] = lambda _: True) -> Booted:
    """What the bootloader does at power-on; returns the slot it jumps to."""
    state = read_boot(flash)
    if state.trial is not None:
        image = slot_image(flash, state.trial)
        if not state.tried and image is not None and image_ok(image):
            flash.write_record("boot", BootState(state.active, state.trial, True).encode())
            return Booted(state.trial, True)
        flash.write_record("boot", BootState(state.active, None, False).encode())  # roll back
    image = slot_image(flash, state.active)
    if image is None or not image_ok(image):
        raise RuntimeError(f"no bootable image in active slot {state.active}")  # bricked: tests forbid it
    return Booted(state.active, False)
