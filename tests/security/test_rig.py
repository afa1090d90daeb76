"""The security rig itself: a verified DTLS node round-trips through the dual-listener gateway,
and the plain UDP listener of the same gateway answers too."""

from __future__ import annotations

import asyncio

import pytest

from firmware_proto.aio.mqttsn_udp import UdpClient
from tests.support.security import DualGateway, VerifiedNode

pytestmark = pytest.mark.integration


def test_verified_node_round_trips_and_udp_listener_answers(
    dual_gateway: DualGateway, verified_node: VerifiedNode
) -> None:
    async def main() -> None:
        await verified_node.round_trip("one")
        async with UdpClient(dual_gateway.udp, "plain-rig") as plain:
            await plain.ping()
        await verified_node.round_trip("two")

    asyncio.run(main())
    assert verified_node.trips == 3  # setup + two
