"""The node's whole-image check: the vendor's Mender signature over the artifact it received.

On an MCU this is the artifact reader plus mbedTLS; here it is the server's own strict parser
(:func:`bridge.artifacts.parse_artifact`), which checks manifest.sig with the vendor keys and every
checksum the manifest lists (header and each payload file).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from wire.artifact import ArtifactError, VerifyKey, parse_artifact

__all__ = ["mender_image_verifier"]


def mender_image_verifier(keys: Sequence[VerifyKey]) -> Callable[[bytes], bool]:
    """True only for a Mender v3 artifact whose manifest signature verifies with one of ``keys``."""
    if not keys:
        raise ValueError("a node must be provisioned with at least one vendor key")

    def image_ok(image: bytes) -> bool:
        with tempfile.TemporaryDirectory(prefix="meshota-verify-") as tmp:
            path = Path(tmp) / "image.mender"
            path.write_bytes(image)
            try:
                info = parse_artifact(path, keys=keys)
            except (ArtifactError, ValueError):
                return False
        return info.signed and info.verified

    return image_ok
