"""Tokens, signed download links, password hashes and device auth-request signatures."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import argon2
import jwt
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ._types import ApiError

__all__ = [
    "DUMMY_PASSWORD_HASH",
    "check_password",
    "decode_token",
    "hash_password",
    "issue_token",
    "normalize_pubkey",
    "sign_link",
    "verify_auth_signature",
    "verify_link",
]

_ISSUER = "Mender"


def issue_token(secret: bytes, claims: dict[str, Any], iat: float, lifetime: int) -> str:
    body = {**claims, "iss": _ISSUER, "iat": int(iat), "exp": int(iat) + lifetime}
    return jwt.encode(body, secret, algorithm="HS256")


# Verified tokens, so a device's every request does not redo the HS256 check and JSON parse:
# (secret, token) -> (claims, exp). Only tokens that passed every check are kept; what can
# change with time (expiry) is checked again on each use. Bounded: the oldest entries go first.
_VERIFIED: dict[tuple[bytes, str], tuple[Mapping[str, Any], float]] = {}
VERIFIED_TOKENS_MAX = 8192


def decode_token(secret: bytes, token: str, now: float | None = None) -> Mapping[str, Any]:
    """The claims of a valid, unexpired token signed with ``secret``; ``ApiError(401)`` otherwise.

    The returned mapping is read-only (it may be shared by later calls for the same token).
    """
    key = (secret, token)
    cached = _VERIFIED.get(key)
    if cached is not None:
        if cached[1] > (time.time() if now is None else now):
            return cached[0]
        del _VERIFIED[key]
        raise ApiError(401, "token expired")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=["HS256"], issuer=_ISSUER, options={"require": ["exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "token expired") from None
    except jwt.InvalidTokenError:
        raise ApiError(401, "invalid token") from None
    view = MappingProxyType(claims)
    if len(_VERIFIED) >= VERIFIED_TOKENS_MAX:
        del _VERIFIED[next(iter(_VERIFIED))]
    _VERIFIED[key] = (view, float(claims["exp"]))
    return view


def sign_link(secret: bytes, artifact_id: str, expire: str) -> str:
    msg = f"download|{artifact_id}|{expire}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def verify_link(secret: bytes, artifact_id: str, expire: str, signature: str, now: float) -> None:
    """Check an artifact link's HMAC, then its expiry (``expire`` is RFC 3339)."""
    expected = sign_link(secret, artifact_id, expire)
    # compare bytes: compare_digest refuses non-ASCII str (a TypeError would be a 500)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
        raise ApiError(403, "bad download link signature")
    try:
        deadline = dt.datetime.fromisoformat(expire.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError(403, "bad download link expiry") from None
    if now > deadline:
        raise ApiError(403, "download link expired")


# argon2id (argon2-cffi, RFC 9106 low-memory profile: 64 MiB, t=3); hashes made before it
# (``scrypt$salt$digest``, wave 1) are still checked. Both are CPU work: callers run them in a thread.
_ARGON2 = argon2.PasswordHasher()


def hash_password(password: str) -> str:
    return _ARGON2.hash(password)


# Checked instead of a real hash when the user name is unknown, so an unknown user costs the
# same work as a known one (no user enumeration by timing). It matches no password.
DUMMY_PASSWORD_HASH = _ARGON2.hash(secrets.token_hex(16))


def check_password(stored: str, password: str) -> bool:
    if stored.startswith("$argon2"):
        try:
            return _ARGON2.verify(stored, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), n=2**14, r=8, p=1)
    return hmac.compare_digest(digest.hex(), digest_hex)


RSA_MAX_BITS = 8192
RSA_MAX_EXPONENT = 2**32


@functools.lru_cache(maxsize=4096)
def normalize_pubkey(pem: str) -> str:
    """Parse a device public key and re-emit canonical SPKI PEM (so equal keys compare equal).

    Cached per PEM text: a device sends the same key in every auth request (errors are not cached)."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, UnsupportedAlgorithm, TypeError):
        raise ApiError(400, "pubkey is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise ApiError(400, "unsupported device key type")
    if isinstance(key, rsa.RSAPublicKey) and (
        key.key_size > RSA_MAX_BITS or key.public_numbers().e > RSA_MAX_EXPONENT
    ):
        # a huge modulus or exponent makes every signature check expensive
        raise ApiError(400, f"RSA keys are limited to {RSA_MAX_BITS} bits and a 32-bit exponent")
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@functools.lru_cache(maxsize=4096)
def _public_key(pem: str) -> Any:
    """The loaded key of a (normalized) PEM; key objects are immutable, so one per PEM is shared."""
    return serialization.load_pem_public_key(pem.encode())


def verify_auth_signature(pubkey_pem: str, body: bytes, signature_b64: str) -> bool:
    """X-MEN-Signature over the exact body: RSA PKCS#1 v1.5, ECDSA DER, Ed25519 (raw body)."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    key = _public_key(pubkey_pem)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, body, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, body)
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True
