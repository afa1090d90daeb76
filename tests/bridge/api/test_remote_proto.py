"""deviceconnect's ProtoMsg codec, header splicing, and the relay with in-memory peers (no sockets)."""

from __future__ import annotations

import asyncio
import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.api import ApiError, ApiLimits
from bridge.api._remote_access import SessionTicket
from bridge.api._remote_hub import CLOSE_GRANT_ENDED, RemoteHub
from bridge.api._remote_proto import (
    PROTO_CONTROL,
    PROTO_FILETRANSFER,
    PROTO_SHELL,
    ProtoMsg,
    decode_msg,
    encode_msg,
    restamp,
)
from bridge.service import Principal


class Peer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    async def send(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def test_golden_bytes() -> None:
    # what go-lib-micro's ws.ProtoMsg marshals to for a shell "new" (omitempty fields absent)
    raw = encode_msg(ProtoMsg(PROTO_SHELL, "new", "s1"))
    assert raw == bytes.fromhex("81a3686472") + bytes.fromhex(
        "83a570726f746f01a3747970a36e6577a3736964a27331"
    )
    assert decode_msg(raw, 100) == ProtoMsg(PROTO_SHELL, "new", "s1")
    close = encode_msg(ProtoMsg(PROTO_CONTROL, "close", "s1"))
    assert decode_msg(close, 100).proto == 0xFFFF


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"\xc1", 400),
        (msgpack.packb([1, 2]), 400),
        (msgpack.packb({"hdr": {"proto": 0}}), 400),
        (msgpack.packb({"hdr": {"proto": True}}), 400),
        (msgpack.packb({"hdr": {"proto": 1, "sid": 5}}), 400),
        (msgpack.packb({"hdr": {"proto": 1, "props": [1]}}), 400),
        (msgpack.packb({"hdr": {"proto": 1}, "body": "text"}), 400),
        (msgpack.packb({"hdr": {"proto": 1, "typ": "x" * 300}}), 400),
        (b"\x81" + msgpack.packb("hdr") + b"\x81" + msgpack.packb("proto") + b"\x01" + b"\x00" * 200, 400),
        (msgpack.packb({"hdr": {"proto": 1}, "body": b"x" * 2000}), 413),
    ],
)
def test_bad_messages_are_typed_errors(data: bytes, status: int) -> None:
    with pytest.raises(ApiError) as info:
        decode_msg(data, 1000)
    assert info.value.status == status


@given(st.binary(max_size=200))
def test_garbage_is_a_typed_error_or_a_message(data: bytes) -> None:
    try:
        msg = decode_msg(data, 1000)
    except ApiError as exc:
        assert exc.status in (400, 413)
    else:
        assert 0 < msg.proto <= 0xFFFF


def _ft_chunk(offset: int, sid: str, user: str) -> bytes:
    props = b"\x82" + msgpack.packb("offset") + b"\xd3" + struct.pack(">q", offset)
    props += msgpack.packb("user_id") + msgpack.packb(user)
    hdr = b"\x84" + msgpack.packb("proto") + b"\x02" + msgpack.packb("typ") + msgpack.packb("file_chunk")
    hdr += msgpack.packb("sid") + msgpack.packb(sid) + msgpack.packb("props") + props
    return (
        b"\x82"
        + msgpack.packb("hdr")
        + hdr
        + msgpack.packb("body")
        + msgpack.packb(b"abc", use_bin_type=True)
    )


def test_restamp_keeps_the_senders_int64_and_replaces_sid_and_user() -> None:
    out = restamp(_ft_chunk(7, "chosen-by-user", "someone-else"), "S", {"user_id": "U"})
    assert b"\xd3" + struct.pack(">q", 7) in out  # still an int64: mender-connect insists
    assert decode_msg(out, 1000) == ProtoMsg(
        PROTO_FILETRANSFER, "file_chunk", "S", {"offset": 7, "user_id": "U"}, b"abc"
    )
    assert b"someone-else" not in out and b"chosen-by-user" not in out


@given(
    st.fixed_dictionaries(
        {"proto": st.integers(1, 0xFFFF)},
        optional={
            "typ": st.text(max_size=10),
            "sid": st.text(max_size=10),
            "props": st.dictionaries(
                st.text(max_size=5), st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5), max_size=4
            ),
        },
    ),
    st.binary(max_size=50),
)
def test_restamp_round_trip(hdr: dict[str, object], body: bytes) -> None:
    data = msgpack.packb({"hdr": hdr, "body": body}, use_bin_type=True)
    decode_msg(data, 10_000)
    msg = decode_msg(restamp(data, "new", {"user_id": "u"}), 10_000)
    props = dict(hdr.get("props") or {})  # type: ignore[call-overload]
    props["user_id"] = "u"
    assert msg == ProtoMsg(int(hdr["proto"]), str(hdr.get("typ", "")), "new", props, body)  # type: ignore[call-overload]


