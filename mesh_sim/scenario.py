"""Scenario files (TOML): topology, radio, image, collection window, stream limits, faults.

::

    name = "grid-100"
    seed = 1
    [topology]   kind = "grid" | "line" | "tree" | "random" | "file"; nodes; loss (or [lo, hi]);
                 fanout (tree); degree (random); cols (grid); file (JSON, relative to the scenario);
                 submeshes (each with its own root)
    [radio]      profile = "802.15.4" | "wifi-mesh"; collisions = false
    [image]      size (bytes); seq (sequence number in the signed map); artifact (name)
    [collection] window (seconds the roots collect requests)
    [stream]     chunk_size (0: the largest that fits one datagram of at most 4 frames); max_rounds;
                 quiet_rounds; reply_window_ms (0: by radio profile); relay_window; want_interval;
                 want_max (WANT back-off cap, AgentConfig.want_max); heal_delay; unicast_max (DATA
                 as link-ACKed unicast copies to cells of at most this many unfinished members;
                 0: always broadcast); parts ("auto": blocks as
                 one-frame PART frames where the network layer would fragment DATA, i.e. 802.15.4;
                 "on"; "off": whole DATA datagrams), part_count (blocks of at most this many parts);
                 bursts (true: a block's parts leave as one radio burst, mesh_sim/radio.py; false:
                 each part its own datagram on the radio, the model before bursts); sleep (true:
                 a node's radio sleeps once it and its routing subtree installed and its stream
                 cores are idle, no broadcast reaches it; false: every powered node hears every
                 broadcast, the model before); uplink_pace (s a relay holds an up frame of
                 sealed records to pack what arrives meanwhile, UplinkRelayUdp's pace; 0: forward
                 each at once, packing only while the link is busy)
    [[faults]]   kind = "root_dies" (at, submesh) | "node_reboots" (node, at, duration)
                 | "malicious_root" (mode = "tamper" | "replay" | "withhold", fraction, submesh)
    [baselines]  enabled = true
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_proto.sealed_uplink import UPLINK_PACE

from .radio import PROFILES

__all__ = ["Fault", "Scenario", "ScenarioError", "load_scenario", "parse_scenario"]

FAULT_KINDS = ("root_dies", "node_reboots", "malicious_root")
MALICIOUS_MODES = ("tamper", "replay", "withhold")


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the bad value."""


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float = 0.0
    node: int = -1
    duration: float = 0.0
    submesh: int = 0
    mode: str = ""
    fraction: float = 0.0


@dataclass
class Scenario:
    name: str = "scenario"
    seed: int = 1
    topology: str = "random"
    nodes: int = 50
    loss: float | tuple[float, float] = 0.05
    fanout: int = 3
    degree: float = 8.0
    cols: int = 0
    topology_file: Path | None = None
    submeshes: int = 1
    profile: str = "802.15.4"
    collisions: bool = False
    image_size: int = 64 * 1024
    seq: int = 2
    artifact: str = "firmware-2.0"
    window: float = 10.0
    max_rounds: int = 20
    quiet_rounds: int = 2
    chunk_size: int = 0
    reply_window_ms: int = 0
    unicast_max: int = 0
    parts: str = "auto"
    bursts: bool = True
    sleep: bool = True
    part_count: int = 0
    relay_window: float = 0.5
    want_interval: float = 5.0
    want_max: float = 60.0
    heal_delay: float = 5.0
    uplink_pace: float = UPLINK_PACE
    faults: list[Fault] = field(default_factory=list)
    baselines: bool = True


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str) -> Any:
    value = table.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ScenarioError(f"{where}.{key} = {value!r} is not a {getattr(kind, '__name__', kind)}")
    return value


