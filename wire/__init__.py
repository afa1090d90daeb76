"""The node <-> server contract: what a C port of the node follows byte for byte.

Envelopes and topics of the device API over MQTT(-SN) (:mod:`wire.envelope`, the only home of the
identity stamp names), sealed records (:mod:`wire.sealed`), signed chunk maps and group-link
frames (:mod:`wire.chunk_map`, :mod:`wire.frames`), the Mender artifact parser and image check
(:mod:`wire.artifact`, :mod:`wire.image_verify`), DTLS glue and credential formats
(:mod:`wire.mbedtls_glue`, :mod:`wire.dtls_credentials`). ``SPEC.md`` has the byte layouts and
``vectors/`` the golden vectors. This package imports nothing else of meshota's.

Errors a decoder raises on a peer's bad bytes share one root (:mod:`wire.errors`)::

    ValueError
    └── WireError                   wire.errors: bytes or a file that break the contract
        ├── EnvelopeError           wire.envelope (.request_id: the id, when it could be read)
        ├── SealedRecordError       wire.sealed: cannot be parsed, opened or accepted
        ├── ChunkMapError           wire.chunk_map: malformed or does not verify
        ├── FrameError              wire.frames: not a group-link frame
        ├── CredentialsError        wire.dtls_credentials: a bad PSK table or certificate file
        └── UplinkFrameError        firmware_proto.sealed_uplink: not a node <-> root uplink frame

:class:`wire.artifact.ArtifactError` (with ``ArtifactTooLarge`` and ``ArtifactSignatureError``)
is a :class:`ValueError` of its own: ``wire.artifact`` imports nothing from the rest of ``wire``
(``wire.image_verify`` imports it), so the subpackages stay free of cycles.

``wire.mbedtls_glue.TimerBindingError`` (a :class:`RuntimeError`) is not a decoder error: it
reports a python-mbedtls build the binding does not fit, not bad bytes.
"""