# -- the relay ----------------------------------------------------------------------------------
def _ticket(device: str, user: str, protocols: frozenset[int] = frozenset({PROTO_SHELL})) -> SessionTicket:
    return SessionTicket(device, Principal.of("user", user, f"{user}@x", "default", ()), 1e12, protocols)


def test_relay_isolates_sessions_and_enforces_the_grant() -> None:
    async def run() -> None:
        hub = RemoteHub(ApiLimits(remote_sessions_per_device=2))
        device = Peer()
        link, old = hub.attach("dev1", "default", device)
        assert old is None
        alice, bob = Peer(), Peer()
        a = hub.open(_ticket("dev1", "alice"), alice, "default", now=1.0)
        b = hub.open(
            _ticket("dev1", "bob", frozenset({PROTO_SHELL, PROTO_FILETRANSFER})), bob, "default", 2.0
        )
        with pytest.raises(ApiError) as info:
            hub.open(_ticket("dev1", "carol"), Peer(), "default", 3.0)
        assert info.value.status == 429  # two sessions per device here
        with pytest.raises(ApiError) as info:
            hub.open(_ticket("dev1", "eve"), Peer(), "other-org", 3.0)
        assert info.value.status == 409  # another organisation never finds the link

        # alice cannot pick bob's session id nor pose as bob
        forged = encode_msg(ProtoMsg(PROTO_SHELL, "shell", b.sid, {"user_id": "bob"}, b"id\n"))
        await hub.from_user(a, forged)
        relayed = decode_msg(device.sent[-1], 10_000)
        assert relayed.sid == a.sid and relayed.props["user_id"] == "alice" and relayed.body == b"id\n"
        # alice's grant-less protocol is refused, nothing relayed
        with pytest.raises(ApiError) as info:
            await hub.from_user(a, _ft_chunk(0, "", "alice"))
        assert info.value.status == 403 and len(device.sent) == 1
        # the device's answers reach only the session they name; unknown ids are dropped
        await hub.from_device(link, encode_msg(ProtoMsg(PROTO_SHELL, "shell", a.sid, {}, b"out")))
        await hub.from_device(link, encode_msg(ProtoMsg(PROTO_SHELL, "shell", "nobody", {}, b"x")))
        assert len(alice.sent) == 1 and bob.sent == [] and link.dropped == 1

        # the end: stop + close to the device for that sid, the user's socket closed, counted once
        assert await hub.end(a, "remote-access grant expired", CLOSE_GRANT_ENDED)
        assert not await hub.end(a, "again")
        tail = [decode_msg(m, 10_000) for m in device.sent[-2:]]
        assert [(m.proto, m.typ, m.sid) for m in tail] == [
            (PROTO_SHELL, "stop", a.sid),
            (PROTO_CONTROL, "close", a.sid),
        ]
        assert alice.closed == (CLOSE_GRANT_ENDED, "remote-access grant expired")
        summary = a.summary(now=11.0)
        assert summary["duration"] == 10.0 and summary["bytes_to_device"] > 0 and summary["bytes_to_user"] > 0
        assert hub.session_count == 1 and set(link.sessions) == {b.sid}

        # the server's own messages on a session (the HTTP file routes): stamped, granted only
        await hub.to_device(b, ProtoMsg(PROTO_FILETRANSFER, "ack", "ignored", {"offset": 3}))
        own = decode_msg(device.sent[-1], 10_000)
        assert (own.sid, own.props) == (b.sid, {"offset": 3, "user_id": "bob"})
        assert b"\xd3" + struct.pack(">q", 3) in device.sent[-1]
        with pytest.raises(ApiError):
            await hub.to_device(b, ProtoMsg(3, "new"))  # port forwarding is never granted

        # the device reconnects: the old link's sessions are handed back to end
        _, old = hub.attach("dev1", "default", Peer())
        assert old is link and hub.detach(old) == [b]

    asyncio.run(run())


def test_sessions_per_user_cap() -> None:
    async def run() -> None:
        hub = RemoteHub(ApiLimits(remote_sessions_per_user=2, remote_sessions_per_device=5))
        for d in ("d1", "d2", "d3"):
            hub.attach(d, "default", Peer())
        first = hub.open(_ticket("d1", "alice"), Peer(), "default", 1.0)
        hub.open(_ticket("d2", "alice"), Peer(), "default", 1.0)
        with pytest.raises(ApiError) as info:
            hub.open(_ticket("d3", "alice"), Peer(), "default", 1.0)
        assert info.value.status == 429
        hub.open(_ticket("d3", "bob"), Peer(), "default", 1.0)  # another user is not held back
        await hub.end(first, "user closed")
        hub.open(_ticket("d3", "alice"), Peer(), "default", 2.0)  # a slot freed

    asyncio.run(run())


def test_device_link_cap() -> None:
    hub = RemoteHub(ApiLimits(remote_devices_max=1))
    hub.attach("d1", "default", Peer())
    hub.attach("d1", "default", Peer())  # a reconnect is not a new link
    with pytest.raises(ApiError) as info:
        hub.attach("d2", "default", Peer())
    assert info.value.status == 503
