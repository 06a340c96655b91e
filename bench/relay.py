"""Relay benchmark: N simulated UDP clients (in separate processes) through one
relay process into one zone, with auth issuing the connect tokens.

    python bench/relay.py --json PATH [--clients 500] [--procs 4] [--duration 10] [--warmup-s S]
        [--workers N]

Reports packets forwarded per second (client packets in + out), the same per
relay CPU-second ("per relay core"), the relay's added latency (client packet in
-> written to the zone link, and zone snapshot batch in -> datagram sent; from
the relay's own histogram, so the zone's tick time is excluded), relay CPU
milliseconds per 1000 packets, UDP bytes per player and second both ways, and the
largest datagram the relay sent. With ``--workers N`` the relay runs N worker
processes on its port (``TESSERA_RELAY_WORKERS``): counters and histograms are
summed over every worker's /metrics and CPU over every worker process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from tessera.common.process import ServiceProcess, free_udp_port
from tessera.harness.postgres import LocalPostgres
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import relay_login_env, service_clients
from tessera.v1 import auth_pb2, auth_pb2_grpc, relay_pb2
from tessera.wire.connection import Connection
from tessera.wire.packet import DATA, PacketError, encode_handshake

WORLD = "bench"
# Lightly loaded clients that only ping through the loaded relay.
PROBES = 4
PROBE_HZ = 20.0
SECRET = "bench-secret-0123456789"
ADDED_LATENCY = "tessera_relay_added_latency_seconds"
GC_PAUSE = "tessera_relay_gc_pause_seconds"
LINK_BATCH = "tessera_relay_link_batch_snapshots"
ZONE_LINK_MESSAGES = "tessera_zone_link_messages_total"
ZONE_HELD_INPUTS = "tessera_zone_held_input_batches_total"


def start_stack(
    tmp: Path,
    database_url: str,
    *,
    tick_hz: int,
    snapshot_every: int = 1,
    extra_relay_env: dict[str, str] | None = None,
    extra_zone_env: dict[str, str] | None = None,
    relay_session: bool = False,
) -> tuple[LocalRedis, dict[str, ServiceProcess], int]:
    """redis-server, auth (on the database at ``database_url``), one zone and one relay,
    all real processes (``relay_session``: the relay in a session of its own)."""
    (tmp / "redis").mkdir()
    redis = LocalRedis(tmp / "redis")
    redis.start()
    connect_key = base64.b64encode(os.urandom(32)).decode()
    udp_port = free_udp_port()
    common = {
        "TESSERA_REDIS_URL": redis.url,
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_GRPC_PORT": "0",
        "TESSERA_METRICS_PORT": "0",
        "TESSERA_HOST": "127.0.0.1",
        "TESSERA_LOG_LEVEL": "warning",
        "TESSERA_WORLD": WORLD,
        "TESSERA_SHUTDOWN_GRACE_S": "1",
    }
    auth = ServiceProcess(
        "tessera.auth",
        {
            **common,
            "TESSERA_AUTH_GENERATE_KEYS": "true",
            "TESSERA_CONNECT_KEY": connect_key,
            "TESSERA_AUTH_RELAYS": f"default=127.0.0.1:{udp_port}",
            "TESSERA_AUTH_SERVICE_CLIENTS": service_clients(f"bench={SECRET}"),
            "TESSERA_AUTH_CONNECT_TTL_S": "300",
            "TESSERA_LOG_LEVEL": "info",
        },
        name="auth",
    ).start()
    auth.wait_serving()
    zone = ServiceProcess(
        "tessera.zone",
        {
            **common,
            "TESSERA_ZONE": "zone-0",
            "TESSERA_ZONE_BOUNDS": "-500,-500,500,500",
            "TESSERA_WORLD_BOUNDS": "-500,-500,500,500",
            "TESSERA_TICK_HZ": str(tick_hz),
            "TESSERA_SNAPSHOT_EVERY": str(snapshot_every),
            "TESSERA_LOG_LEVEL": "info",
            "TESSERA_AUTH_ADDRESS": auth.grpc_address,
            **(extra_zone_env or {}),
        },
        name="zone",
    ).start()
    zone.wait_serving()
    relay = ServiceProcess(
        "tessera.relay",
        {
            **common,
            "TESSERA_UDP_HOST": "127.0.0.1",
            "TESSERA_UDP_PORT": str(udp_port),
            "TESSERA_AUTH_ADDRESS": auth.grpc_address,
            "TESSERA_CONNECT_KEY": connect_key,
            "TESSERA_LOG_LEVEL": "info",
            # Every client shares 127.0.0.1: one source, so no per-source limits.
            "TESSERA_RELAY_HANDSHAKES_PER_SOURCE_S": "1000000",
            "TESSERA_RELAY_PINGS_PER_SOURCE_S": "1000000",
            **relay_login_env(),
            **(extra_relay_env or {}),
        },
        name="relay",
        session=relay_session,
    ).start()
    relay.wait_serving()
    return redis, {"auth": auth, "zone": zone, "relay": relay}, udp_port


async def issue_tokens(auth_address: str, n: int) -> list[bytes]:
    """Connect tokens for players bench-0..n-1, issued by auth on their behalf."""
    async with grpc.aio.insecure_channel(auth_address) as channel:
        stub: Any = auth_pb2_grpc.AuthStub(channel)
        session = await stub.ServiceLogin(
            auth_pb2.ServiceLoginRequest(client_id="bench", client_secret=SECRET)
        )
        metadata = (("authorization", f"Bearer {session.access_token}"),)
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> bytes:
            async with sem:
                token = await stub.IssueConnectToken(
                    auth_pb2.ConnectTokenRequest(player_id=f"bench-{i}"), metadata=metadata
                )
                return bytes(token.SerializeToString())

        return list(await asyncio.gather(*(one(i) for i in range(n))))


# -- client processes ------------------------------------------------------


class BenchClient(asyncio.DatagramProtocol):
    """A minimal protocol client: handshake, inputs at a fixed rate, acks (reliable
    acks ride on the inputs and keep-alives, so it needs no timer)."""

    def __init__(self, token: auth_pb2.ConnectToken) -> None:
        self.token = token
        self.connection = Connection(token.client_to_server_key, token.server_to_client_key)
        self.transport: Any = None
        self.accepted = asyncio.Event()
        self.disconnected = ""
        self.snapshots = 0
        self.received = 0
        self.ack: tuple[int, int] | None = None
        self.sequence = 0
        self.ping_rtts_ms: list[float] = []
        # Every 4th snapshot's age once ticking: its tick's server time -> read here.
        self.snapshot_ages_ms: list[float] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not data or data[0] != DATA:
            return
        try:
            received = self.connection.receive(data, time.monotonic())
        except PacketError:
            return
        self.received += 1
        for payload, _reliable in received.messages:
            self.handle(relay_pb2.ServerMessage.FromString(payload))

    def handle(self, message: relay_pb2.ServerMessage) -> None:
        kind = message.WhichOneof("msg")
        if kind == "snapshot":
            self.snapshots += 1
            self.ack = (message.snapshot.stream, message.snapshot.sequence)
            if self.snapshot_ages_ms is not None and self.snapshots % 4 == 0:
                self.snapshot_ages_ms.append(time.time() * 1e3 - message.snapshot.server_time_ms)
        elif kind == "pong":
            self.ping_rtts_ms.append(time.perf_counter() * 1e3 - message.pong.client_time_ms)
        elif kind == "accepted":
            self.accepted.set()
        elif kind == "disconnected":
            # (A refused attempt comes as a REFUSED datagram, ignored: the handshake is retried.)
            self.disconnected = message.disconnected.reason or "?"

    def send(self, message: relay_pb2.ClientMessage | None) -> None:
        payload = b"" if message is None else message.SerializeToString()
        for packet in self.connection.send(payload, time.monotonic()):
            self.transport.sendto(packet)

    def ping(self) -> None:
        self.sequence += 1
        self.send(
            relay_pb2.ClientMessage(
                ping=relay_pb2.Ping(id=self.sequence, client_time_ms=time.perf_counter() * 1e3)
            )
        )

    def tick(self) -> None:
        self.sequence += 1
        item = relay_pb2.ClientInput(
            sequence=self.sequence, move_x=0.5, move_z=0.5, client_time_ms=time.time() * 1e3
        )
        self.send(relay_pb2.ClientMessage(inputs=relay_pb2.ClientInputs(inputs=[item])))
        if self.ack is not None:
            stream, seq = self.ack
            self.ack = None
            self.send(relay_pb2.ClientMessage(ack=relay_pb2.ClientAck(stream=stream, sequence=seq)))


async def _client_main(
    *,
    tokens: list[bytes],
    address: tuple[str, int],
    rate: float,
    start_at: float,
    stop_at: float,
    probe: bool = False,
) -> dict[str, Any]:
    """Run clients until ``stop_at``. Load clients send inputs and acks; probe
    clients (a lightly loaded process) only ping, to time the path through the
    loaded relay without the load generator's own delays."""
    loop = asyncio.get_running_loop()
    clients: list[BenchClient] = []
    for raw in tokens:
        token = auth_pb2.ConnectToken.FromString(raw)
        _, client = await loop.create_datagram_endpoint(
            functools.partial(BenchClient, token), remote_addr=address
        )
        clients.append(client)

    connecting = asyncio.Semaphore(50)
    ticking = asyncio.Event()

    async def handshake(c: BenchClient) -> None:
        packet = encode_handshake(c.token.token)
        async with connecting:
            for _ in range(60):
                c.transport.sendto(packet)
                try:
                    await asyncio.wait_for(c.accepted.wait(), 0.5)
                    return
                except TimeoutError:
                    continue

    async def keep_alive() -> None:
        """Keep-alives for the connected clients until the measured traffic starts."""
        while not ticking.is_set():
            for c in clients:
                if c.accepted.is_set():
                    c.send(None)
            await asyncio.sleep(0.5)

    keeper = asyncio.create_task(keep_alive())
    # Clients still handshaking at start_at (a loaded machine) join the ticking later
    # instead of holding everyone back.
    handshakes = asyncio.gather(*(handshake(c) for c in clients))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    ticking.set()
    await keeper
    for c in clients:
        c.snapshot_ages_ms = []
    period = 1.0 / rate
    next_at = loop.time()
    offset = 0
    while time.time() < stop_at:
        # Spread the clients over the period instead of sending in one burst.
        for c in clients[offset::4]:
            if not c.accepted.is_set():
                continue
            if probe:
                c.ping()
            else:
                c.tick()
        offset = (offset + 1) % 4
        next_at += period / 4
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    handshakes.cancel()
    await asyncio.gather(handshakes, return_exceptions=True)
    return {
        "connected": sum(c.accepted.is_set() for c in clients),
        "disconnected": sum(bool(c.disconnected) for c in clients),
        "reasons": sorted({c.disconnected for c in clients if c.disconnected}),
        "snapshots": sum(c.snapshots for c in clients),
        "received": sum(c.received for c in clients),
        "ping_rtts_ms": [r for c in clients for r in c.ping_rtts_ms],
        "snapshot_ages_ms": [a for c in clients for a in c.snapshot_ages_ms or ()],
        "probe": probe,
    }


