"""FileFlash, the file-backed flash (a directory per device): what it holds survives reopening
(a power cycle), and a power cut at any write of a whole update leaves files from which the
bootloader boots a valid vendor-signed image — the old one until the new one is committed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.artifacts import load_verify_key
from firmware_proto import boot as bootmod
from firmware_proto.flash_store import FileFlash
from firmware_proto.testing.group import install_initial_image
from tests.support.update import Artifacts, harness
from wire.image_verify import mender_image_verifier

SLOT = 64 * 1024


def test_records_and_slots_survive_reopening(tmp_path: Path) -> None:
    flash = FileFlash(tmp_path / "node", SLOT)
    flash.write_record("boot", b"\x00\x01")
    flash.write_slot(1, 100, b"image bytes")
    flash.delete_record("missing")  # deleting what is not there is no error
    again = FileFlash(tmp_path / "node", SLOT)
    assert again.read_record("boot") == b"\x00\x01" and again.read_record("agent") is None
    assert again.read_slot(1, 100, 11) == b"image bytes"
    assert again.read_slot(0, 0, 4) == b"\xff" * 4  # erased flash reads 0xFF
    again.erase_slot(1)
    assert FileFlash(tmp_path / "node", SLOT).read_slot(1, 100, 11) == b"\xff" * 11


def test_a_record_write_cut_before_its_rename_keeps_the_old_record(tmp_path: Path) -> None:
    flash = FileFlash(tmp_path / "node", SLOT)
    flash.write_record("boot", b"old")
    (tmp_path / "node" / "rec-boot.tmp").write_bytes(b"half-writ")  # the cut: temp file, no rename
    assert FileFlash(tmp_path / "node", SLOT).read_record("boot") == b"old"
    flash.write_record("boot", b"new")
    assert flash.read_record("boot") == b"new"


@pytest.mark.parametrize(("slot", "offset", "length"), [(2, 0, 1), (-1, 0, 1), (0, SLOT - 1, 2), (1, -1, 1)])
def test_out_of_range_slot_access_is_refused(tmp_path: Path, slot: int, offset: int, length: int) -> None:
    flash = FileFlash(tmp_path / "node", SLOT)
    with pytest.raises(ValueError, match="out of range"):
        flash.write_slot(slot, offset, b"x" * length)
    with pytest.raises(ValueError, match="out of range"):
        flash.read_slot(slot, offset, length)


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_bad_record_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="bad record name"):
        FileFlash(tmp_path / "node", SLOT).read_record(name)


def _update_until_cut(artifacts: Artifacts, directory: Path, cut_at: int | None) -> int:
    """A whole group update of one node on FileFlash; stops at the power cut (or the end).
    Returns the number of flash writes the run made."""
    h = harness(artifacts, nodes=0, fallback_timeout=3.0, chunk_size=1024)
    flash = FileFlash(directory, SLOT)
    if flash.read_record("boot") is None:
        install_initial_image(flash, artifacts.v1, "v1")
    rig = h.add_node(0, flash)
    rig.flash.cut_at = cut_at
    h.add_root("root")
    h.learn(0, "d2", "a2", "mem://a2")
    h.run(
        400,
        stop=lambda: (
            rig.cuts > 0
            or (
                h.service.final_status(0, "d2") is not None
                and rig.agent is not None
                and rig.agent.state.name == "IDLE"
            )
        ),
    )
    assert (rig.cuts == 1) == (cut_at is not None), cut_at
    return rig.flash.writes


def test_power_cut_at_every_write_leaves_a_bootable_signed_image(
    artifacts: Artifacts, tmp_path: Path
) -> None:
    image_ok = mender_image_verifier([load_verify_key(artifacts.vendor_public)])
    writes = _update_until_cut(artifacts, tmp_path / "clean", None)
    clean = FileFlash(tmp_path / "clean", SLOT)
    assert bootmod.slot_image(clean, bootmod.read_boot(clean).active) == artifacts.v2
    assert writes > 10
    committed_seen = False
    for cut_at in range(writes):
        directory = tmp_path / f"cut-{cut_at}"
        _update_until_cut(artifacts, directory, cut_at)
        # power back on: a fresh FileFlash from the files is all the bootloader has
        flash = FileFlash(directory, SLOT)
        booted = bootmod.boot(flash, image_ok)
        image = bootmod.slot_image(flash, booted.slot)
        assert image is not None and image_ok(image), cut_at
        if image == artifacts.v2:
            committed_seen = True
        else:
            assert image == artifacts.v1, cut_at
        # and the update resumes from those files to the end, the new image committed
        _update_until_cut(artifacts, directory, None)
        done = FileFlash(directory, SLOT)
        state = bootmod.read_boot(done)
        assert state.trial is None and bootmod.slot_image(done, state.active) == artifacts.v2, cut_at
    assert committed_seen  # cuts late in the run boot the new image, early ones the old
