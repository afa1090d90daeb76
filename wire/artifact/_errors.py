"""Artifact errors.

ArtifactError               anything wrong with an uploaded artifact (-> HTTP 400)
├── ArtifactTooLarge        a size field or the payload exceeds a configured limit
└── ArtifactSignatureError  unsigned when keys are configured, or no key verifies it
"""

from __future__ import annotations

__all__ = ["ArtifactError", "ArtifactSignatureError", "ArtifactTooLarge"]


class ArtifactError(ValueError):
    """The artifact is malformed, truncated, unsafe or inconsistent."""


class ArtifactTooLarge(ArtifactError):
    """A header claims (or a payload expands to) more bytes than allowed."""


class ArtifactSignatureError(ArtifactError):
    """manifest.sig is missing where required, malformed, or does not verify."""
