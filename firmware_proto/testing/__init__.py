"""Testing helpers shipped with the node side (like ``trio.testing``), never used by a device.

:mod:`~firmware_proto.testing.flash` (``MemoryFlash``, ``PowerCutFlash``),
:mod:`~firmware_proto.testing.medium` (``MemoryMedium``: a seeded lossy broadcast medium on
virtual time), :mod:`~firmware_proto.testing.group` (group-stream harnesses and an in-memory
device service) and :mod:`~firmware_proto.testing.dtls` (test PKI, a virtual-time DTLS link).
"""
