"""Archive-header bombs: every tar header size field is checked before tarfile reads what it
claims, and corrupted headers only ever raise ArtifactError (-> 400), never anything else."""

from __future__ import annotations

import contextlib
import gzip
import io
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.mender import make_artifact
from wire.artifact import ArtifactError, ArtifactTooLarge, parse_artifact

CLAIM = 64 << 20  # a pax record claiming 64 MiB; tarfile (unguarded) allocates all of it


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("bombs")
    return make_artifact(work, "bomb-base", compression="none")


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    with tarfile.open(path, "r:") as tar:
        for m in tar:
            f = tar.extractfile(m)
            assert f is not None
            out.append((m, f.read()))
    return out


def _pax_block(size: int) -> bytes:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = size
    return info.tobuf(tarfile.USTAR_FORMAT)


def _with_data(real: Path, out: Path, data_name: str, data: bytes) -> Path:
    """The real artifact's version/manifest/header, then ``data_name`` holding ``data``."""
    with tarfile.open(out, "w:", format=tarfile.USTAR_FORMAT) as tar:
        for member, content in _members(real):
            if member.name.startswith("data/"):
                continue
            tar.addfile(member, io.BytesIO(content))
        info = tarfile.TarInfo(data_name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out


def _peak_while(fn: object) -> int:
    tracemalloc.start()
    try:
        assert callable(fn)
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_compressed_pax_bomb_is_refused_before_allocating(real: Path, tmp_path: Path) -> None:
    # a gzip'd payload tar whose first header is a pax record claiming 64 MiB of zeros (~64 KiB)
    bomb = gzip.compress(_pax_block(CLAIM) + bytes(CLAIM) + bytes(1024), compresslevel=1)
    assert len(bomb) < 400_000
    path = _with_data(real, tmp_path / "bomb.mender", "data/0000.tar.gz", bomb)

    def parse() -> None:
        with pytest.raises(ArtifactTooLarge, match="extended header claims"):
            parse_artifact(path)

    assert _peak_while(parse) < 8 << 20  # unguarded: > 64 MiB


def test_outer_pax_record_over_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outer.mender"
    path.write_bytes(_pax_block(1 << 30) + bytes(4096))
    with pytest.raises(ArtifactTooLarge):
        parse_artifact(path)


def test_pax_record_length_of_5000_digits_is_an_artifact_error(real: Path, tmp_path: Path) -> None:
    record = b"9" * 5000 + b" path=x\n"
    data = _pax_block(len(record)) + record + bytes(-len(record) % 512) + bytes(1024)
    path = _with_data(real, tmp_path / "digits.mender", "data/0000.tar", data)
    with pytest.raises(ArtifactError):
        parse_artifact(path)


def test_long_chain_of_pax_headers_is_refused_without_recursion(real: Path, tmp_path: Path) -> None:
    record = b"11 path=x\n"
    one = _pax_block(len(record)) + record + bytes(512 - len(record))
    path = _with_data(real, tmp_path / "chain.mender", "data/0000.tar", one * 5000 + bytes(1024))
    with pytest.raises(ArtifactError, match="in a row"):
        parse_artifact(path)


def test_gnu_long_name_over_limit_is_refused(real: Path, tmp_path: Path) -> None:
    info = tarfile.TarInfo("././@LongLink")
    info.type = tarfile.GNUTYPE_LONGNAME
    info.size = CLAIM
    data = gzip.compress(info.tobuf(tarfile.GNU_FORMAT) + bytes(CLAIM), compresslevel=1)
    path = _with_data(real, tmp_path / "gnu.mender", "data/0000.tar.gz", data)
    with pytest.raises(ArtifactTooLarge):
        parse_artifact(path)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_corrupted_headers_raise_only_artifact_errors(
    real: Path, tmp_path: Path, data: st.DataObject
) -> None:
    raw = bytearray(real.read_bytes())
    # header blocks of the outer tar sit at 512-byte boundaries; hit them and their size fields
    edits = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, min(len(raw), 16 * 512) - 1)
                | st.sampled_from([124, 130, 156, 512 + 124, 1024 + 156]),
                st.integers(0, 255)
                | st.sampled_from([ord("x"), ord("g"), ord("L"), ord("S"), 0x80, ord("7")]),
            ),
            min_size=1,
            max_size=8,
        )
    )
    for offset, value in edits:
        raw[offset] = value
    path = tmp_path / "corrupt.mender"
    path.write_bytes(bytes(raw))
    # anything but ArtifactError (ValueError, RecursionError, MemoryError, struct.error) fails it
    with contextlib.suppress(ArtifactError):
        parse_artifact(path)
