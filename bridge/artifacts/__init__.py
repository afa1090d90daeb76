"""The artifact store: content-addressed blobs, plus the strict parser of :mod:`wire.artifact`."""

from bridge.artifacts._blobs import BlobStore
from wire.artifact import (
    ArtifactError,
    ArtifactInfo,
    ArtifactSignatureError,
    ArtifactTooLarge,
    Limits,
    PayloadFile,
    PayloadInfo,
    VerifyKey,
    load_verify_key,
    parse_artifact,
    verify_manifest,
)

__all__ = [
    "ArtifactError",
    "ArtifactInfo",
    "ArtifactSignatureError",
    "ArtifactTooLarge",
    "BlobStore",
    "Limits",
    "PayloadFile",
    "PayloadInfo",
    "VerifyKey",
    "load_verify_key",
    "parse_artifact",
    "verify_manifest",
]
