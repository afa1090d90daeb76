"""Glue between python-mbedtls memory buffers and sans-I/O drivers (shared by node and gateway).

python-mbedtls exposes mbedTLS through ``ClientContext/ServerContext.wrap_buffers()``: bytes in
(``receive_from_network``), bytes out (``peek_outgoing``/``consume_outgoing``), no sockets. Two
things are still missing for a sans-I/O core, and this module supplies them without touching the
record layer or any crypto:

* **Time.** mbedTLS drives DTLS handshake retransmission through a timer callback pair
  (``mbedtls_ssl_set_timer_cb``); python-mbedtls installs ``mbedtls_timing_set_delay/get_delay``,
  which read the wall clock. :func:`bind_timer` replaces that pair, for one context, with
  callbacks that read a :class:`Clock` the caller advances with ``now`` — so a simulator on a
  virtual clock and an asyncio driver on ``loop.time()`` run the very same mbedTLS state machine
  (same back-off: ``handshake_timeout_min`` doubling up to ``handshake_timeout_max``).
  python-mbedtls has no Python API for the callbacks, so the two function pointers are written
  into the ``mbedtls_ssl_context`` embedded in the buffer object, found by their current values
  (the addresses of the two mbedTLS timing functions, which are exported). Anything unexpected
  raises :class:`TimerBindingError` instead of guessing.
* **Datagram boundaries.** The output side is a byte ring: :func:`drain_datagrams` splits it back
  into DTLS records (13-byte header with a length) and packs whole records into datagrams of at
  most ``mtu`` bytes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import struct
import weakref
from collections.abc import Callable, Mapping
from typing import Any, cast

from mbedtls import tls

__all__ = [
    "ECDSA_CIPHERS",
    "PSK_CIPHERS",
    "RECORD_HEADER_SIZE",
    "Clock",
    "RetransmitTimer",
    "Step",
    "TimerBindingError",
    "bind_timer",
    "describe_tls_error",
    "drain_datagrams",
    "is_client_hello",
    "looks_like_dtls",
    "split_records",
    "unbind_timer",
]

# AEAD only: small records on the radio, and what the gateway can park (context serialisation).
PSK_CIPHERS = (
    "TLS-PSK-WITH-AES-128-CCM-8",
    "TLS-PSK-WITH-AES-128-CCM",
    "TLS-PSK-WITH-AES-128-GCM-SHA256",
)
ECDSA_CIPHERS = (
    "TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8",
    "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256",
)

RECORD_HEADER_SIZE = 13  # type(1) version(2) epoch(2) sequence(6) length(2)


def describe_tls_error(exc: Exception, reasons: Mapping[int, str]) -> str:
    """A readable reason for an mbedTLS error: ``reasons[code]`` (each side words its own), else
    mbedTLS' message with the code."""
    err = getattr(exc, "err", 0) or 0
    return reasons.get(err, f"{getattr(exc, 'msg', exc)} (mbedTLS -0x{err:04x})")


_PTR = ctypes.sizeof(ctypes.c_void_p)


class Step:
    """Handshake states, typed (the python-mbedtls stub declares the enum members as ``int``)."""

    HELLO_REQUEST = cast(tls.HandshakeStep, tls.HandshakeStep.HELLO_REQUEST)
    CLIENT_HELLO = cast(tls.HandshakeStep, tls.HandshakeStep.CLIENT_HELLO)
    SERVER_HELLO = cast(tls.HandshakeStep, tls.HandshakeStep.SERVER_HELLO)
    HELLO_VERIFY_SENT = cast(tls.HandshakeStep, tls.HandshakeStep.SERVER_HELLO_VERIFY_REQUEST_SENT)
    CLIENT_FINISHED = cast(tls.HandshakeStep, tls.HandshakeStep.CLIENT_FINISHED)
    OVER = cast(tls.HandshakeStep, tls.HandshakeStep.HANDSHAKE_OVER)


class TimerBindingError(RuntimeError):
    """This python-mbedtls build does not look like the one the timer binding was written for."""


