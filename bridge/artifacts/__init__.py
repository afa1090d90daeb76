"""Mender artifact v3 parsing, signature checks and the content-addressed file store."""

from ._blobs import BlobStore
from ._errors import ArtifactError, ArtifactSignatureError, ArtifactTooLarge
from ._format import ArtifactInfo, Limits, PayloadFile, PayloadInfo, parse_artifact
from ._signature import VerifyKey, load_verify_key, verify_manifest

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