def client_process(job: dict[str, Any], out: Any) -> None:
    """Entry of a client process: run its share of clients, report counts."""
    out.put(asyncio.run(_client_main(**job)))


# -- measurement -------------------------------------------------------------


def udp_rcvbuf_errors() -> int:
    """Datagrams the kernel dropped for full receive buffers (machine-wide)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = (line for line in lines if line[0] == "Udp:")
    return int(values[names.index("RcvbufErrors")])


def renice(pid: int, nice: int) -> None:
    """Set the nice value of every thread of ``pid`` (Linux: nice is per thread)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def schedstat(pid: int) -> dict[str, tuple[float, float, int]]:
    """Per thread of ``pid`` (by thread id): seconds on a CPU, seconds runnable but
    waiting for one (the run queue), and how many times it ran (Linux schedstat)."""
    out: dict[str, tuple[float, float, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run_ns, wait_ns, slices = (task / "schedstat").read_text().split()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended
            continue
        out[task.name] = (int(run_ns) / 1e9, int(wait_ns) / 1e9, int(slices))
    return out


def threads_of(pids: list[int]) -> dict[str, tuple[float, float, int]]:
    """``schedstat`` of every thread of ``pids`` (thread ids are unique machine-wide)."""
    return {tid: stat for pid in pids for tid, stat in schedstat(pid).items()}


def cpu_busy_s() -> float:
    """CPU-seconds all CPUs of the machine spent not idle (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_queue(
    pid: int,
    before: dict[str, tuple[float, float, int]],
    after: dict[str, tuple[float, float, int]],
) -> dict[str, float | int]:
    """How long the threads waited for a CPU while runnable between two
    ``schedstat`` reads: the main thread of ``pid`` (the event loop) and all of them."""
    deltas = {
        tid: tuple(a - b for a, b in zip(after[tid], before.get(tid, (0.0, 0.0, 0)), strict=True))
        for tid in after
    }
    main = deltas.get(str(pid), (0.0, 0.0, 0))
    return {
        "threads": len(after),
        "main_run_s": round(main[0], 3),
        "main_wait_s": round(main[1], 3),
        "main_slices": int(main[2]),
        "main_wait_ms_per_slice": round(main[1] * 1e3 / main[2], 3) if main[2] else 0.0,
        "all_run_s": round(sum(d[0] for d in deltas.values()), 3),
        "all_wait_s": round(sum(d[1] for d in deltas.values()), 3),
    }


def scrape(metrics_port: int) -> list[str]:
    """The relay's /metrics, as lines."""
    text: bytes = urllib.request.urlopen(
        f"http://127.0.0.1:{metrics_port}/metrics", timeout=5
    ).read()
    return text.decode().splitlines()


def histogram_buckets(lines: list[str], name: str, label: str = "") -> dict[float, float]:
    """Cumulative bucket counts of histogram ``name``: the series with ``label``
    (e.g. 'path="up"'), or all of them summed."""
    out: dict[float, float] = {}
    for line in lines:
        if not line.startswith(name + "_bucket") or label not in line:
            continue
        le = line.split('le="')[1].split('"')[0]
        bound = float("inf") if le == "+Inf" else float(le)
        out[bound] = out.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def histogram_sum(lines: list[str], name: str, label: str) -> float:
    """The ``_sum`` of histogram ``name``'s series with ``label``."""
    for line in lines:
        if line.startswith(name + "_sum") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def gc_pauses(before: list[str], after: list[str]) -> dict[str, dict[str, float | None]]:
    """The relay's garbage collections between two scrapes, per generation: how
    many, their total and the upper bound of the longest one's bucket (ms)."""
    out: dict[str, dict[str, float | None]] = {}
    for generation in ("0", "1", "2"):
        label = f'generation="{generation}"'
        b0 = histogram_buckets(before, GC_PAUSE, label)
        b1 = histogram_buckets(after, GC_PAUSE, label)
        counts = {bound: b1[bound] - b0.get(bound, 0.0) for bound in sorted(b1)}
        total = counts.get(float("inf"), 0.0)
        longest: float | None = 0.0
        if total:
            bound = min(b for b, n in counts.items() if n >= total)
            longest = None if bound == float("inf") else bound * 1e3  # None: over 100 ms
        spent = histogram_sum(after, GC_PAUSE, label) - histogram_sum(before, GC_PAUSE, label)
        out[generation] = {
            "collections": int(total),
            "total_ms": round(spent * 1e3, 3),
            "longest_ms_at_most": longest,
        }
    return out


def batch_mean(before: list[str], after: list[str]) -> float | None:
    """Mean snapshots per link batch the relay received between two scrapes."""
    count = histogram_buckets(after, LINK_BATCH).get(float("inf"), 0.0) - histogram_buckets(
        before, LINK_BATCH
    ).get(float("inf"), 0.0)
    total = histogram_sum(after, LINK_BATCH, "") - histogram_sum(before, LINK_BATCH, "")
    return round(total / count, 1) if count else None


def metric_value(metrics_port: int, name: str) -> float:
    """The value of an unlabelled series on the relay's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Quantile (seconds) of the observations between two scrapes, interpolated
    linearly inside the bucket like Prometheus' histogram_quantile."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            width = count - prev_count
            frac = 0.0 if width <= 0 else (rank - prev_count) / width
            return prev_bound + (bound - prev_bound) * frac
        prev_bound, prev_count = bound, count
    return prev_bound


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of sorted ``values``, ms rounded."""
    if not values:
        return None
    rank = min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))
    return round(values[rank], 3)