class Clock:
    """The current time as the driver last passed it in (``now``); mbedTLS timers read it."""

    __slots__ = ("now",)

    def __init__(self, now: float = 0.0) -> None:
        self.now = now


class RetransmitTimer:
    """One mbedTLS context's handshake timer, expressed on a :class:`Clock`.

    mbedTLS calls ``set(int_ms, fin_ms)`` when it sends a flight (``fin_ms == 0`` cancels) and
    polls ``state()`` before reading: -1 cancelled, 0 running, 1 intermediate delay passed,
    2 final delay passed (then it retransmits or gives up). ``on_change`` lets the owner put the
    new deadline in its timer heap.
    """

    __slots__ = ("__weakref__", "clock", "deadline", "intermediate", "on_change")

    def __init__(self, clock: Clock, on_change: Callable[[float | None], None] | None = None):
        self.clock = clock
        self.deadline: float | None = None
        self.intermediate: float | None = None
        self.on_change = on_change

    def set(self, int_ms: int, fin_ms: int) -> None:
        if fin_ms == 0:
            self.deadline = self.intermediate = None
        else:
            now = self.clock.now
            self.deadline = now + fin_ms / 1000.0
            self.intermediate = now + int_ms / 1000.0
        if self.on_change is not None:
            self.on_change(self.deadline)

    def state(self) -> int:
        if self.deadline is None:
            return -1
        now = self.clock.now
        if now >= self.deadline:
            return 2
        if self.intermediate is not None and now >= self.intermediate:
            return 1
        return 0


# --- the callback pair, shared by every context; dispatch on mbedTLS' opaque timer pointer ----

# Weak: a timer dies with its owner (client or server session), so a forgotten unbind leaks
# nothing and never keeps an owner alive.
_timers: weakref.WeakValueDictionary[int, RetransmitTimer] = weakref.WeakValueDictionary()

_SetTimerFn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32)
_GetTimerFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


def _set_timer_py(data: int | None, int_ms: int, fin_ms: int) -> None:
    timer = _timers.get(data or 0)
    if timer is not None:
        timer.set(int_ms, fin_ms)


def _get_timer_py(data: int | None) -> int:
    timer = _timers.get(data or 0)
    return -1 if timer is None else timer.state()


_SET_TIMER = _SetTimerFn(_set_timer_py)
_GET_TIMER = _GetTimerFn(_get_timer_py)
_SET_TIMER_ADDR: int = ctypes.cast(_SET_TIMER, ctypes.c_void_p).value or 0
_GET_TIMER_ADDR: int = ctypes.cast(_GET_TIMER, ctypes.c_void_p).value or 0


def _load_mbedcrypto() -> Any:
    here = os.path.dirname(os.path.dirname(os.path.abspath(tls.__file__)))
    candidates = glob.glob(os.path.join(here, "python_mbedtls.libs", "libmbedcrypto*.so*"))
    found = ctypes.util.find_library("mbedcrypto")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    raise TimerBindingError("cannot load libmbedcrypto (needed to recognise mbedTLS timer slots)")


_lib_addrs: tuple[int, int] | None = None
_slot_index: int | None = None  # word index of f_set_timer inside the buffer object


def _timing_addrs() -> tuple[int, int]:
    global _lib_addrs
    if _lib_addrs is None:
        lib = _load_mbedcrypto()
        set_addr = ctypes.cast(lib.mbedtls_timing_set_delay, ctypes.c_void_p).value
        get_addr = ctypes.cast(lib.mbedtls_timing_get_delay, ctypes.c_void_p).value
        if not set_addr or not get_addr:
            raise TimerBindingError("mbedtls_timing_set_delay/get_delay not found")
        _lib_addrs = (set_addr, get_addr)
    return _lib_addrs


def _words(obj: object) -> tuple[int, ...]:
    size = type(obj).__basicsize__ // _PTR
    return struct.unpack(f"{size}P", ctypes.string_at(id(obj), size * _PTR))


