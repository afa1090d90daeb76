"""BrokerLink keeps at most ``max_connecting`` MQTT connection attempts in flight: the rest wait
their turn, and one whose session ended while waiting never connects."""

from __future__ import annotations

import asyncio

from bridge.gateway.broker_link import BrokerAnswers, BrokerLink
from mqttsn import BrokerConnect, BrokerDisconnect


def test_connection_attempts_in_flight_are_bounded() -> None:
    async def main() -> None:
        accepted: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)  # a broker that never answers CONNECT

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        answers = BrokerAnswers(
            connected=lambda conn, ok: None, published=lambda conn, token: None,
            subscribed=lambda conn, token, granted: None, unsubscribed=lambda conn, token: None,
            message=lambda *a: None, lost=lambda conn: None,
        )  # fmt: skip
        link = BrokerLink("127.0.0.1", port, answers, max_connecting=3)
        try:
            for i in range(10):
                link.run(BrokerConnect(("peer", i), f"c{i}", 60, True, None))
            async with asyncio.timeout(10):
                while len(accepted) < 3:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            assert len(accepted) == 3 and link.connecting == 3 and link.peak_connecting == 3
            # a waiting attempt whose session ended is dropped without connecting
            link.run(BrokerDisconnect(("peer", 9)))
            await asyncio.sleep(0.1)
            assert ("peer", 9) not in link._conns
        finally:
            await link.close()
            for w in accepted:
                w.close()
            server.close()
            await server.wait_closed()
        assert len(accepted) <= 9  # the ended one never reached the broker

    asyncio.run(main())