def both(histograms: dict[str, dict[float, float]]) -> dict[float, float]:
    """The up and down histograms summed bucket by bucket."""
    out: dict[float, float] = {}
    for buckets in histograms.values():
        for bound, count in buckets.items():
            out[bound] = out.get(bound, 0.0) + count
    return out


def counter_by_label(lines: list[str], name: str) -> dict[str, float]:
    """Label value -> sample of counter family ``name`` with one label (e.g.
    ``tessera_relay_packets_total{direction="in"}``), summed over every series
    in ``lines`` (the scrapes of all workers, concatenated)."""
    out: dict[str, float] = {}
    for line in lines:
        if line.startswith(name + "{"):
            value = line.split('"')[1]
            out[value] = out.get(value, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def counter_rates(
    before: list[str], after: list[str], name: str, elapsed: float
) -> dict[str, float]:
    """Per label value, counter family ``name``'s rate between two scrapes."""
    start = counter_by_label(before, name)
    return {
        k: round((n - start.get(k, 0.0)) / elapsed, 1)
        for k, n in counter_by_label(after, name).items()
    }


def relay_processes(relay: ServiceProcess) -> tuple[list[int], list[int]]:
    """The relay's process ids and /metrics ports: the parent's, then its workers'
    (from their serving lines, which the parent passes on)."""
    records = relay.records()
    serving = next(r for r in records if r.get("msg") == "serving")
    ports = [r["metrics_port"] for r in records if r.get("msg") == "relay worker serving"]
    return [relay.pid, *serving.get("worker_pids", [])], [relay.ports["metrics_port"], *ports]


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, LocalPostgres() as postgres:
        redis, procs, udp_port = start_stack(
            Path(tmp),
            postgres.create_database("bench"),
            tick_hz=args.tick_hz,
            snapshot_every=args.snapshot_every,
            extra_relay_env={
                "TESSERA_RELAY_BATCH_MS": str(args.batch_ms),
                "TESSERA_RELAY_WORKERS": str(args.workers),
                **dict(args.relay_env),
            },
            extra_zone_env={
                f"TESSERA_LINK_{name.upper()}": str(value)
                for name, value in (("chunk", args.link_chunk), ("spread", args.link_spread))
                if value is not None
            },
            relay_session=args.relay_session,
        )
        pids, ports = relay_processes(procs["relay"])
        if args.relay_nice:
            for pid in pids:
                renice(pid, args.relay_nice)
        try:
            tokens = asyncio.run(issue_tokens(procs["auth"].grpc_address, args.clients + PROBES))
            probe_tokens, tokens = tokens[:PROBES], tokens[PROBES:]
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            warmup_s = args.warmup_s or 3.0 + args.clients / 400
            start_at = time.time() + warmup_s
            stop_at = start_at + args.duration + 1.0
            workers = [
                ctx.Process(
                    target=client_process,
                    args=(
                        {
                            "tokens": tokens[i :: args.procs],
                            "address": ("127.0.0.1", udp_port),
                            "rate": args.rate,
                            "start_at": start_at,
                            "stop_at": stop_at,
                        },
                        out,
                    ),
                )
                for i in range(args.procs)
            ]
            workers.append(
                ctx.Process(
                    target=client_process,
                    args=(
                        {
                            "tokens": probe_tokens,
                            "address": ("127.0.0.1", udp_port),
                            "rate": PROBE_HZ,
                            "start_at": start_at,
                            "stop_at": stop_at,
                            "probe": True,
                        },
                        out,
                    ),
                )
            )
            for w in workers:
                w.start()
            time.sleep(max(0.0, start_at + 1.0 - time.time()))
            c0, t0 = [cpu_seconds(pid) for pid in pids], time.perf_counter()
            sched = {"relay": procs["relay"].pid, "zone": procs["zone"].pid}
            clients = [w.pid for w in workers if w.pid is not None]
            q0 = {name: schedstat(pid) for name, pid in sched.items()}
            w0, busy0 = threads_of(clients), cpu_busy_s()
            k0 = udp_rcvbuf_errors()
            per_worker0 = [scrape(port) for port in ports]
            zone_cpu0, zone_ports = cpu_seconds(procs["zone"].pid), procs["zone"].ports
            zone0 = scrape(zone_ports["metrics_port"])
            time.sleep(args.duration)
            zone_cpu1 = cpu_seconds(procs["zone"].pid)
            zone1 = scrape(zone_ports["metrics_port"])
            c1, t1 = [cpu_seconds(pid) for pid in pids], time.perf_counter()
            q1 = {name: schedstat(pid) for name, pid in sched.items()}
            w1, busy1 = threads_of(clients), cpu_busy_s()
            k1 = udp_rcvbuf_errors()
            per_worker1 = [scrape(port) for port in ports]
            largest = max(metric_value(p, "tessera_relay_datagram_bytes_max") for p in ports)
            results = [out.get(timeout=60) for _ in workers]
            for w in workers:
                w.join(timeout=10)
        finally:
            if os.environ.get("BENCH_LOGS"):
                for name, proc in procs.items():
                    for line in list(proc.lines)[-15:]:
                        print(f"[{name}] {line[:400]}", file=sys.stderr)
            for p in reversed(list(procs.values())):
                p.terminate()
            redis.stop()
    m0, m1 = (
        [line for lines in scrapes for line in lines] for scrapes in (per_worker0, per_worker1)
    )
    h0, h1 = (
        {p: histogram_buckets(m, ADDED_LATENCY, f'path="{p}"') for p in ("up", "down")}
        for m in (m0, m1)
    )
    p0, p1 = (counter_by_label(m, "tessera_relay_packets_total") for m in (m0, m1))
    b0, b1 = (counter_by_label(m, "tessera_relay_bytes_total") for m in (m0, m1))
    sessions = [
        counter_by_label(lines, "tessera_relay_sessions").get("udp", 0.0) for lines in per_worker1
    ]
    pings = sorted(r for result in results for r in result["ping_rtts_ms"])
    ages = sorted(a for result in results for a in result["snapshot_ages_ms"])
    results = [r for r in results if not r["probe"]]
    packets_in, packets_out = (p1[d] - p0.get(d, 0.0) for d in ("in", "out"))
    bytes_in, bytes_out = (b1[d] - b0.get(d, 0.0) for d in ("in", "out"))
    packets = packets_in + packets_out
    elapsed = t1 - t0
    cpu = sum(c1) - sum(c0)
    return {
        "clients": args.clients,
        "client_processes": args.procs,
        "input_rate_hz": args.rate,
        "zone_tick_hz": args.tick_hz,
        "zone_snapshot_every": args.snapshot_every,
        "relay_batch_ms": args.batch_ms,
        "zone_link_chunk": args.link_chunk,
        "zone_link_spread": args.link_spread,
        "relay_nice": args.relay_nice,
        "relay_session": args.relay_session,
        "relay_env": [f"{name}={value}" for name, value in args.relay_env],
        "relay_workers": args.workers,
        "udp_sessions_per_worker": [int(n) for n in sessions],
        "duration_s": round(elapsed, 2),
        "connected": sum(r["connected"] for r in results),
        "disconnected": sum(r["disconnected"] for r in results),
        "disconnect_reasons": sorted({x for r in results for x in r["reasons"]}),
        "packets_in_per_s": round(packets_in / elapsed),
        "packets_out_per_s": round(packets_out / elapsed),
        "packets_per_s": round(packets / elapsed),
        # Per player (load and probe clients), counted by the relay (UDP payloads).
        "bytes_out_per_player_s": round(bytes_out / elapsed / (args.clients + PROBES)),
        "bytes_in_per_player_s": round(bytes_in / elapsed / (args.clients + PROBES)),
        "largest_datagram_bytes": int(largest),
        # Summed over the workers (2.0: two cores busy), and each worker's.
        "relay_cpu_utilization": round(cpu / elapsed, 3),
        "worker_cpu_utilization": [
            round((b - a) / elapsed, 3) for a, b in zip(c0, c1, strict=True)
        ],
        "packets_per_relay_cpu_s": round(packets / cpu) if cpu > 0 else None,
        # The zone process (its tick, link reads and the rest) and what it read
        # from the relay's link, per kind (docs/RELAY.md, "Input batches").
        "zone_cpu_utilization": round((zone_cpu1 - zone_cpu0) / elapsed, 3),
        "zone_link_messages_per_s": counter_rates(zone0, zone1, ZONE_LINK_MESSAGES, elapsed),
        # Held input batches the zone read before (on_time) or after (late) their tick.
        "zone_held_input_batches_per_s": counter_rates(zone0, zone1, ZONE_HELD_INPUTS, elapsed),
        "cpu_ms_per_1k_packets": round(cpu * 1e6 / packets, 3) if packets else None,
        # A message's added latency is its path's; both paths together:
        "added_latency_ms_p50": round(quantile(both(h0), both(h1), 0.50) * 1e3, 3),
        "added_latency_ms_p99": round(quantile(both(h0), both(h1), 0.99) * 1e3, 3),
        "up_latency_ms_p50": round(quantile(h0["up"], h1["up"], 0.50) * 1e3, 3),
        "up_latency_ms_p99": round(quantile(h0["up"], h1["up"], 0.99) * 1e3, 3),
        "down_latency_ms_p50": round(quantile(h0["down"], h1["down"], 0.50) * 1e3, 3),
        "down_latency_ms_p99": round(quantile(h0["down"], h1["down"], 0.99) * 1e3, 3),
        # Probe client -> loaded relay -> probe client, in-session Ping/Pong: socket
        # buffers and the relay's loop included, no zone involved.
        "ping_rtt_ms_p50": percentile(pings, 50),
        "ping_rtt_ms_p99": percentile(pings, 99),
        # Zone tick end (the snapshot's server time) -> read by a load client: the
        # zone's send, the link, the relay and both sockets, plus the client
        # processes' own delays (one clock: everything runs on this machine).
        "snapshot_age_ms_p50": percentile(ages, 50),
        "snapshot_age_ms_p99": percentile(ages, 99),
        # Snapshots per SnapshotBatch the relay received: the zone's chunks while it
        # paces the link, whole ticks while it is behind.
        "link_batch_snapshots_mean": batch_mean(m0, m1),
        # Collections of the relay process in the window (the loop stops for each).
        "relay_gc_pauses": gc_pauses(m0, m1),
        # Time on a CPU and waiting for one (runnable, not running) in the window,
        # per service process: a packet that arrives while the relay waits, waits too.
        "run_queue": {
            **{name: run_queue(pid, q0[name], q1[name]) for name, pid in sched.items()},
            "clients": run_queue(0, w0, w1),
        },
        # Of the machine's CPU-seconds in the window (cores x seconds), those not idle.
        "machine_busy_cpu_s": round(busy1 - busy0, 2),
        "machine_cpu_s": round(elapsed * (os.cpu_count() or 1), 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "drops": {
            reason: int(n)
            for reason, n in counter_by_label(m1, "tessera_relay_drops_total").items()
        },
        # Full socket buffers anywhere on the machine (relay or clients) during the window.
        "kernel_udp_rcvbuf_drops": k1 - k0,
    }


def env_item(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of --relay-env."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="write results here")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--rate", type=float, default=10.0, help="input ticks per second")
    parser.add_argument("--tick-hz", type=int, default=30, help="zone tick rate")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument(
        "--snapshot-every", type=int, default=3, help="zone ticks per snapshot (staggered)"
    )
    parser.add_argument("--batch-ms", type=float, default=0.5, help="relay input batch window")
    parser.add_argument(
        "--link-chunk", type=int, help="zone: snapshots per link message (default: the zone's)"
    )
    parser.add_argument(
        "--link-spread",
        type=float,
        help="zone: fraction of the tick a link's snapshots are spread over (0: one burst)",
    )
    parser.add_argument(
        "--relay-nice",
        type=int,
        default=0,
        help="nice value of the relay's threads, against the processes of its session (root)",
    )
    parser.add_argument(
        "--relay-session",
        action="store_true",
        help="start the relay in a session of its own (Linux autogroup: its own CPU share)",
    )
    parser.add_argument(
        "--relay-env",
        action="append",
        default=[],
        type=env_item,
        metavar="NAME=VALUE",
        help="an environment variable for the relay (repeatable), e.g. TESSERA_RELAY_UVLOOP=0",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="relay worker processes (TESSERA_RELAY_WORKERS)"
    )
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=0.0,
        help="start-up and handshakes (0: 3 s + 1 s per 400 clients)",
    )
    args = parser.parse_args()
    result = run(args)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    if result["connected"] < args.clients:
        print(f"only {result['connected']} of {args.clients} clients connected", file=sys.stderr)


if __name__ == "__main__":
    main()
