"""Mender artifact v3: the strict parser and signature checks, shared by the server and the node."""

from wire.artifact._errors import ArtifactError, ArtifactSignatureError, ArtifactTooLarge
from wire.artifact._format import ArtifactInfo, Limits, PayloadFile, PayloadInfo, parse_artifact
from wire.artifact._signature import VerifyKey, load_verify_key, verify_manifest

__all__ = [
    "ArtifactError",
    "ArtifactInfo",
    "ArtifactSignatureError",
    "ArtifactTooLarge",
    "Limits",
    "PayloadFile",
    "PayloadInfo",
    "VerifyKey",
    "load_verify_key",
    "parse_artifact",
    "verify_manifest",
]
