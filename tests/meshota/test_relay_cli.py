"""``meshota relay``: usage and configuration errors exit 2 with one line naming the value."""

from __future__ import annotations

import pytest

from meshota.cli._args import parse_udp_url
from meshota.cli.relay import relay_main


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--gateway", "tcp://127.0.0.1:1", "--listen", "udp://127.0.0.1:0"], "'tcp://127.0.0.1:1'"),
        (["--gateway", "udp://127.0.0.1:1", "--listen", "udp://127.0.0.1"], "'udp://127.0.0.1'"),
        (["--gateway", "udp://127.0.0.1:99999", "--listen", "udp://127.0.0.1:0"], "99999"),
        (["--gateway", "udp://127.0.0.1:1"], "--listen"),
        (["--gateway", "udp://127.0.0.1:1", "--listen", "udp://192.0.2.1:9"], "--listen"),
    ],
)
def test_relay_main_config_errors_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(relay_main(argv))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err and err.startswith("meshota relay:")


def test_parse_udp_url() -> None:
    assert parse_udp_url("udp://127.0.0.1:1884", "--x") == ("127.0.0.1", 1884)
    assert parse_udp_url("udp://[::1]:5", "--x") == ("::1", 5)
