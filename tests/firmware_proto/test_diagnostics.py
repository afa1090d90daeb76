"""firmware_proto.diagnostics: the node's bounded remote diagnostics (sans-I/O, no sockets)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from firmware_proto.diagnostics import MAX_RESULT, NEXT_PATH, Diagnostics, RebootRequested, result_path


def _cmd(command: str, cid: str = "c1", **args: object) -> bytes:
    return json.dumps({"id": cid, "command": command, "args": args}).encode()


def _answer(req: object) -> dict[str, object]:
    assert req is not None
    body = req.body  # type: ignore[attr-defined]
    assert isinstance(body, bytes)
    doc = json.loads(body)
    assert isinstance(doc, dict)
    return doc


def test_off_by_default_refuses_every_command() -> None:
    d = Diagnostics()
    assert d.poll().path == NEXT_PATH and d.poll().method == "GET"
    for command in ("ping", "logs", "reboot"):
        req = d.on_next(200, _cmd(command), now=5.0)
        assert req is not None and req.method == "PUT" and req.path == result_path("c1")
        assert _answer(req) == {
            "status": "refused",
            "result": {"reason": "remote diagnostics are off on this device"},
        }
    assert d.on_answered("c1", 204) == []  # a refused reboot never reboots


def test_enabled_ping_logs_reboot() -> None:
    d = Diagnostics(enabled=True, boot_ts=100.0)
    for i in range(10):
        d.log.add(100.0 + i, f"line {i}")
    assert _answer(d.on_next(200, _cmd("ping"), now=160.5)) == {"status": "done", "result": {"uptime": 60.5}}
    logs = _answer(d.on_next(200, _cmd("logs", lines=3), now=161.0))
    assert logs["result"] == {"lines": ["107.000 line 7", "108.000 line 8", "109.000 line 9"]}
    req = d.on_next(200, _cmd("reboot", "r1"), now=162.0)
    assert _answer(req) == {"status": "done", "result": {"rebooting": True}}
    assert d.on_answered("r1", 500) == []  # the server did not take it: no reboot yet
    assert d.on_answered("r1", 204) == [RebootRequested("r1")]
    assert d.on_answered("r1", 204) == []


def test_allowed_subset_and_nothing_to_do() -> None:
    d = Diagnostics(enabled=True, allowed=("ping", "logs"))
    assert _answer(d.on_next(200, _cmd("reboot"), now=1.0))["status"] == "refused"
    assert d.on_next(204, b"", now=1.0) is None


def test_log_answer_stays_bounded() -> None:
    d = Diagnostics(enabled=True)
    for i in range(200):
        d.log.add(float(i), "x" * 500)  # lines are cut to 160 characters
    req = d.on_next(200, _cmd("logs", lines=100), now=1.0)
    assert req is not None and req.body is not None and len(req.body) <= MAX_RESULT
    lines = _answer(req)["result"]["lines"]  # type: ignore[index]
    assert 0 < len(lines) <= 64 and all(len(x) <= 160 for x in lines)


@given(st.binary(max_size=300), st.integers(min_value=100, max_value=599))
def test_garbage_from_the_server_never_raises(body: bytes, status: int) -> None:
    d = Diagnostics(enabled=True)
    req = d.on_next(status, body, now=0.0)
    assert req is None or (req.body is not None and len(req.body) <= MAX_RESULT)


_VALUE = (
    st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.lists(st.integers(), max_size=3)
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": _VALUE,
            "command": _VALUE | st.sampled_from(["ping", "logs", "reboot"]),
            "args": _VALUE | st.fixed_dictionaries({}, optional={"lines": _VALUE}),
        },
    )
)
def test_odd_json_never_raises(doc: dict[str, object]) -> None:
    req = Diagnostics(enabled=True).on_next(200, json.dumps(doc).encode(), now=0.0)
    assert req is None or (req.body is not None and len(req.body) <= MAX_RESULT)
