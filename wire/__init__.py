"""The node <-> server contract: what a C port of the node follows byte for byte.

Envelopes and topics of the device API over MQTT(-SN) (:mod:`wire.envelope`, the only home of the
identity stamp names), sealed records (:mod:`wire.sealed`), signed chunk maps and group-link
frames (:mod:`wire.chunk_map`, :mod:`wire.frames`), the Mender artifact parser and image check
(:mod:`wire.artifact`, :mod:`wire.image_verify`), DTLS glue and credential formats
(:mod:`wire.mbedtls_glue`, :mod:`wire.dtls_credentials`). ``SPEC.md`` has the byte layouts and
``vectors/`` the golden vectors. This package imports nothing else of meshota's.
"""
