"""Mender artifact format v3: parse and check an artifact file before anything is stored.

Order of the outer (uncompressed) tar is enforced: version, manifest, [manifest.sig],
header.tar[.gz|.xz], data/NNNN.tar[.gz|.xz].... Every size field is checked against the
limits and against the file size before a byte of that entry is read, every name is checked
for traversal, every file listed in the manifest must be seen with a matching SHA-256.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import re
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeGuard, cast

from wire.artifact._errors import ArtifactError, ArtifactSignatureError, ArtifactTooLarge
from wire.artifact._signature import VerifyKey, verify_manifest

__all__ = ["ArtifactInfo", "Limits", "PayloadFile", "PayloadInfo", "parse_artifact"]

_CHUNK = 64 * 1024
_OUTER_META = {"version", "manifest", "manifest.sig", "manifest-augment"}
_HEADER = re.compile(r"^header\.tar(\.gz|\.xz)?$")
_DATA = re.compile(r"^data/(\d{4})\.tar(\.gz|\.xz)?$")
_AUGMENT = re.compile(r"^header-augment\.tar(\.gz|\.xz)?$")
_HEADER_ENTRY = re.compile(
    r"^(header-info|scripts/[A-Za-z]+_(Enter|Leave|Error)(_\d\d(_[\w.-]+)?)?|"
    r"headers/(\d{4})/(type-info|meta-data))$"
)
_MANIFEST_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$")
_PAYLOAD_NAME = re.compile(r"^[^/\\\x00]+$")


@dataclass(frozen=True, slots=True)
class Limits:
    meta_size: int = 1 << 20  # version, manifest, manifest.sig, header-info, type-info, ...
    header_size: int = 16 << 20  # header.tar*, compressed and uncompressed
    payload_size: int = 8 << 30  # all payload files, uncompressed
    payload_files: int = 1024
    tar_record_size: int = 64 << 10  # one pax / GNU long-name record, in any tar of the artifact
    tar_records_in_row: int = 8  # extended records before one member (tarfile recurses per record)
    header_entries: int = 4096  # members of header.tar


_EXTENDED = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


def _capped_tarinfo(limits: Limits) -> type[tarfile.TarInfo]:
    """A TarInfo class for one archive that checks each header's size field before tarfile
    reads the record behind it: tarfile reads a pax or GNU long-name record whole (a header
    claiming 768 MiB allocates 768 MiB, more while parsing it) and recurses once per record."""
    in_row = 0
    global_bytes = 0

    class CappedTarInfo(tarfile.TarInfo):
        def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
            nonlocal in_row, global_bytes
            if self.type in _EXTENDED:
                if self.size > limits.tar_record_size:
                    raise ArtifactTooLarge(
                        f"tar extended header claims {self.size} bytes, limit is {limits.tar_record_size}"
                    )
                in_row += 1
                if in_row > limits.tar_records_in_row:
                    raise ArtifactError(
                        f"more than {limits.tar_records_in_row} tar extended headers in a row"
                    )
                if self.type == tarfile.XGLTYPE:
                    global_bytes += self.size  # global records accumulate for the whole archive
                    if global_bytes > limits.tar_record_size:
                        raise ArtifactTooLarge(f"tar global headers exceed {limits.tar_record_size} bytes")
            else:
                in_row = 0
                if self.type == tarfile.GNUTYPE_SPARSE:
                    raise ArtifactError("sparse tar members are not supported")
            member: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
            return member

    return CappedTarInfo


def _open_tar(fileobj: IO[bytes], *, stream: bool, limits: Limits) -> tarfile.TarFile:
    if stream:
        return tarfile.open(fileobj=fileobj, mode="r|", tarinfo=_capped_tarinfo(limits))
    return tarfile.open(fileobj=fileobj, mode="r:", tarinfo=_capped_tarinfo(limits))


@dataclass(frozen=True, slots=True)
class PayloadFile:
    name: str
    size: int
    sha256: str


@dataclass(slots=True)
class PayloadInfo:
    type: str | None
    provides: dict[str, Any] = field(default_factory=dict)
    depends: dict[str, Any] = field(default_factory=dict)
    clears_provides: list[str] = field(default_factory=list)
    meta_data: dict[str, Any] = field(default_factory=dict)
    files: list[PayloadFile] = field(default_factory=list)


@dataclass(slots=True)
class ArtifactInfo:
    name: str
    format: str
    version: int
    device_types: list[str]
    provides: dict[str, Any]
    depends: dict[str, Any]
    payloads: list[PayloadInfo]
    signed: bool
    verified: bool
    compression: str
    scripts: list[str]
    size: int
    sha256: str


def parse_artifact(
    path: Path, *, keys: Sequence[VerifyKey] = (), limits: Limits | None = None
) -> ArtifactInfo:
    """Parse and fully check ``path``; raise :class:`ArtifactError` with a clear reason."""
    limits = limits or Limits()
    size = path.stat().st_size
    outer_hash = hashlib.sha256()
    with path.open("rb") as raw:
        hashing = _HashingReader(raw, outer_hash)
        try:
            parser = _Parser(size, keys, limits)
            with _open_tar(cast(IO[bytes], hashing), stream=True, limits=limits) as tar:
                for member in tar:
                    parser.entry(tar, member)
            hashing.drain()
        except ArtifactError:
            raise
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as exc:
            # ValueError: tarfile's own number parsing (e.g. a pax record length of 5,000 digits)
            raise ArtifactError(f"truncated or corrupt artifact: {str(exc)[:200]}") from None
        except RecursionError:
            raise ArtifactError("corrupt artifact: nesting too deep") from None
    return parser.finish(size, outer_hash.hexdigest())


class _HashingReader(io.RawIOBase):
    """Read-through wrapper that hashes every byte of the outer file once."""

    def __init__(self, raw: IO[bytes], digest: Any) -> None:
        self._raw = raw
        self._digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        self._digest.update(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while chunk := self._raw.read(_CHUNK):
            self._digest.update(chunk)


def _check_name(name: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or "\x00" in name:
        raise ArtifactError(f"unsafe path in artifact: {name!r}")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: 5,000-digit ints too
        raise ArtifactError(f"{what} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{what} must be a JSON object")
    return obj


def _decompressor(fileobj: IO[bytes], suffix: str | None) -> IO[bytes]:
    if suffix == ".gz":
        return cast(IO[bytes], gzip.GzipFile(fileobj=fileobj, mode="rb"))
    if suffix == ".xz":
        return cast(IO[bytes], lzma.LZMAFile(fileobj, mode="rb"))
    return fileobj


class _Parser:
    def __init__(self, file_size: int, keys: Sequence[VerifyKey], limits: Limits) -> None:
        self.file_size = file_size
        self.keys = keys
        self.limits = limits
        self.stage = 0  # 0 version, 1 manifest, 2 sig/augment, 3 header, 4 data
        self.version: dict[str, Any] | None = None
        self.manifest: dict[str, str] = {}
        self.manifest_raw = b""
        self.signature: bytes | None = None
        self.seen: dict[str, str] = {}
        self.header_info: dict[str, Any] = {}
        self.payloads: list[PayloadInfo] = []
        self.scripts: list[str] = []
        self.compression = "none"
        self.payload_bytes = 0
        self.next_data = 0
        self._last = b""

    # -- outer tar ----------------------------------------------------------------------
    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        _check_name(name)
        if not member.isfile():
            raise ArtifactError(f"artifact entry {name!r} is not a regular file")
        if name in _OUTER_META or _HEADER.match(name):
            limit = self.limits.header_size if _HEADER.match(name) else self.limits.meta_size
            if member.size > limit:
                raise ArtifactTooLarge(
                    f"artifact entry {name!r} claims {member.size} bytes, limit is {limit}"
                )
        if member.size > self.file_size:
            raise ArtifactError(
                f"truncated artifact: entry {name!r} claims {member.size} bytes "
                f"but the file has {self.file_size}"
            )
        if name == "version":
            self._expect(0, name)
            self.version = _json_object(self._read(tar, member), "version")
            self.seen["version"] = hashlib.sha256(self._last).hexdigest()
            if self.version.get("format") != "mender" or self.version.get("version") != 3:
                raise ArtifactError(f"unsupported artifact version {self.version!r}")
            self.stage = 1
        elif name == "manifest":
            self._expect(1, name)
            self.manifest_raw = self._read(tar, member)
            self.manifest = self._parse_manifest(self.manifest_raw)
            self.stage = 2
        elif name == "manifest.sig":
            self._expect(2, name)
            self.signature = self._read(tar, member)
        elif name == "manifest-augment" or _AUGMENT.match(name):
            raise ArtifactError("augmented (delta) artifacts are not supported")
        elif m := _HEADER.match(name):
            if self.stage != 2:
                raise ArtifactError(f"artifact entry {name!r} out of order")
            data = self._read(tar, member)
            self.seen[name] = hashlib.sha256(data).hexdigest()
            self.compression = {".gz": "gzip", ".xz": "lzma", None: "none"}[m.group(1)]
            self._header(data, m.group(1))
            self.stage = 4
        elif m := _DATA.match(name):
            if self.stage != 4:
                raise ArtifactError(f"artifact entry {name!r} out of order")
            index = int(m.group(1))
            if index != self.next_data or index >= len(self.payloads):
                raise ArtifactError(f"unexpected payload {name!r}")
            self.next_data += 1
            fileobj = tar.extractfile(member)
            assert fileobj is not None
            self._data(index, _decompressor(fileobj, m.group(2)))
        else:
            raise ArtifactError(f"unexpected artifact entry {name!r}")

    def _expect(self, stage: int, name: str) -> None:
        if self.stage != stage:
            raise ArtifactError(f"artifact entry {name!r} out of order")

    def _read(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
        fileobj = tar.extractfile(member)
        assert fileobj is not None
        data = fileobj.read()
        if len(data) != member.size:
            raise ArtifactError(f"truncated artifact: entry {member.name!r} is cut short")
        self._last = data
        return data

    def _parse_manifest(self, raw: bytes) -> dict[str, str]:
        entries: dict[str, str] = {}
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ArtifactError("manifest is not ASCII") from None
        for line in text.splitlines():
            if not line.strip():
                continue
            m = _MANIFEST_LINE.match(line)
            if m is None:
                raise ArtifactError(f"malformed manifest line {line[:80]!r}")
            _check_name(m.group(2))
            if m.group(2) in entries:
                raise ArtifactError(f"manifest lists {m.group(2)!r} twice")
            entries[m.group(2)] = m.group(1)
        return entries

    # -- header -------------------------------------------------------------------------
    def _header(self, data: bytes, suffix: str | None) -> None:
        stream = _decompressor(io.BytesIO(data), suffix)
        limit = self.limits.header_size
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise ArtifactTooLarge(f"header expands beyond {limit} bytes")
        files: dict[str, bytes] = {}
        with _open_tar(io.BytesIO(raw), stream=False, limits=self.limits) as tar:
            for count, member in enumerate(tar):
                if count >= self.limits.header_entries:
                    raise ArtifactTooLarge(f"header has more than {self.limits.header_entries} entries")
                _check_name(member.name)
                if not member.isfile():
                    raise ArtifactError(f"header entry {member.name!r} is not a regular file")
                if _HEADER_ENTRY.match(member.name) is None:
                    raise ArtifactError(f"unexpected header entry {member.name!r}")
                if member.size > self.limits.meta_size:
                    raise ArtifactTooLarge(
                        f"header entry {member.name!r} claims {member.size} bytes, "
                        f"limit is {self.limits.meta_size}"
                    )
                fileobj = tar.extractfile(member)
                assert fileobj is not None
                files[member.name] = fileobj.read()
        if "header-info" not in files:
            raise ArtifactError("header has no header-info")
        info = _json_object(files["header-info"], "header-info")
        self.header_info = info
        payloads = info.get("payloads")
        if not isinstance(payloads, list) or not all(isinstance(p, dict) for p in payloads):
            raise ArtifactError("header-info: 'payloads' must be a list of objects")
        provides = info.get("artifact_provides")
        if not isinstance(provides, dict) or not isinstance(provides.get("artifact_name"), str):
            raise ArtifactError("header-info: artifact_provides.artifact_name is missing")
        depends = info.get("artifact_depends")
        if not isinstance(depends, dict) or not _str_list(depends.get("device_type")):
            raise ArtifactError("header-info: artifact_depends.device_type is missing")
        for index, entry in enumerate(payloads):
            ptype = entry.get("type")
            payload = PayloadInfo(type=ptype if isinstance(ptype, str) else None)
            type_info = files.get(f"headers/{index:04d}/type-info")
            if type_info is not None:
                ti = _json_object(type_info, f"headers/{index:04d}/type-info")
                payload.provides = _dict(ti.get("artifact_provides"))
                payload.depends = _dict(ti.get("artifact_depends"))
                clears = ti.get("clears_artifact_provides")
                payload.clears_provides = list(clears) if _str_list(clears) else []
            meta = files.get(f"headers/{index:04d}/meta-data")
            if meta and meta.strip():
                payload.meta_data = _json_object(meta, f"headers/{index:04d}/meta-data")
            self.payloads.append(payload)
        self.scripts = sorted(n[len("scripts/") :] for n in files if n.startswith("scripts/"))

    # -- payload data ---------------------------------------------------------------------
    def _data(self, index: int, stream: IO[bytes]) -> None:
        payload = self.payloads[index]
        with _open_tar(stream, stream=True, limits=self.limits) as tar:
            for member in tar:
                _check_name(member.name)
                if not member.isfile() or _PAYLOAD_NAME.match(member.name) is None:
                    raise ArtifactError(f"bad payload entry {member.name!r} in data/{index:04d}")
                if len(payload.files) >= self.limits.payload_files:
                    raise ArtifactTooLarge(f"more than {self.limits.payload_files} payload files")
                self.payload_bytes += member.size
                if self.payload_bytes > self.limits.payload_size:
                    raise ArtifactTooLarge(f"payload exceeds {self.limits.payload_size} bytes uncompressed")
                fileobj = tar.extractfile(member)
                assert fileobj is not None
                digest = hashlib.sha256()
                count = 0
                while chunk := fileobj.read(_CHUNK):
                    digest.update(chunk)
                    count += len(chunk)
                if count != member.size:
                    raise ArtifactError(f"truncated payload file {member.name!r}")
                key = f"data/{index:04d}/{member.name}"
                self.seen[key] = digest.hexdigest()
                payload.files.append(PayloadFile(member.name, member.size, digest.hexdigest()))

    # -- final consistency ----------------------------------------------------------------
    def finish(self, size: int, sha256: str) -> ArtifactInfo:
        if self.stage < 4:
            raise ArtifactError("truncated artifact: header missing")
        for name, expected in self.manifest.items():
            actual = self.seen.get(name)
            if actual is None:
                raise ArtifactError(f"truncated artifact: {name!r} listed in manifest is missing")
            if actual != expected:
                raise ArtifactError(f"checksum mismatch for {name!r}")
        for name in self.seen:
            if name not in self.manifest:
                raise ArtifactError(f"{name!r} is not covered by the manifest")
        verified = False
        if self.signature is not None:
            verified = verify_manifest(self.manifest_raw, self.signature, self.keys)
        elif self.keys:
            raise ArtifactSignatureError("artifact is not signed but verify keys are configured")
        provides = dict(self.header_info["artifact_provides"])
        depends = dict(self.header_info["artifact_depends"])
        assert self.version is not None
        return ArtifactInfo(
            name=provides["artifact_name"],
            format=str(self.version["format"]),
            version=int(self.version["version"]),
            device_types=list(depends["device_type"]),
            provides=provides,
            depends=depends,
            payloads=self.payloads,
            signed=self.signature is not None,
            verified=verified,
            compression=self.compression,
            scripts=self.scripts,
            size=size,
            sha256=sha256,
        )


def _str_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _dict(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}
