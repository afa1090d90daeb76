"""Credentials for the gateway's DTLS listener: the PSK provisioning file and ECDSA certificates.

PSK provisioning file (``--psk-file``)::

    # one device per line: identity,hexkey[,organisation]   ('#' starts a comment; blank lines are ignored)
    node-0001,000102030405060708090a0b0c0d0e0f
    node-0002,f0e1d2c3b4a5968778695a4b3c2d1e0f   # trailing comments are fine
    node-0003,00112233445566778899aabbccddeeff,5f0c2a7e-4b8e-4c1e-9d3a-0b6f1c2d3e4f

The identity IS the device id the gateway stamps on that node's traffic, so it follows the
MQTT-SN ClientId rule: 1-23 printable ASCII characters, no spaces or commas. Keys are 1-32 bytes
(mbedTLS' PSK limit), written as an even number of hex digits. The optional third column is the
organisation id the node belongs to (docs/governance.md): the gateway moves that node's device-API
traffic onto the organisation's topics (:mod:`wire.tenant_topics`); without it, or with
``default``, the node is in the default organisation. Every problem raises
:class:`CredentialsError` naming the file, the line and the bad value.

Certificates: ECDSA P-256. The gateway has its certificate + key; client certificates must chain
to the CA given, and the client certificate subject CN is the device id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mbedtls import pk, x509

from wire.errors import WireError
from wire.tenant_topics import DEFAULT_TENANT, TenantTopicError, check_tenant

__all__ = [
    "MAX_PSK_BYTES",
    "CertificateCredentials",
    "CredentialsError",
    "DtlsServerConfig",
    "PskLookup",
    "device_id_from_subject",
    "load_psk_file",
    "load_psk_tenants",
    "load_tenant_map",
    "parse_psk_tenants",
    "parse_psk_text",
    "parse_tenant_map",
]

_DEVICE_ID = re.compile(r"^[\x21-\x7e]{1,23}$")
MAX_PSK_BYTES = 32


class CredentialsError(WireError):
    """A credentials file or value is unusable; the message names it."""


def _check_device_id(value: str, where: str) -> str:
    if not _DEVICE_ID.match(value) or "," in value:
        raise CredentialsError(
            f"{where}: bad identity {value!r}: expected 1-23 printable ASCII characters "
            "without spaces or commas (it is the MQTT-SN client id)"
        )
    return value


def _psk_lines(text: str, source: str) -> Iterator[tuple[str, str, bytes, str]]:
    """(where, identity, key, organisation id) per provisioning line."""
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{number}"
        parts = [p.strip() for p in line.split(",")]
        if len(parts) not in (2, 3):
            raise CredentialsError(
                f"{where}: expected 'identity,hexkey' or 'identity,hexkey,organisation', got {line!r}"
            )
        identity, hexkey = parts[0], parts[1]
        _check_device_id(identity, where)
        try:
            key = bytes.fromhex(hexkey)
        except ValueError:
            raise CredentialsError(f"{where}: key for {identity!r} is not hex: {hexkey!r}") from None
        if not 1 <= len(key) <= MAX_PSK_BYTES:
            raise CredentialsError(
                f"{where}: key for {identity!r} is {len(key)} bytes, expected 1-{MAX_PSK_BYTES}"
            )
        if identity in seen:
            raise CredentialsError(f"{where}: identity {identity!r} is listed twice")
        seen.add(identity)
        tenant = parts[2] if len(parts) == 3 else DEFAULT_TENANT
        if tenant != DEFAULT_TENANT:
            try:
                check_tenant(tenant)
            except TenantTopicError as exc:
                raise CredentialsError(f"{where}: {exc}") from None
        yield where, identity, key, tenant


def parse_psk_text(text: str, source: str = "<psk>") -> dict[str, bytes]:
    """Parse provisioning lines ``identity,hexkey[,organisation]`` into ``{identity: key}``."""
    return {identity: key for _, identity, key, _ in _psk_lines(text, source)}


def parse_psk_tenants(text: str, source: str = "<psk>") -> dict[str, str]:
    """``{identity: organisation id}`` for the lines that name an organisation other than the
    default one (every other identity is in the default organisation)."""
    return {identity: t for _, identity, _, t in _psk_lines(text, source) if t != DEFAULT_TENANT}


def load_psk_tenants(path: str | os.PathLike[str]) -> dict[str, str]:
    """The organisation column of a PSK provisioning file (see :func:`parse_psk_tenants`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"PSK file {str(path)!r} cannot be read: {exc}") from None
    return parse_psk_tenants(text, str(path))


