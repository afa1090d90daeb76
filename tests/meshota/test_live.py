"""The live demo's server-side interface: the PSK file it provisions and ``meshota up``'s
addresses file it will read once ``up`` starts the stack."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from meshota.live.stack import read_addresses, write_psk_file
from wire.dtls_credentials import load_psk_file


def test_psk_file_is_what_the_gateway_loads_and_private(tmp_path: Path) -> None:
    psks = {"root-0": bytes(range(16)), "node-01": b"\xaa" * 32}
    path = tmp_path / "keys" / "psk.txt"
    write_psk_file(path, psks)
    assert dict(load_psk_file(path)) == psks
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_addresses_json_of_meshota_up(tmp_path: Path) -> None:
    path = tmp_path / "run" / "addresses.json"
    path.parent.mkdir()
    doc = {
        "http": "127.0.0.1:8080",
        "broker": "mqtt://127.0.0.1:1883",
        "udp": "127.0.0.1:1884",
        "dtls": "udp://127.0.0.1:5684",
        "admin_user": "admin@example.com",
        "psk_file": str(tmp_path / "keys" / "psk.txt"),
    }
    path.write_text(json.dumps(doc))
    addr = read_addresses(path, "from-env")
    assert addr.http == "http://127.0.0.1:8080" and addr.dtls == "127.0.0.1:5684"
    assert addr.admin_user == "admin@example.com" and addr.admin_password == "from-env"
    assert addr.psk_file == tmp_path / "keys" / "psk.txt" and addr.broker == "mqtt://127.0.0.1:1883"
    doc["http"] = "https://[::1]:8443"
    path.write_text(json.dumps(doc))
    assert read_addresses(path, "x").http == "https://[::1]:8443"
