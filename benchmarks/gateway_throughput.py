"""Gateway throughput: N MQTT-SN clients through `meshota gateway` vs N MQTT clients straight into
mosquitto (the ceiling), QoS 0 and QoS 1, measured in one run by one subscriber.

    .venv/bin/python benchmarks/gateway_throughput.py [--clients 100] [--messages 20000] [--mode transparent]

The gateway runs as its own process (`meshota gateway`), the load generator and the counting
subscriber in others, so the gateway gets a core like mosquitto does. QoS 0 load is offered as
fast as the sender can; QoS 1 is stop-and-wait per client on both paths (MQTT-SN allows one
PUBLISH in flight, so the MQTT clients do the same for a like-for-like comparison).
Prints delivered messages/s for each path and the ratio gateway/raw. Target: QoS 0 ratio >= 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402

from meshota.broker import start_mosquitto  # noqa: E402
from mqttsn import Connect, Publish, Register, decode, encode  # noqa: E402


def _count(port: int, topic: str, expected: int, idle: float, ready: Connection, out: Connection) -> None:
    """Subscriber process: count messages until `expected` arrived or `idle` s pass without one."""
    state = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        if state["n"] == 0:
            state["first"] = now
        state["n"] += 1
        state["last"] = now

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"counter-{topic}")
    c.on_message = on_message
    c.on_subscribe = lambda *a: ready.send("ready")
    c.connect("127.0.0.1", port)
    c.subscribe(topic, 1)
    t_end = time.perf_counter() + 120
    while time.perf_counter() < t_end:
        c.loop(0.05)
        if state["n"] >= expected:
            break
        if state["n"] and time.perf_counter() - state["last"] > idle:
            break
        if not state["n"] and out.poll():
            break  # the sender gave up
    out.send((state["n"], state["first"], state["last"]))
    c.disconnect()


class Counter:
    def __init__(self, port: int, topic: str, expected: int) -> None:
        ctx = mp.get_context("spawn")
        self.ready_r, ready_w = ctx.Pipe(False)
        self.out_r, self.out_w = ctx.Pipe(True)
        self.proc = ctx.Process(target=_count, args=(port, topic, expected, 3.0, ready_w, self.out_w))
        self.proc.start()
        if not self.ready_r.poll(20):
            raise RuntimeError("counter did not subscribe")
        self.ready_r.recv()

    def result(self) -> tuple[int, float]:
        n, first, last = self.out_r.recv()
        self.proc.join(10)
        return n, (n - 1) / (last - first) if n > 1 and last > first else 0.0


# --- raw MQTT load ------------------------------------------------------------------------------


async def raw_mqtt(port: int, clients: int, messages: int, qos: int, topic: str) -> float:
    import aiomqtt

    per = messages // clients
    conns = [aiomqtt.Client("127.0.0.1", port, identifier=f"raw-{qos}-{i}") for i in range(clients)]
    for c in conns:
        await c.__aenter__()
    payload = b"x" * 32
    t0 = time.perf_counter()

    if qos == 0:
        # As fast as paho can take them (no await per message), in the same rounds as the
        # MQTT-SN sender: one message per client, then let the loop write.
        for _ in range(per):
            for i, c in enumerate(conns):
                c._client.publish(f"{topic}/{i}", payload, 0)
            await asyncio.sleep(0)
    else:

        async def one(i: int, c: aiomqtt.Client) -> None:
            for _ in range(per):
                await c.publish(f"{topic}/{i}", payload, qos)

        await asyncio.gather(*(one(i, c) for i, c in enumerate(conns)))
    dt = time.perf_counter() - t0
    await asyncio.sleep(0.5)
    for c in conns:
        await c.__aexit__(None, None, None)
    return dt


# --- MQTT-SN load -------------------------------------------------------------------------------


class SnProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)


async def mqttsn_load(gw: tuple[str, int], clients: int, messages: int, qos: int, topic: str) -> float:
    loop = asyncio.get_running_loop()
    per = messages // clients
    endpoints = []
    for _ in range(clients):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.connect(gw)
        transport, proto = await loop.create_datagram_endpoint(SnProtocol, sock=sock)
        endpoints.append((transport, proto))

    async def request(i: int, pkt: bytes) -> object:
        transport, proto = endpoints[i]
        for _ in range(5):
            transport.sendto(pkt)
            try:
                return decode(await asyncio.wait_for(proto.queue.get(), 5))
            except TimeoutError:
                continue
        raise RuntimeError(f"client {i}: no answer from gateway")

    tids = []
    for i in range(clients):
        await request(i, encode(Connect(f"sn-{qos}-{i}", 300)))
        ack = await request(i, encode(Register(0, 1, f"{topic}/{i}")))
        tids.append(ack.topic_id)  # type: ignore[attr-defined]
    payload = b"x" * 32
    t0 = time.perf_counter()
    if qos == 0:
        datagrams = [encode(Publish(tids[i], payload, 0)) for i in range(clients)]
        for _ in range(per):
            for i in range(clients):
                endpoints[i][0].sendto(datagrams[i])
            await asyncio.sleep(0)  # let the loop breathe; UDP has no flow control of its own
    else:

        async def one(i: int) -> None:
            for k in range(per):
                await request(i, encode(Publish(tids[i], payload, 1, (k % 65000) + 2)))

        await asyncio.gather(*(one(i) for i in range(clients)))
    dt = time.perf_counter() - t0
    for transport, _ in endpoints:
        transport.close()
    return dt


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--messages", type=int, default=20000, help="QoS 0 messages per path")
    ap.add_argument("--qos1-messages", type=int, default=5000, help="QoS 1 messages per path")
    ap.add_argument("--mode", choices=("transparent", "aggregating"), default="transparent")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, start_mosquitto(Path(tmp)) as broker:
        udp_port = free_udp_port()
        gw_log = open(Path(tmp) / "gateway.log", "wb")  # noqa: SIM115 - lives as long as the gateway
        gw = subprocess.Popen(
            [sys.executable, "-m", "meshota", "gateway", "--broker", broker.url,
             "--udp", f"127.0.0.1:{udp_port}", "--mode", args.mode,
             # every load client is a keyless peer on 127.0.0.1: lift the per-source limits
             "--max-unverified-per-source", str(args.clients),
             "--unverified-connect-rate-per-source", str(10 * args.clients)],
            stdout=subprocess.PIPE, stderr=gw_log, cwd=ROOT,
        )  # fmt: skip
        assert gw.stdout is not None
        line = gw.stdout.readline().decode()
        if "meshota gateway:" not in line:
            print("gateway failed to start:", line, gw.stdout.read().decode(), file=sys.stderr)
            return 1
        rows = []
        try:
            for qos, total in ((0, args.messages), (1, args.qos1_messages)):
                total -= total % args.clients
                results = {}
                for path in ("raw", "gateway"):
                    topic = f"bench/{path}/q{qos}"
                    counter = Counter(broker.port, f"{topic}/#", total)
                    if path == "raw":
                        send_s = asyncio.run(raw_mqtt(broker.port, args.clients, total, qos, topic))
                    else:
                        gw_addr = ("127.0.0.1", udp_port)
                        send_s = asyncio.run(mqttsn_load(gw_addr, args.clients, total, qos, topic))
                    n, rate = counter.result()
                    results[path] = (n, rate, send_s)
                raw, via = results["raw"], results["gateway"]
                ratio = via[1] / raw[1] if raw[1] else 0.0
                rows.append((qos, total, raw, via, ratio))
        finally:
            gw.terminate()
            gw.wait(10)
            gw_log.close()
            warnings = (Path(tmp) / "gateway.log").read_text(errors="replace").splitlines()
            if warnings:
                print(f"gateway log ({len(warnings)} lines), first: {warnings[0]}")

    print(f"\ngateway throughput, {args.clients} clients, mode {args.mode}")
    print("(delivered msg/s counted at one subscriber)")
    print(f"{'QoS':>3} {'sent':>7} {'raw MQTT':>12} {'via gateway':>12} {'lost(gw)':>9} {'ratio':>6}")
    for qos, total, raw, via, ratio in rows:
        print(f"{qos:>3} {total:>7} {raw[1]:>12.0f} {via[1]:>12.0f} {total - via[0]:>9} {ratio:>6.2f}")
    q0 = rows[0][4]
    print(f"\nQoS 0 ratio {q0:.2f} (target >= 0.50): {'MET' if q0 >= 0.5 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