def _find_slot(buf: tls.TLSWrappedBuffer) -> int:
    """Word index of ``f_set_timer`` in ``buf`` (``p_timer`` is the word before it)."""
    global _slot_index
    base, size = id(buf), type(buf).__basicsize__
    words = _words(buf)
    set_addr, get_addr = _timing_addrs()

    def plausible(i: int) -> bool:
        return (
            0 < i < len(words) - 1
            and words[i] in (set_addr, _SET_TIMER_ADDR)
            and words[i + 1] in (get_addr, _GET_TIMER_ADDR)
            and base <= words[i - 1] < base + size  # p_timer points into the same object
        )

    if _slot_index is not None and plausible(_slot_index):
        return _slot_index
    hits = [i for i in range(1, len(words) - 1) if plausible(i)]
    if len(hits) != 1:
        raise TimerBindingError(
            f"found {len(hits)} candidate timer slots in {type(buf).__name__}; "
            "this python-mbedtls build is not supported"
        )
    _slot_index = hits[0]
    return _slot_index


def bind_timer(buf: tls.TLSWrappedBuffer, timer: RetransmitTimer) -> int:
    """Make ``buf``'s mbedTLS context use ``timer``; returns the key for :func:`unbind_timer`.

    Call it right after ``wrap_buffers()`` (or after restoring a saved context), before the
    first handshake step. Keep ``buf`` alive while bound; unbind before dropping it.
    """
    i = _find_slot(buf)
    base = id(buf)
    key = _words(buf)[i - 1]
    _timers[key] = timer
    ctypes.c_void_p.from_address(base + i * _PTR).value = _SET_TIMER_ADDR
    ctypes.c_void_p.from_address(base + (i + 1) * _PTR).value = _GET_TIMER_ADDR
    return key


def unbind_timer(key: int, timer: RetransmitTimer) -> None:
    """Forget ``timer`` bound under ``key`` (that context then sees a cancelled timer).

    Only if it is still the one registered: a freed context's address (the key) may already
    belong to a newer context.
    """
    if _timers.get(key) is timer:
        del _timers[key]


# --- datagram framing -----------------------------------------------------------------------


def split_records(data: bytes) -> list[bytes]:
    """Split a byte run of whole DTLS records; a truncated tail is returned as one last chunk."""
    out: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < RECORD_HEADER_SIZE:
            out.append(data[pos:])
            break
        length = int.from_bytes(data[pos + 11 : pos + 13], "big")
        stop = min(end, pos + RECORD_HEADER_SIZE + length)
        out.append(data[pos:stop])
        pos = stop
    return out


def drain_datagrams(buf: tls.TLSWrappedBuffer, mtu: int) -> list[bytes]:
    """Take everything mbedTLS wrote and pack whole records into datagrams of ≤ ``mtu`` bytes."""
    pending = buf.peek_outgoing(1 << 16)
    if not pending:
        return []
    buf.consume_outgoing(len(pending))
    datagrams: list[bytes] = []
    current = b""
    for record in split_records(pending):
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


def looks_like_dtls(datagram: bytes) -> bool:
    """True for a DTLS record header (content type 20-25, version 0xFEFD or 0xFEFF).

    Use it to tell DTLS from MQTT-SN forwarder encapsulation, which also has 0xFE at index 1
    (its MsgType) — byte 2 differs: Ctrl (0-3) there, the version's minor byte here.
    """
    return (
        len(datagram) >= RECORD_HEADER_SIZE
        and 20 <= datagram[0] <= 25
        and datagram[1] == 0xFE
        and datagram[2] in (0xFD, 0xFF)
    )


def is_client_hello(data: bytes) -> bool:
    """A plaintext (epoch 0) handshake record carrying a ClientHello."""
    return (
        len(data) > RECORD_HEADER_SIZE + 12
        and data[0] == 22
        and data[3:5] == b"\0\0"
        and data[RECORD_HEADER_SIZE] == 1
    )
