"""The dual-listener security rig: a gateway with UDP and DTLS listeners on its own loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from bridge.gateway.dtls_listener import DtlsListener
from bridge.gateway.udp import GatewayServer
from firmware_proto import dtls_client as dc
from firmware_proto.aio.dtls_node import DtlsUdpClient
from mqttsn import GatewayConfig, MessageReceived
from tests.support.broker import Mosquitto
from tests.support.gateway_dtls import KEYS, Watcher

__all__ = ["KEYS", "DualGateway", "DualGatewayFactory", "Loop", "VerifiedNode"]

T = TypeVar("T")


class Loop:
    """An asyncio event loop on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="security-rig", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


@dataclass
class DualGateway:
    """A running gateway (UDP + DTLS/PSK listeners, one Gateway core, one BrokerLink)."""

    broker: Mosquitto
    server: GatewayServer
    listener: DtlsListener
    keys: dict[str, bytes]
    _loop: Loop = field(repr=False)

    @property
    def udp(self) -> tuple[str, int]:
        """The plain (unauthenticated) UDP listener."""
        return self.server.address

    @property
    def dtls(self) -> tuple[str, int]:
        """The DTLS listener."""
        return self.listener.address

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop.loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the gateway's loop and wait for it (from a plain thread)."""
        return self._loop.submit(coro).result(timeout)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the gateway's loop; await the result from another event loop."""
        return await asyncio.wrap_future(self._loop.submit(coro))

    def stats(self) -> dict[str, int]:
        """A copy of the Gateway core's counters (taken on the gateway's loop)."""

        async def copy() -> dict[str, int]:
            return dict(self.server.gateway.stats)

        return self.run(copy())


class VerifiedNode:
    """A PSK-verified DTLS node (its client runs on the rig's loop) plus a paho watcher."""

    def __init__(self, rig: DualGateway, device: str = "node-a") -> None:
        self.rig = rig
        self.device = device
        self.client: DtlsUdpClient | None = None
        self.watcher = Watcher(rig.broker, f"dev/{device}/#")
        self.trips = 0

    async def _start(self) -> None:
        self.client = DtlsUdpClient(
            self.rig.dtls,
            self.device,
            dtls=dc.PskClientConfig(self.device, self.rig.keys[self.device]),
            keep_alive=60,
            retry_interval=1.0,
            max_retries=10,
        )
        await self.client.__aenter__()
        await self.client.subscribe(f"fw/{self.device}/#", qos=1)

    async def _round_trip(self, tag: str, timeout: float) -> None:
        client = self.client
        assert client is not None
        up, down = f"UP-{tag}".encode(), f"DOWN-{tag}".encode()
        seen = len(self.watcher.messages)
        async with asyncio.timeout(timeout):
            await client.publish(f"dev/{self.device}/status", up, qos=1)
            while not any(m[1] == up for m in self.watcher.messages[seen:]):
                await asyncio.sleep(0.01)
            await asyncio.get_running_loop().run_in_executor(
                None, self.watcher.publish, f"fw/{self.device}/cmd", down, 1
            )
            while True:
                msg: MessageReceived = await anext(client.messages)
                if msg.payload == down:
                    break
        self.trips += 1

    async def round_trip(self, tag: str, timeout: float = 20.0) -> None:
        """Publish ``UP-tag`` (QoS 1, seen by the broker) and receive ``DOWN-tag`` from the broker."""
        await self.rig.arun(self._round_trip(tag, timeout))

    def round_trip_sync(self, tag: str, timeout: float = 20.0) -> None:
        self.rig.run(self._round_trip(tag, timeout), timeout + 5)

    async def _stop(self) -> None:
        if self.client is not None:
            await self.client.__aexit__(None, None, None)
            self.client = None

    def close(self) -> None:
        try:
            self.rig.run(self._stop())
        finally:
            self.watcher.close()


class DualGatewayFactory(Protocol):
    def __call__(
        self,
        *,
        config: GatewayConfig | None = ...,
        keys: dict[str, bytes] | None = ...,
        dtls_options: dict[str, Any] | None = ...,
    ) -> DualGateway: ...
