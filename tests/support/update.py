"""Helpers for the group-update tests: real mender-artifact artifacts and a harness.

The session-wide ``artifacts`` fixture (tests/firmware_proto/conftest.py) is :func:`make_artifacts`.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bridge.artifacts import load_verify_key
from firmware_proto.group_stream import RootConfig
from firmware_proto.testing.flash import MemoryFlash
from firmware_proto.testing.group import GroupHarness, MemoryDeviceService, install_initial_image
from firmware_proto.update_agent import AgentConfig
from wire.image_verify import mender_image_verifier

SERVER_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def make_signed_artifact(workdir: Path, name: str, vendor_key: Path, payload_size: int = 6000) -> bytes:
    tool = shutil.which("mender-artifact")
    if tool is None:
        pytest.fail("mender-artifact is not installed: apt-get install -y mender-artifact")
    payload = workdir / f"payload-{name}"
    payload.mkdir(parents=True, exist_ok=True)
    (payload / "image.bin").write_bytes(base64.b64encode(os.urandom(payload_size))[:payload_size])
    out = workdir / f"{name}.mender"
    subprocess.run(
        [
            tool,
            "write",
            "module-image",
            "-T",
            "zephyr-image",
            "-t",
            "test-device",
            "-n",
            name,
            "-o",
            str(out),
            "--compression",
            "none",
            "-k",
            str(vendor_key),
            "-f",
            str(payload / "image.bin"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out.read_bytes()


@dataclass
class Artifacts:
    v1: bytes
    v2: bytes
    unsigned_by_vendor: bytes  # signed with a key the nodes do not trust
    vendor_public: bytes


def make_artifacts(tmp: Path) -> Artifacts:
    """v1 and v2 signed by the vendor key, v2 signed by another key, and the vendor public key."""
    keys = {}
    for name in ("vendor", "other"):
        key = ec.generate_private_key(ec.SECP256R1())
        path = tmp / f"{name}.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        keys[name] = (path, key)
    public = (
        keys["vendor"][1]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return Artifacts(
        make_signed_artifact(tmp, "v1", keys["vendor"][0]),
        make_signed_artifact(tmp, "v2", keys["vendor"][0], payload_size=9000),
        make_signed_artifact(tmp, "v2", keys["other"][0], payload_size=9000),
        public,
    )


def harness(
    artifacts: Artifacts,
    *,
    nodes: int = 3,
    seed: int = 1,
    loss: float = 0.0,
    fallback_timeout: float = 20.0,
    chunk_size: int = 512,
    health_check: bool = True,
    v2: bytes | None = None,
    max_rounds: int = 20,
) -> GroupHarness:
    image_ok = mender_image_verifier([load_verify_key(artifacts.vendor_public)])
    service = MemoryDeviceService(SERVER_KEY)
    service.add_artifact("a1", "v1", artifacts.v1)
    service.add_artifact("a2", "v2", v2 if v2 is not None else artifacts.v2)
    config = AgentConfig(
        map_key=SERVER_KEY.public_key(),
        image_ok=image_ok,
        fallback_timeout=fallback_timeout,
        health_check=lambda: health_check,
    )
    h = GroupHarness(
        seed=seed,
        service=service,
        agent_config=config,
        loss=loss,
        image_ok=image_ok,
        root_config=RootConfig(collection_window=1.0, chunk_size=chunk_size, max_rounds=max_rounds),
    )
    for i in range(nodes):
        flash = MemoryFlash(64 * 1024)
        install_initial_image(flash, artifacts.v1, "v1")
        h.add_node(i, flash)
    return h


def all_final(h: GroupHarness, deployment: str = "d2") -> bool:
    return all(h.service.final_status(n, deployment) is not None for n in h.nodes)