def parse_scenario(doc: dict[str, Any], base: Path | None = None) -> Scenario:
    s = Scenario()
    s.name = _get(doc, "name", str, s.name, "")
    s.seed = _get(doc, "seed", int, s.seed, "")
    topo = doc.get("topology", {})
    s.topology = _get(topo, "kind", str, s.topology, "topology")
    s.nodes = _get(topo, "nodes", int, s.nodes, "topology")
    loss = topo.get("loss", s.loss)
    if isinstance(loss, list) and len(loss) == 2 and all(isinstance(x, int | float) for x in loss):
        s.loss = (float(loss[0]), float(loss[1]))
    elif isinstance(loss, int | float) and not isinstance(loss, bool):
        s.loss = float(loss)
    else:
        raise ScenarioError(f"topology.loss = {loss!r} is not a probability or [lo, hi]")
    for v in s.loss if isinstance(s.loss, tuple) else (s.loss,):
        if not 0.0 <= v < 1.0:
            raise ScenarioError(f"topology.loss {v} is not in [0, 1)")
    s.fanout = _get(topo, "fanout", int, s.fanout, "topology")
    s.degree = _get(topo, "degree", float, s.degree, "topology")
    s.cols = _get(topo, "cols", int, s.cols, "topology")
    s.submeshes = _get(topo, "submeshes", int, s.submeshes, "topology")
    if "file" in topo:
        f = Path(_get(topo, "file", str, "", "topology"))
        s.topology_file = f if f.is_absolute() or base is None else base / f
    if not 2 <= s.nodes <= 100_000 and s.topology != "file":
        raise ScenarioError(f"topology.nodes = {s.nodes} is not in 2..100000")
    radio = doc.get("radio", {})
    s.profile = _get(radio, "profile", str, s.profile, "radio")
    if s.profile not in PROFILES:
        raise ScenarioError(f"radio.profile = {s.profile!r} is not one of {', '.join(PROFILES)}")
    s.collisions = _get(radio, "collisions", bool, s.collisions, "radio")
    image = doc.get("image", {})
    s.image_size = _get(image, "size", int, s.image_size, "image")
    if not 1 <= s.image_size <= 64 * 1024 * 1024:
        raise ScenarioError(f"image.size = {s.image_size} is not in 1..64 MiB")
    s.seq = _get(image, "seq", int, s.seq, "image")
    if s.seq < 1:
        raise ScenarioError(f"image.seq = {s.seq} must be >= 1")
    s.artifact = _get(image, "artifact", str, s.artifact, "image")
    s.window = _get(doc.get("collection", {}), "window", float, s.window, "collection")
    stream = doc.get("stream", {})
    s.max_rounds = _get(stream, "max_rounds", int, s.max_rounds, "stream")
    s.quiet_rounds = _get(stream, "quiet_rounds", int, s.quiet_rounds, "stream")
    s.chunk_size = _get(stream, "chunk_size", int, s.chunk_size, "stream")
    if s.chunk_size and not 64 <= s.chunk_size <= 60000:
        raise ScenarioError(f"stream.chunk_size = {s.chunk_size} is not 0 or in 64..60000")
    s.reply_window_ms = _get(stream, "reply_window_ms", int, s.reply_window_ms, "stream")
    s.unicast_max = _get(stream, "unicast_max", int, s.unicast_max, "stream")
    s.parts = _get(stream, "parts", str, s.parts, "stream")
    if s.parts not in ("auto", "on", "off"):
        raise ScenarioError(f"stream.parts = {s.parts!r} is not auto, on or off")
    s.bursts = _get(stream, "bursts", bool, s.bursts, "stream")
    s.sleep = _get(stream, "sleep", bool, s.sleep, "stream")
    s.uplink_pace = _get(stream, "uplink_pace", float, s.uplink_pace, "stream")
    if not 0.0 <= s.uplink_pace <= 10.0:
        raise ScenarioError(f"stream.uplink_pace = {s.uplink_pace} is not in 0..10 s")
    s.part_count = _get(stream, "part_count", int, s.part_count, "stream")
    if not 0 <= s.part_count <= 16:
        raise ScenarioError(f"stream.part_count = {s.part_count} is not 0 or in 1..16")
    if s.unicast_max < 0:
        raise ScenarioError(f"stream.unicast_max = {s.unicast_max} is not >= 0")
    s.relay_window = _get(stream, "relay_window", float, s.relay_window, "stream")
    s.want_interval = _get(stream, "want_interval", float, s.want_interval, "stream")
    s.want_max = _get(stream, "want_max", float, s.want_max, "stream")
    if s.max_rounds < 1 or s.quiet_rounds < 1 or s.want_interval <= 0:
        raise ScenarioError("stream.max_rounds and quiet_rounds must be >= 1, want_interval > 0")
    s.heal_delay = _get(stream, "heal_delay", float, s.heal_delay, "stream")
    s.baselines = _get(doc.get("baselines", {}), "enabled", bool, s.baselines, "baselines")
    for k, f in enumerate(doc.get("faults", [])):
        where = f"faults[{k}]"
        kind = _get(f, "kind", str, "", where)
        if kind not in FAULT_KINDS:
            raise ScenarioError(f"{where}.kind = {kind!r} is not one of {', '.join(FAULT_KINDS)}")
        mode = _get(f, "mode", str, "", where)
        if kind == "malicious_root" and mode not in MALICIOUS_MODES:
            raise ScenarioError(f"{where}.mode = {mode!r} is not one of {', '.join(MALICIOUS_MODES)}")
        s.faults.append(
            Fault(
                kind,
                _get(f, "at", float, 0.0, where),
                _get(f, "node", int, -1, where),
                _get(f, "duration", float, 10.0, where),
                _get(f, "submesh", int, 0, where),
                mode,
                _get(f, "fraction", float, 0.1, where),
            )
        )
    return s


def load_scenario(path: Path) -> Scenario:
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not TOML ({exc})") from None
    return parse_scenario(doc, path.parent)
