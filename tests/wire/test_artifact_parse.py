"""Mender artifact v3 parsing against artifacts made by the real mender-artifact 3.9,
and malformed variants derived from them (each must fail with a clear message)."""

from __future__ import annotations

import base64
import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.artifacts import (
    ArtifactError,
    ArtifactSignatureError,
    ArtifactTooLarge,
    Limits,
    load_verify_key,
    parse_artifact,
)
from tests.support.mender import make_artifact, write_keys

Entries = list[tuple[str, bytes]]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def keys(work: Path) -> dict[str, Path]:
    return write_keys(work / "keys")


@pytest.fixture(scope="module")
def signed(work: Path, keys: dict[str, Path]) -> Path:
    return make_artifact(work, "signed-ecdsa", key=keys["ecdsa-private"])


@pytest.fixture(scope="module")
def unsigned(work: Path) -> Path:
    return make_artifact(work, "unsigned")


def read_entries(path: Path) -> Entries:
    with tarfile.open(path, "r:") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def write_entries(path: Path, entries: Entries) -> Path:
    with tarfile.open(path, "w:", format=tarfile.GNU_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def derive(src: Path, dst: Path, change: Callable[[Entries], Entries]) -> Path:
    return write_entries(dst, change(read_entries(src)))


def verify_keys(keys: dict[str, Path], *names: str) -> list[object]:
    return [load_verify_key(keys[f"{n}-public"].read_bytes()) for n in names]


@pytest.mark.parametrize("compression", ["gzip", "lzma", "none"])
def test_parses_every_compression(work: Path, keys: dict[str, Path], compression: str) -> None:
    path = make_artifact(work, f"c-{compression}", key=keys["rsa-private"], compression=compression)
    info = parse_artifact(path, keys=verify_keys(keys, "rsa"))  # type: ignore[arg-type]
    assert info.name == f"c-{compression}"
    assert info.device_types == ["test-device"]
    assert info.signed and info.verified
    assert info.compression == compression
    [payload] = info.payloads
    assert payload.type == "single-file"
    assert {f.name for f in payload.files} == {"hello.txt", "dest_dir", "filename", "filler.txt"}
    assert payload.provides == {"rootfs-image.single-file.version": "1.0.0"}


def test_ecdsa_signature_verifies_and_other_key_fails(signed: Path, keys: dict[str, Path]) -> None:
    info = parse_artifact(signed, keys=verify_keys(keys, "rsa", "ecdsa"))  # type: ignore[arg-type]
    assert info.verified
    with pytest.raises(ArtifactSignatureError, match="does not verify"):
        parse_artifact(signed, keys=verify_keys(keys, "rsa"))  # type: ignore[arg-type]


def test_signed_without_keys_is_signed_but_unverified(signed: Path) -> None:
    info = parse_artifact(signed)
    assert info.signed and not info.verified


def test_unsigned_rejected_when_keys_configured(unsigned: Path, keys: dict[str, Path]) -> None:
    assert not parse_artifact(unsigned).signed
    with pytest.raises(ArtifactSignatureError, match="not signed"):
        parse_artifact(unsigned, keys=verify_keys(keys, "ecdsa"))  # type: ignore[arg-type]


def test_tampered_signature(signed: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    def tamper(entries: Entries) -> Entries:
        out = []
        for name, data in entries:
            if name == "manifest.sig":
                raw = bytearray(base64.b64decode(data))
                raw[5] ^= 0x01
                data = base64.b64encode(bytes(raw))
            out.append((name, data))
        return out

    bad = derive(signed, tmp_path / "tampered.mender", tamper)
    with pytest.raises(ArtifactSignatureError, match="does not verify"):
        parse_artifact(bad, keys=verify_keys(keys, "ecdsa"))  # type: ignore[arg-type]


def test_tampered_manifest_breaks_signature(signed: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    def tamper(entries: Entries) -> Entries:
        return [(n, d + b"\n" if n == "manifest" else d) for n, d in entries]

    bad = derive(signed, tmp_path / "manifest.mender", tamper)
    with pytest.raises(ArtifactSignatureError):
        parse_artifact(bad, keys=verify_keys(keys, "ecdsa"))  # type: ignore[arg-type]


def test_truncated(signed: Path, tmp_path: Path) -> None:
    data = signed.read_bytes()
    with tarfile.open(signed, "r:") as tar:
        last = tar.getmembers()[-1]
    end = last.offset_data + last.size  # the payload's last byte; padding follows
    for cut in (100, 1024, len(data) // 2, end - 1, last.offset_data):
        bad = tmp_path / f"cut-{cut}.mender"
        bad.write_bytes(data[:cut])
        with pytest.raises(ArtifactError, match=r"truncated|corrupt|missing|out of order"):
            parse_artifact(bad)


def test_wrong_payload_checksum(unsigned: Path, tmp_path: Path) -> None:
    def swap_payload(entries: Entries) -> Entries:
        out = []
        for name, data in entries:
            if name == "data/0000.tar.gz":
                with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as inner:
                    files = [(m.name, inner.extractfile(m).read()) for m in inner]  # type: ignore[union-attr]
                files = [(n, b"evil\n" if n == "hello.txt" else d) for n, d in files]
                buf = io.BytesIO()
                with tarfile.open(fileobj=buf, mode="w:") as tar:
                    for n, d in files:
                        info = tarfile.TarInfo(n)
                        info.size = len(d)
                        tar.addfile(info, io.BytesIO(d))
                data = gzip.compress(buf.getvalue())
            out.append((name, data))
        return out

    bad = derive(unsigned, tmp_path / "checksum.mender", swap_payload)
    with pytest.raises(ArtifactError, match=r"checksum mismatch for 'data/0000/hello.txt'"):
        parse_artifact(bad)


def test_wrong_header_checksum(unsigned: Path, tmp_path: Path) -> None:
    def tweak(entries: Entries) -> Entries:
        # same header content, different gzip bytes -> the manifest's digest no longer matches
        return [
            (n, gzip.compress(gzip.decompress(d), mtime=1) if n == "header.tar.gz" else d) for n, d in entries
        ]

    bad = derive(unsigned, tmp_path / "header.mender", tweak)
    with pytest.raises(ArtifactError, match=r"checksum mismatch for 'header\.tar\.gz'"):
        parse_artifact(bad)


@pytest.mark.parametrize("evil", ["../evil", "/etc/passwd", "data/../../x"])
def test_outer_path_traversal(unsigned: Path, tmp_path: Path, evil: str) -> None:
    bad = derive(unsigned, tmp_path / "trav.mender", lambda e: [*e[:2], (evil, b"x"), *e[2:]])
    with pytest.raises(ArtifactError, match="unsafe path"):
        parse_artifact(bad)


def test_payload_path_traversal(unsigned: Path, tmp_path: Path) -> None:
    def evil_data(entries: Entries) -> Entries:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:") as tar:
            info = tarfile.TarInfo("../../etc/cron.d/x")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
        return [(n, gzip.compress(buf.getvalue()) if n.startswith("data/") else d) for n, d in entries]

    bad = derive(unsigned, tmp_path / "trav2.mender", evil_data)
    with pytest.raises(ArtifactError, match="unsafe path"):
        parse_artifact(bad)


def test_symlink_entry_rejected(unsigned: Path, tmp_path: Path) -> None:
    entries = read_entries(unsigned)
    path = tmp_path / "link.mender"
    with tarfile.open(path, "w:") as tar:
        for name, data in entries[:1]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("manifest")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/shadow"
        tar.addfile(link)
    with pytest.raises(ArtifactError, match="not a regular file"):
        parse_artifact(path)


def test_one_gib_header_claim(unsigned: Path, tmp_path: Path) -> None:
    entries = read_entries(unsigned)
    path = tmp_path / "huge.mender"
    with path.open("wb") as fh:
        for name, data in entries[:2]:  # version, manifest; no end-of-archive blocks
            info = tarfile.TarInfo(name)
            info.size = len(data)
            fh.write(info.tobuf(format=tarfile.GNU_FORMAT))
            fh.write(data + b"\0" * (-len(data) % 512))
        huge = tarfile.TarInfo("header.tar.gz")
        huge.size = 1 << 30
        fh.write(huge.tobuf(format=tarfile.GNU_FORMAT))
        fh.write(b"\0" * 4096)
    with pytest.raises(ArtifactTooLarge, match=r"header\.tar\.gz.*1073741824"):
        parse_artifact(path, limits=Limits(header_size=16 << 20))


def test_payload_size_limit(work: Path, tmp_path: Path) -> None:
    path = make_artifact(work, "big", content=b"x" * 200_000)
    with pytest.raises(ArtifactTooLarge, match="payload exceeds"):
        parse_artifact(path, limits=Limits(payload_size=100_000))


def test_unknown_entry_and_order(unsigned: Path, tmp_path: Path) -> None:
    bad = derive(unsigned, tmp_path / "extra.mender", lambda e: [*e, ("surprise", b"x")])
    with pytest.raises(ArtifactError, match="unexpected artifact entry 'surprise'"):
        parse_artifact(bad)
    swapped = derive(unsigned, tmp_path / "order.mender", lambda e: [e[1], e[0], *e[2:]])
    with pytest.raises(ArtifactError, match="out of order"):
        parse_artifact(swapped)


def test_garbage_is_rejected(tmp_path: Path) -> None:
    for i, blob in enumerate([b"", b"not a tar at all" * 100, bytes(range(256)) * 40]):
        path = tmp_path / f"g{i}.mender"
        path.write_bytes(blob)
        with pytest.raises(ArtifactError):
            parse_artifact(path)
