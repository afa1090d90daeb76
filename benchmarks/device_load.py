"""One load process of benchmarks/fleet_load.py: many simulated MQTT-SN devices over real UDP.

Each device is the product's node code: a :class:`firmware_proto.aio.mqttsn_udp.UdpClient` (its
own UDP socket, so the gateway sees one peer per device) carrying a
:class:`firmware_proto.aio.device_mqttsn.MqttSnDevice` (the Mender device API over MQTT-SN).
One process multiplexes its sockets on one event loop. It is driven by JSON lines on stdin and
answers each with one JSON line on stdout:

    {"cmd": "keys"}                          -> {"devices": [[mac, pubkey PEM], ...]}
    {"cmd": "connect"}                       -> {"connected": n, "failed": m, "seconds": s}
    {"cmd": "auth"}                          -> {"ok": n, "failed": m} (every device authenticates)
    {"cmd": "run", "seconds": S, "rate": R}  -> latencies (ms) by call, failures, retries, stale
    {"cmd": "quit"}

``run`` is open-loop at R requests/s: a device cycle (auth, inventory, next, status: four
requests) starts every 4/R s on the next idle device, whether or not earlier ones finished.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from firmware_proto.aio.device_mqttsn import MqttSnDevice  # noqa: E402
from firmware_proto.aio.mqttsn_udp import UdpClient  # noqa: E402

INVENTORY = [{"name": "device_type", "value": "bench"}, {"name": "artifact_name", "value": "v0"}]


def device_name(i: int) -> str:
    return f"fl-{i:05d}"


def device_mac(i: int) -> str:
    return f"02:f1:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


class Fleet:
    def __init__(self, gateways: list[tuple[str, int]], first: int, count: int, timeout: float) -> None:
        self.gateways = gateways
        self.indexes = list(range(first, first + count))
        self.keys = {i: ec.generate_private_key(ec.SECP256R1()) for i in self.indexes}
        self.timeout = timeout
        self.clients: dict[int, UdpClient] = {}
        self.devices: dict[int, MqttSnDevice] = {}
        self.busy: set[int] = set()

    def pubkeys(self) -> list[list[str]]:
        out = []
        for i in self.indexes:
            pem = (
                self.keys[i]
                .public_key()
                .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            )
            out.append([device_mac(i), pem.decode()])
        return out

    async def connect(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        gate = asyncio.Semaphore(64)
        failed = 0

        async def one(i: int) -> None:
            nonlocal failed
            async with gate:
                gw = self.gateways[i % len(self.gateways)]
                client = UdpClient(
                    gw,
                    device_name(i),
                    keep_alive=900,
                    retry_interval=3.0,
                    max_retries=5,
                    socket_buffer=128 * 1024,
                )
                try:
                    await client.__aenter__()
                    device = MqttSnDevice(
                        client, device_name(i), device_mac(i), self.keys[i], timeout=self.timeout, attempts=3
                    )
                    await device.start()
                except Exception:
                    failed += 1
                    return
                self.clients[i], self.devices[i] = client, device

        await asyncio.gather(*(one(i) for i in self.indexes))
        return {"connected": len(self.devices), "failed": failed, "seconds": time.perf_counter() - t0}

    async def auth_all(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(32)

        async def one(device: MqttSnDevice) -> bool:
            async with gate:
                try:
                    return await device.authenticate() == 200
                except Exception:
                    return False

        results = await asyncio.gather(*(one(d) for d in self.devices.values()))
        return {"ok": sum(results), "failed": len(results) - sum(results)}

    async def cycle(self, i: int, lat: dict[str, list[float]], result: dict[str, Any]) -> None:
        device = self.devices[i]
        try:
            for op in ("auth", "inventory", "next", "status"):
                t0 = time.perf_counter()
                if op == "auth":
                    ok = await device.authenticate() == 200
                elif op == "inventory":
                    ok = await device.put_inventory(INVENTORY) == 200
                elif op == "next":
                    found = await device.next_deployment("v0", "bench")
                    ok = found is not None
                else:
                    ok = await device.put_status(str(found["id"]), "downloading") == 204  # type: ignore[index]
                lat[op].append((time.perf_counter() - t0) * 1000)
                result["requests"] += 1
                if not ok:
                    result["failures"] += 1
                    result["failed_ops"][op] = result["failed_ops"].get(op, 0) + 1
                    return
        except Exception as exc:
            result["requests"] += 1
            result["failures"] += 1
            name = type(exc).__name__
            result["errors"][name] = result["errors"].get(name, 0) + 1
        finally:
            self.busy.discard(i)

    async def run(self, seconds: float, rate: float) -> dict[str, Any]:
        lat: dict[str, list[float]] = {op: [] for op in ("auth", "inventory", "next", "status")}
        result: dict[str, Any] = {"requests": 0, "failures": 0, "failed_ops": {}, "errors": {}, "skipped": 0}
        before = {k: (d.stats.retries, d.stats.stale_replies) for k, d in self.devices.items()}
        loop = asyncio.get_running_loop()
        interval = 4.0 / rate
        start = loop.time()
        order = [i for i in self.indexes if i in self.devices]
        tasks: list[asyncio.Task[None]] = []
        n = 0
        k = 0
        while loop.time() - start < seconds:
            due = start + n * interval
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            n += 1
            for _ in range(len(order)):  # the next idle device
                i = order[k % len(order)]
                k += 1
                if i not in self.busy:
                    self.busy.add(i)
                    tasks.append(asyncio.create_task(self.cycle(i, lat, result)))
                    break
            else:
                result["skipped"] += 1
        elapsed = loop.time() - start
        await asyncio.gather(*tasks)
        result["elapsed"] = elapsed
        result["started"] = len(tasks)
        result["drain"] = loop.time() - start - elapsed
        result["latency_ms"] = lat
        result["retries"] = sum(d.stats.retries - before[k][0] for k, d in self.devices.items())
        result["stale_replies"] = sum(d.stats.stale_replies - before[k][1] for k, d in self.devices.items())
        return result

    async def close(self) -> None:
        for device in self.devices.values():
            await device.aclose()
        for client in self.clients.values():
            try:
                await asyncio.wait_for(client.__aexit__(None, None, None), 2)
            except Exception:
                continue


async def main_async(args: argparse.Namespace) -> None:
    gateways = []
    for item in args.gateways.split(","):
        host, _, port = item.rpartition(":")
        gateways.append((host, int(port)))
    fleet = Fleet(gateways, args.first, args.count, args.timeout)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        if cmd["cmd"] == "keys":
            out: dict[str, Any] = {"devices": fleet.pubkeys()}
        elif cmd["cmd"] == "connect":
            out = await fleet.connect()
        elif cmd["cmd"] == "auth":
            out = await fleet.auth_all()
        elif cmd["cmd"] == "run":
            out = await fleet.run(float(cmd["seconds"]), float(cmd["rate"]))
        else:
            break
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    await fleet.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gateways", required=True, help="H:P,H:P (device i uses gateway i mod n)")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before a request is re-sent")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
