"""What the group stream on the simulated radio is tuned with, and the size of an end-to-end request."""

from __future__ import annotations

from dataclasses import dataclass

from firmware_proto.sealed_uplink import UPLINK_PACE

__all__ = ["E2E_HEADER", "REQUEST_BYTES", "GroupParams"]

E2E_HEADER = 29 + 9  # DTLS 1.2 record (13 header + 8 nonce + 8 CCM-8 tag) + MQTT-SN PUBLISH header
REQUEST_BYTES = 48  # an end-to-end request (status, map or range fetch) inside the DTLS record


@dataclass(frozen=True)
class GroupParams:
    chunk_size: int
    collection_window: float = 10.0
    relay_window: float = 0.5
    reply_window_ms: int = 500
    max_rounds: int = 20
    quiet_rounds: int = 2
    want_interval: float = 5.0
    want_max: float = 60.0  # AgentConfig.want_max: WANT back-off cap
    fallback_base: float = 30.0
    hop_budget: float = 30.0  # fallback timeout grows by this per hop (store-and-forward)
    reboot_s: float = 0.5
    uplink_rate: float = 1_000_000.0  # bytes/s a root fetches from the server
    server_latency: float = 0.02
    heal_delay: float = 5.0
    nack_max_bytes: int = 128
    unicast_max: int = 0  # RootConfig.unicast_max: DATA as link-ACKed unicast copies to small cells
    part_room: int = 0  # RootConfig.part_room: blocks as one-frame PART frames (0: whole DATA datagrams)
    bursts: bool = True  # a block's PART frames as one radio burst (False: each its own datagram)
    # a node's radio sleeps once nothing more is needed of it (GroupSim._try_sleep; False: every
    # powered node hears every broadcast to the end, the model before)
    sleep: bool = True
    # a relay holds an up frame of sealed records this long to pack what arrives meanwhile
    # (UplinkRelayUdp's pace; 0: it forwards each at once, packing only while its link is busy)
    uplink_pace: float = UPLINK_PACE
