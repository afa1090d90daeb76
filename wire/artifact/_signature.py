"""manifest.sig verification: RSA PKCS#1 v1.5 / SHA-256 and ECDSA P-256 raw r||s."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from wire.artifact._errors import ArtifactError, ArtifactSignatureError

__all__ = ["VerifyKey", "load_verify_key", "verify_manifest"]

VerifyKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def load_verify_key(pem: bytes) -> VerifyKey:
    """Load a PEM public key a vendor signs artifacts with (RSA, or ECDSA P-256)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("artifact verify keys must be RSA or ECDSA P-256")


def verify_manifest(manifest: bytes, sig_b64: bytes, keys: Sequence[VerifyKey]) -> bool:
    """True if one of ``keys`` verifies; raise ArtifactSignatureError if none does.

    With no keys configured the signature cannot be checked; returns False (signed, unverified).
    """
    try:
        sig = base64.b64decode(sig_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ArtifactError("manifest.sig is not valid base64") from None
    if not keys:
        return False
    for key in keys:
        try:
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(sig, manifest, padding.PKCS1v15(), hashes.SHA256())
            else:
                # mender-artifact writes r||s, each zero-padded to 32 bytes, not DER
                if len(sig) != 64:
                    continue
                r = int.from_bytes(sig[:32], "big")
                s = int.from_bytes(sig[32:], "big")
                key.verify(encode_dss_signature(r, s), manifest, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        return True
    raise ArtifactSignatureError("manifest signature does not verify with any configured key")
