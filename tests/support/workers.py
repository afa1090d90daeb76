"""N bridge worker processes on one database and one broker, and a stamping MQTT caller.

A worker is this module run as a program: the real API routes (``build_router``) plus one
test route, ``POST /api/devices/v1/test/count``, whose handler writes one ``settings`` row
``count:<nonce>:<random>`` per execution, so a test counts in the database how often a request
really ran. The worker serves them through the real :class:`bridge.mqtt.MqttBridge` on a shared
subscription and runs a :class:`bridge.store.SingletonJob` ("test-ticker") writing
``tick:<pid>:<n>`` rows, so a test sees which process runs it.

    python -m tests.support.workers --db URL [--schema S] --broker mqtt://H:P --client-id W1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COUNT_PATH = "/api/devices/v1/test/count"
SHARE_GROUP = "workers"


@dataclass
class Worker:
    name: str
    argv: list[str]
    proc: subprocess.Popen[str]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def restart(self) -> None:
        self.proc = _spawn(self.argv)


def _spawn(argv: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "ready" once subscribed
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"worker did not start: {line!r}")
    return proc


@contextlib.contextmanager
def spawn_workers(
    n: int, db_url: str, schema: str | None, broker_url: str, **options: Any
) -> Iterator[list[Worker]]:
    """``n`` worker processes (client ids w0..wn-1), each ready (subscribed) when this yields."""
    workers: list[Worker] = []
    try:
        for i in range(n):
            argv = [
                sys.executable,
                "-m",
                "tests.support.workers",
                "--db",
                db_url,
                "--broker",
                broker_url,
                "--client-id",
                f"w{i}",
            ]
            if schema:
                argv += ["--schema", schema]
            for key, value in options.items():
                argv += [f"--{key.replace('_', '-')}", str(value)]
            workers.append(Worker(f"w{i}", argv, _spawn(argv)))
        yield workers
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(15)
            if w.proc.poll() is None:
                w.kill()


@dataclass
class Replies:
    """Replies by response topic, with the worker (``meshota-bridge`` property) that sent each."""

    got: dict[str, list[tuple[bytes, str]]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class StampedCaller:
    """Publishes request envelopes with the gateway's stamp, as an aggregating gateway does."""

    def __init__(self) -> None:
        self.replies = Replies()
        self.client: Any = None

    async def connect(self, host: str, port: int) -> StampedCaller:
        from bridge.mqtt5 import ConnectOptions, Mqtt5Client

        self.client, _ = await Mqtt5Client.connect(
            host, port, ConnectOptions(f"caller-{uuid.uuid4().hex[:8]}"), self._on_message
        )
        await self.client.subscribe([("/mender/responses/#", 1)])
        return self

    def _on_message(self, message: Any) -> None:
        worker = dict(message.user_properties).get("meshota-bridge", "")
        self.replies.got.setdefault(message.topic, []).append((message.payload, worker))
        self.replies.arrived.set()

    def publish(self, device: str, topic: str, payload: bytes, verified: bool = True) -> None:
        from bridge.mqtt5 import encode_user_properties
        from wire.envelope import DEVICE_PROPERTY, VERIFIED_PROPERTY

        stamp = encode_user_properties(
            [(DEVICE_PROPERTY, device), (VERIFIED_PROPERTY, "1" if verified else "0")]
        )
        self.client.publish(topic, payload, 1, stamp)

    async def call(
        self,
        device: str,
        rid: str,
        method: str,
        path: str,
        body: bytes = b"",
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes, str]:
        """(status, body, worker) of one request; raises TimeoutError."""
        from wire.envelope import RequestEnvelope, ResponseEnvelope, request_topic, response_topic

        topic = response_topic(device, rid)
        self.replies.got.pop(topic, None)
        env = RequestEnvelope(
            rid, method, token, "application/json" if body else None, body, {}, headers or {}
        )
        self.publish(device, request_topic(path), env.encode())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while topic not in self.replies.got:
            self.replies.arrived.clear()
            await asyncio.wait_for(self.replies.arrived.wait(), max(0.0, deadline - loop.time()))
        payload, worker = self.replies.got[topic][0]
        reply = ResponseEnvelope.decode(payload)
        return reply.status, reply.body, worker

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


# --- the worker program --------------------------------------------------------------------------


async def _worker(args: argparse.Namespace) -> None:
    import sqlalchemy as sa

    from bridge.api import ROUTES as API_ROUTES
    from bridge.api import ApiContext, Request, Response, Route, Router, Settings, json_response
    from bridge.artifacts import BlobStore
    from bridge.mqtt import BridgePolicy, MqttBridge, MqttBridgeConfig
    from bridge.store import SingletonJob, Store
    from bridge.store import tables as t

    store = Store.open(args.db, schema=args.schema)
    await store.migrate()
    ctx = await ApiContext.create(
        store, BlobStore(Path(args.artifacts or f"/tmp/w-{os.getpid()}")), Settings()
    )

    async def count(ctx: ApiContext, req: Request) -> Response:
        nonce = req.json()["nonce"]
        async with ctx.store.transaction() as conn:
            key = f"count:{nonce}:{uuid.uuid4().hex[:8]}"
            await conn.execute(sa.insert(t.settings).values(key=key, value=args.client_id))
        if args.handler_delay:
            await asyncio.sleep(args.handler_delay)
        return json_response(200, {"nonce": nonce})

    router = Router(ctx, [*API_ROUTES, Route("POST", COUNT_PATH, count)])
    bridge = MqttBridge(
        router,
        MqttBridgeConfig(
            args.host,
            args.port,
            client_id=args.client_id,
            share_group=SHARE_GROUP,
            policy=BridgePolicy(require_verified=False),
            session_expiry=600,
            group_max=args.group_max,
        ),
    )
    await bridge.start()

    async def tick_forever() -> None:
        n = 0
        while True:
            async with store.transaction() as conn:
                await conn.execute(sa.insert(t.settings).values(key=f"tick:{os.getpid()}:{n}", value="1"))
            n += 1
            await asyncio.sleep(0.1)

    ticker = asyncio.create_task(SingletonJob(store, "test-ticker", tick_forever, retry=0.2).run())
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    ticker.cancel()
    await bridge.stop(drain=2.0)
    await store.close()


def main() -> None:
    from meshota.addresses import parse_broker_url

    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--schema", default=None)
    p.add_argument("--broker", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--artifacts", default=None)
    p.add_argument("--handler-delay", type=float, default=0.0)
    p.add_argument("--group-max", type=int, default=64)
    args = p.parse_args()
    args.host, args.port = parse_broker_url(args.broker)
    asyncio.run(_worker(args))


if __name__ == "__main__":
    main()