def parse_tenant_map(text: str, source: str = "<tenant map>") -> dict[str, str]:
    """Lines ``identity,organisation id`` (``#`` comments; ``default`` for the default one) into
    ``{identity: organisation id}`` without the default ones: for certificate identities (the
    subject CN), which have no PSK file line to carry the organisation."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{number}"
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            raise CredentialsError(f"{where}: expected 'identity,organisation', got {line!r}")
        identity, tenant = parts
        _check_device_id(identity, where)
        if identity in found:
            raise CredentialsError(f"{where}: identity {identity!r} is listed twice")
        if tenant != DEFAULT_TENANT:
            try:
                found[identity] = check_tenant(tenant)
            except TenantTopicError as exc:
                raise CredentialsError(f"{where}: {exc}") from None
    return found


def load_tenant_map(path: str | os.PathLike[str]) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"tenant map {str(path)!r} cannot be read: {exc}") from None
    return parse_tenant_map(text, str(path))


def load_psk_file(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Read a PSK provisioning file (see the module docstring for the format)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(f"PSK file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"PSK file {str(p)!r} cannot be read: {exc}") from None
    keys = parse_psk_text(text, str(p))
    if not keys:
        raise CredentialsError(f"PSK file {str(p)!r} lists no device")
    return keys


def device_id_from_subject(subject: str) -> str | None:
    """The CN of an mbedTLS subject string (``'O=x, CN=node-7'`` → ``'node-7'``), if valid."""
    for part in subject.split(","):
        name, _, value = part.strip().partition("=")
        if name == "CN":
            try:
                return _check_device_id(value, "certificate subject")
            except CredentialsError:
                return None
    return None


@dataclass(frozen=True, slots=True)
class CertificateCredentials:
    """The gateway's certificate chain (leaf first) and key, and the CA its clients chain to."""

    chain: tuple[x509.CRT, ...]
    key: pk.ECC
    ca: tuple[x509.CRT, ...]

    @classmethod
    def from_files(
        cls,
        cert: str | os.PathLike[str],
        key: str | os.PathLike[str],
        ca: str | os.PathLike[str],
    ) -> CertificateCredentials:
        return cls(_load_certs(cert, "--cert"), _load_key(key), _load_certs(ca, "--ca"))


def _read(path: str | os.PathLike[str], what: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"{what} {str(path)!r} cannot be read: {exc}") from None


def _load_certs(path: str | os.PathLike[str], what: str) -> tuple[x509.CRT, ...]:
    text = _read(path, what)
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, flags=re.DOTALL)
    if not blocks:
        raise CredentialsError(f"{what} {str(path)!r} holds no PEM certificate")
    try:
        return tuple(x509.CRT.from_PEM(b) for b in blocks)
    except Exception as exc:  # mbedtls raises its own error types
        raise CredentialsError(f"{what} {str(path)!r}: bad certificate: {exc}") from None


def _load_key(path: str | os.PathLike[str]) -> pk.ECC:
    text = _read(path, "--key")
    try:
        key = pk.ECC.from_PEM(text)
    except Exception as exc:
        raise CredentialsError(f"--key {str(path)!r}: not an EC private key: {exc}") from None
    return key


@dataclass(frozen=True, slots=True)
class DtlsServerConfig:
    """What the gateway accepts: PSK devices, certificate devices, or both.

    ``psk`` may be any mapping identity → key (a dict from :func:`load_psk_file`, or a view on the
    store); it is consulted at each handshake.
    """

    psk: Mapping[str, bytes] | None = None
    certificate: CertificateCredentials | None = None

    def __post_init__(self) -> None:
        if self.psk is None and self.certificate is None:
            raise CredentialsError("DTLS needs a PSK table or a certificate (or both)")


class PskLookup(Mapping[str, bytes]):
    """The PSK table as mbedTLS sees it; remembers which identity the last handshake step asked.

    mbedTLS gives no accessor for the negotiated PSK identity, but it looks the identity up
    through this mapping during the step that processes the ClientKeyExchange, so the server
    clears :attr:`seen` before each step and reads it after.
    """

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys = keys
        self.seen: str | None = None

    def replace(self, keys: Mapping[str, bytes]) -> None:
        """Look identities up in ``keys`` from now on (mbedTLS keeps this object, not the table)."""
        self._keys = keys

    def keys_snapshot(self) -> Mapping[str, bytes]:
        return self._keys

    def __getitem__(self, identity: str) -> bytes:
        self.seen = identity
        return self._keys[identity]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
