"""meshota/cli/_args.py: the one address parser and the one argparse error style."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from meshota.cli._args import (
    CliParser,
    ConfigError,
    format_address,
    parse_address,
    parse_broker_url,
    parse_hostport,
    parse_udp_url,
)

LABEL = r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
hostnames = st.from_regex(rf"{LABEL}(\.{LABEL}){{0,3}}", fullmatch=True)
hosts = st.one_of(
    hostnames, st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str), st.just("localhost")
)
ports = st.integers(0, 65535)


@given(hosts, ports)
@example("::1", 5684)
@example("0.0.0.0", 0)
def test_hostport_round_trips(host: str, port: int) -> None:
    text = format_address(host, port)
    assert (":" in host) == text.startswith("[")  # IPv6 in brackets, nothing else
    assert parse_hostport(text, "--udp") == (host, port)
    assert parse_udp_url(f"udp://{text}", "--listen") == (host, port)
    assert parse_udp_url(f"udp://{text}/", "--listen") == (host, port)
    if port:
        assert parse_broker_url(f"mqtt://{text}") == (host, port)
        assert parse_broker_url(text) == (host, port)  # bare HOST:PORT is a broker too


@given(hosts)
def test_broker_port_defaults_to_1883(host: str) -> None:
    shown = f"[{host}]" if ":" in host else host
    assert parse_broker_url(f"mqtt://{shown}") == (host, 1883)


@given(hosts, st.integers(65536, 10**9))
def test_out_of_range_ports_are_named(host: str, port: int) -> None:
    value = format_address(host, port)
    with pytest.raises(ConfigError) as exc:
        parse_hostport(value, "--udp")
    message = str(exc.value)
    assert message.startswith("--udp: ") and str(port) in message and "\n" not in message


@given(hosts, st.text(min_size=1, max_size=8).filter(lambda t: not re.fullmatch(r"[0-9]{1,5}", t)))
@example("127.0.0.1", "1_0")  # int() would take these
@example("127.0.0.1", "+5")
@example("127.0.0.1", " 5")
@example("127.0.0.1", "٣")  # a non-ASCII digit
def test_non_numeric_ports_are_refused(host: str, port_text: str) -> None:
    shown = f"[{host}]" if ":" in host else host
    with pytest.raises(ConfigError) as exc:
        parse_hostport(f"{shown}:{port_text}", "--dtls")
    assert str(exc.value).startswith("--dtls: ") and "\n" not in str(exc.value)


def test_broker_port_zero_is_refused_listen_port_zero_is_any() -> None:
    assert parse_hostport("127.0.0.1:0", "--udp") == ("127.0.0.1", 0)
    with pytest.raises(ConfigError, match=r"--broker: port 0 .* out of range \(1\.\.65535\)"):
        parse_broker_url("mqtt://127.0.0.1:0")


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("::1:5", "needs brackets"),  # ambiguous: ::1 port 5, or ::1:5 without a port?
        ("fe80::1:8883", "needs brackets"),
        ("[::1]", "expected HOST:PORT"),  # a listen address needs its port
        ("[::1:5", "expected HOST:PORT"),
        ("[::1]5", "expected HOST:PORT"),
        ("[example.com]:5", "is not an IPv6 address"),
        ("[]:5", "is not an IPv6 address"),
        (":5", "expected HOST:PORT"),
        ("nowhere", "expected HOST:PORT"),
        ("a b:5", "expected HOST:PORT"),
        ("user@host:5", "expected HOST:PORT"),
        ("udp://127.0.0.1:5", "expected HOST:PORT"),  # no scheme on a listen address
    ],
)
def test_bad_hostports_are_named(value: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_hostport(value, "--udp")
    assert str(exc.value).startswith("--udp: ") and needle in str(exc.value) and repr(value) in str(exc.value)


def test_bracketed_ipv6_is_accepted_with_scope() -> None:
    assert parse_hostport("[fe80::1%eth0]:5683", "--udp") == ("fe80::1%eth0", 5683)
    assert parse_udp_url("udp://[::1]:5", "--x") == ("::1", 5)


@pytest.mark.parametrize(
    ("parse", "value"),
    [
        (lambda v: parse_broker_url(v), "http://x:1"),
        (lambda v: parse_broker_url(v), "mqtt://"),
        (lambda v: parse_broker_url(v), "mqtt://user:pw@host:1883"),
        (lambda v: parse_broker_url(v), "mqtt://host:1883/path"),
        (lambda v: parse_udp_url(v, "--gateway"), "127.0.0.1:5"),  # udp:// is required
        (lambda v: parse_udp_url(v, "--gateway"), "tcp://127.0.0.1:5"),
        (lambda v: parse_udp_url(v, "--gateway"), "udp://127.0.0.1"),  # and so is the port
        (lambda v: parse_udp_url(v, "--gateway"), "udp://127.0.0.1:5/x"),
        (lambda v: parse_udp_url(v, "--gateway"), "udp://127.0.0.1:5?q=1"),
    ],
)
def test_bad_urls_are_named(parse: object, value: str) -> None:
    with pytest.raises(ConfigError, match=r"^--(broker|gateway): expected (mqtt|udp)://HOST:PORT, got "):
        parse(value)  # type: ignore[operator]


@given(st.text(max_size=40))
@example("mqtt://[::1]:")
@example("[")
def test_any_text_parses_or_raises_one_config_error(value: str) -> None:
    for kwargs in ({}, {"scheme": "mqtt", "default_port": 1883}, {"scheme": "udp", "bare": False}):
        try:
            host, port = parse_address(value, "--x", **kwargs)  # type: ignore[arg-type]
        except ConfigError as exc:
            assert str(exc).startswith("--x: ") and "\n" not in str(exc)
        else:
            assert host and 0 <= port <= 65535 and not any(c.isspace() for c in host)


def test_cli_parser_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    p = CliParser(prog="meshota thing")
    p.add_argument("--n", type=int, required=True)
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("inner").add_argument("--k", choices=("a", "b"))
    for argv, needle in (
        (["--n", "x"], "invalid int value: 'x'"),
        ([], "required: --n"),
        (["--n", "1", "--bogus"], "unrecognized arguments: --bogus"),
        (["--n", "1", "inner", "--k", "c"], "invalid choice: 'c'"),
    ):
        with pytest.raises(SystemExit) as exc:
            p.parse_args(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and needle in err, err
        assert err.startswith("meshota thing inner: error: " if "inner" in argv else "meshota thing: error: ")
