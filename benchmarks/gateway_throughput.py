"""Gateway throughput and cost: N MQTT-SN clients through `meshota gateway` vs N MQTT clients
straight into mosquitto (the ceiling), QoS 0 and QoS 1, measured in one run by one subscriber.

    .venv/bin/python benchmarks/gateway_throughput.py [--clients 20] [--qos1-messages 5000] [--mode M]

The gateway's CPU per delivered message (user + system time of its process over the run) is
printed for the gateway as built (its broker link on bridge.mqtt5) and, as the same-run baseline,
for a second gateway process with the former aiomqtt/paho link (`--broker-client aiomqtt`), under
the same load; plus each one's idle RSS and how many "pending publish calls" warnings it logged.

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
import os
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
from mqttsn import Connect, Publish, Regack, Register, decode, encode  # noqa: E402


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
        raise RuntimeError(f"client {i}: no answer from gateway {gw}")

    tids = []
    for i in range(clients):
        await request(i, encode(Connect(f"sn-{topic}-{i}", 300)))
        ack = await request(i, encode(Register(0, 1, f"{topic}/{i}")))
        if not isinstance(ack, Regack):
            raise RuntimeError(f"client {i} of gateway {gw}: REGISTER answered {ack}")
        tids.append(ack.topic_id)
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


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class GatewayProcess:
    """`meshota gateway` as its own process, with its log in a file."""

    def __init__(
        self, broker_url: str, mode: str, clients: int, tmp: Path, link: str, extra: tuple[str, ...] = ()
    ) -> None:
        self.port = free_udp_port()
        self.log_path = tmp / f"gateway-{link}{'-dtls' if extra else ''}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the gateway
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshota", "gateway", "--broker", broker_url,
             "--udp", f"127.0.0.1:{self.port}", "--mode", mode, "--broker-client", link,
             "--client-id", f"bench-gateway-{link}",
             # every load client is a keyless peer on 127.0.0.1: lift the per-source limits
             "--max-unverified-per-source", str(4 * clients),
             "--unverified-connect-rate-per-source", str(10 * clients), *extra],
            stdout=subprocess.PIPE, stderr=self.log, cwd=ROOT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "meshota gateway:" not in line:
            raise RuntimeError(f"gateway ({link}) failed to start: {line}{self.log_path.read_text()}")
        time.sleep(1.0)
        self.idle_rss = _rss_mb(self.proc.pid)

    def stop(self) -> list[str]:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        return self.log_path.read_text(errors="replace").splitlines()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--messages", type=int, default=20000, help="QoS 0 messages per path")
    ap.add_argument("--qos1-messages", type=int, default=5000, help="QoS 1 messages per path")
    ap.add_argument("--mode", choices=("transparent", "aggregating"), default="transparent")
    args = ap.parse_args()

    links = ("mqtt5", "aiomqtt")  # the gateway's link, and the former one as the same-run baseline
    with tempfile.TemporaryDirectory() as tmp, start_mosquitto(Path(tmp)) as broker:
        # idle RSS with DTLS on as well (PSK file of 1,000 nodes; target <= 25 MB): its own process
        psk = Path(tmp) / "psk.txt"
        psk.write_text("".join(f"n{i:04d},{os.urandom(16).hex()}\n" for i in range(1000)))
        dtls_args = ("--dtls", f"127.0.0.1:{free_udp_port()}", "--psk-file", str(psk))
        with_dtls = GatewayProcess(broker.url, args.mode, args.clients, Path(tmp), "mqtt5", dtls_args)
        dtls_rss = with_dtls.idle_rss
        with_dtls.stop()
        gateways = {
            link: GatewayProcess(broker.url, args.mode, args.clients, Path(tmp), link) for link in links
        }
        rows = []
        cpu: dict[tuple[int, str], float] = {}
        logs: dict[str, list[str]] = {}
        try:
            for qos, total in ((0, args.messages), (1, args.qos1_messages)):
                total -= total % args.clients
                results = {}
                for path in ("raw", *links):
                    topic = f"bench/{path}/q{qos}"
                    counter = Counter(broker.port, f"{topic}/#", total)
                    if path == "raw":
                        send_s = asyncio.run(raw_mqtt(broker.port, args.clients, total, qos, topic))
                    else:
                        gw = gateways[path]
                        before = _cpu_s(gw.proc.pid)
                        gw_addr = ("127.0.0.1", gw.port)
                        send_s = asyncio.run(mqttsn_load(gw_addr, args.clients, total, qos, topic))
                    n, rate = counter.result()
                    if path != "raw":
                        cpu[(qos, path)] = (_cpu_s(gateways[path].proc.pid) - before) / max(n, 1) * 1e6
                    results[path] = (n, rate, send_s)
                rows.append((qos, total, results))
        finally:
            for link, gw in gateways.items():
                logs[link] = gw.stop()
                if len(rows) < 2:  # failed: show what the gateways said
                    print(f"gateway {link} on udp {gw.port}:", *logs[link][-5:], sep="\n  ", file=sys.stderr)

    print(f"\ngateway throughput, {args.clients} clients x 32 B, mode {args.mode}, through mosquitto")
    print("(delivered msg/s counted at one subscriber; gateway CPU = its user+system time / delivered)")
    print(f"{'QoS':>3} {'sent':>7} {'path':>8} {'msg/s':>9} {'lost':>6} {'vs raw':>7} {'gw CPU us/msg':>14}")
    for qos, total, results in rows:
        raw_rate = results["raw"][1]
        for path, (n, rate, _) in results.items():
            ratio = rate / raw_rate if raw_rate else 0.0
            us = f"{cpu[(qos, path)]:.1f}" if path != "raw" else "-"
            print(f"{qos:>3} {total:>7} {path:>8} {rate:>9.0f} {total - n:>6} {ratio:>7.2f} {us:>14}")
    q1_new, q1_old = cpu[(1, "mqtt5")], cpu[(1, "aiomqtt")]
    print(
        f"\nQoS 1 gateway CPU per message: {q1_new:.1f} us (target <= 70), baseline (aiomqtt link, "
        f"same run) {q1_old:.1f} us: ratio {q1_new / q1_old:.2f}"
    )
    print(
        f"idle RSS of meshota gateway (VmRSS, MiB): {gateways['mqtt5'].idle_rss:.1f} UDP only, "
        f"{dtls_rss:.1f} with DTLS on (target <= 25), "
        f"UDP only with the aiomqtt link {gateways['aiomqtt'].idle_rss:.1f}"
    )
    for link, lines in logs.items():
        pending = sum("pending publish calls" in line for line in lines)
        print(
            f"gateway log ({link}): {len(lines)} lines, {pending} 'pending publish calls' warnings"
            + (f"; first: {lines[0]}" if lines else "")
        )
    q0 = rows[0][2]["mqtt5"][1] / rows[0][2]["raw"][1] if rows[0][2]["raw"][1] else 0.0
    print(f"QoS 0 ratio {q0:.2f} (target >= 0.50): {'MET' if q0 >= 0.5 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
