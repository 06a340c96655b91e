"""Matchmaking throughput: a steady arrival of 1v1 and 5v5 (party) tickets against one
and two matchmaker processes sharing one Redis.

Tickets are written with the store's pipelined ``create_many`` (what the
CreateTicket front end does per request, batched per 10 ms), so the figures are
those of the matching loop and its claims, not of gRPC. Assignments are observed
on the ticket event channel that WatchAssignment streams are fed from.

    python bench/matchmaking.py --json PATH [--rate 5000] [--duration 8] [--replicas 1,2]
                                [--token-rate 5000] [--workers 64]
                                [--frontend-workers 1,2] [--client-processes 2]

The token scenario also issues every assigned player a connect token through a real
auth process (IssueConnectTokens batches: one call per tick and mode, split at 512
players), at ``--token-rate``. The gRPC
scenarios measure gRPC ``CreateTicket`` itself: ``--workers`` closed-loop callers with
real access tokens, spread over ``--client-processes`` processes, against one
matchmaker with each ``--frontend-workers`` count of front-end processes (the first
also runs the matching loop); besides calls/s, latency and time to match they report
the CPU per call of every server process, of Redis and of the clients. The stream
scenarios do the same for ``CreateTickets``, a game back end's bidirectional stream:
``--streams`` streams (each on its own connection, at most ``--stream-window``
tickets unanswered) spread over the client processes, with a service's access token.

    python bench/matchmaking.py --json PATH [--streams 4] [--stream-window 64]
                                [--stream-frontend-workers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import random
import statistics
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tessera.authclient.bearer import bearer_metadata
from tessera.common import store as common_store
from tessera.common.database import open_database
from tessera.common.process import ServiceProcess
from tessera.common.store import Client, WorldKeys
from tessera.harness.postgres import LocalPostgres
from tessera.harness.redis import LocalRedis
from tessera.matchmaking.records import RatingRecords
from tessera.matchmaking.store import Store
from tessera.v1 import auth_pb2, auth_pb2_grpc, common_pb2, zone_pb2
from tessera.v1 import matchmaking_pb2 as pb
from tessera.v1 import matchmaking_pb2_grpc as pb_grpc

MODES = [
    {"name": "duel", "zone_capacity": 10**9},
    {"name": "5v5", "team_size": 5, "max_party": 5, "zone_capacity": 10**9},
]
PARTY_SIZES = [1, 1, 1, 1, 1, 1, 2, 2, 3, 5]
BATCH_S = 0.01
# gRPC scenario: players per concurrent caller, seconds before a player queues again
# (its duel ticket is matched within milliseconds), connections per client process.
PLAYERS_PER_CALLER = 24
PLAYER_REUSE_S = 0.5
CHANNELS_PER_CLIENT = 8
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def scrape(process: ServiceProcess, port: int | None = None) -> dict[str, float]:
    """The process's ``tessera_matchmaking_*`` metrics (from ``port`` if given)."""
    url = f"http://127.0.0.1:{port or process.ports['metrics_port']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tessera_matchmaking_") and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = out.get(name, 0.0) + float(value)
    return out


SECRET = "bench-secret-0123456789"


def start(process: ServiceProcess) -> ServiceProcess:
    """Start and wait for ``serving``."""
    process.start().wait_serving()
    return process


def auth_service(redis_url: str) -> ServiceProcess:
    return ServiceProcess(
        "tessera.auth",
        {
            "TESSERA_REDIS_URL": redis_url,
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_AUTH_GENERATE_KEYS": "true",
            "TESSERA_CONNECT_KEY_GENERATE": "true",
            "TESSERA_AUTH_SERVICE_CLIENTS": f"matchmaking={SECRET},backend={SECRET}",
        },
        name="auth",
    )


def matcher(redis_url: str, index: int, auth: ServiceProcess | None) -> ServiceProcess:
    tokens = (
        {
            "TESSERA_MM_CONNECT_TOKENS": "true",
            "TESSERA_AUTH_ADDRESS": auth.grpc_address,
            "TESSERA_MM_CLIENT_SECRET": SECRET,
        }
        if auth is not None
        else {"TESSERA_MM_CONNECT_TOKENS": "false"}
    )
    return ServiceProcess(
        "tessera.matchmaking",
        {
            **tokens,
            "TESSERA_REDIS_URL": redis_url,
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_MM_FRONTEND": "false",
            "TESSERA_MM_MODES": json.dumps(MODES),
            "TESSERA_MM_TICK_INTERVAL_S": "0.01",
        },
        name=f"matchmaker-{index}",
    )


class Run:
    """One scenario: generator, listener and the bookkeeping of what was assigned."""

    def __init__(
        self, redis: Client, records: RatingRecords, rate: float, duration_s: float, seed: int
    ) -> None:
        self.redis = redis
        self.store = Store(redis, records, ticket_ttl_s=60.0)
        self.rate = rate
        self.duration_s = duration_s
        self.rng = random.Random(seed)
        self.created: dict[str, tuple[str, float]] = {}
        self.assigned_at: dict[str, float] = {}
        self.assigned_count: Counter[str] = Counter()
        self.players = 0

    def ticket(self, mode: str, now_ms: float) -> tuple[pb.Ticket, dict[str, str]]:
        size = 1 if mode == "duel" else self.rng.choice(PARTY_SIZES)
        ratings = {}
        players = []
        base = self.rng.gauss(25.0, 6.0)
        for _ in range(size):
            self.players += 1
            player = f"p{self.players}"
            players.append(pb.TicketPlayer(player_id=player))
            ratings[player] = f"{base + self.rng.gauss(0, 1.5)!r}:3.0"
        ticket = pb.Ticket(
            id=uuid.uuid4().hex,
            mode=mode,
            players=players,
            regions=[pb.RegionLatency(region="eu", latency_ms=20.0)],
            created_at_ms=now_ms,
        )
        return ticket, ratings

    async def generate(self) -> float:
        started = time.perf_counter()
        sent = 0
        while (elapsed := time.perf_counter() - started) < self.duration_s:
            due = int(self.rate * elapsed) - sent
            if due > 0:
                now_ms = time.time() * 1000.0
                tickets = []
                ratings: dict[str, dict[str, str]] = {"duel": {}, "5v5": {}}
                for i in range(due):
                    mode = "duel" if (sent + i) % 2 == 0 else "5v5"
                    ticket, rs = self.ticket(mode, now_ms)
                    tickets.append(ticket)
                    ratings[mode].update(rs)
                    self.created[ticket.id] = (mode, now_ms)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for mode, mapping in ratings.items():
                        if mapping:
                            pipe.hset(Store.ratings_key(mode), mapping=mapping)  # type: ignore[arg-type]
                    await pipe.execute()
                await self.store.create_many(tickets, now_ms)
                sent += due
            await asyncio.sleep(BATCH_S)
        return time.perf_counter() - started

    async def listen(self, ready: asyncio.Event) -> None:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(Store.events_channel)
        ready.set()
        try:
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                now_ms = time.time() * 1000.0
                state, *ids = message["data"].decode().split(" ")
                if int(state) != pb.TICKET_STATE_ASSIGNED:
                    continue
                for ticket_id in ids:
                    self.assigned_count[ticket_id] += 1
                    self.assigned_at.setdefault(ticket_id, now_ms)
        finally:
            await pubsub.aclose()

    async def broken_matches(self) -> int:
        """Matches whose stored tickets do not add up to one whole match."""
        ids = list(self.assigned_at)
        players: Counter[str] = Counter()
        modes: dict[str, str] = {}
        for i in range(0, len(ids), 2000):
            for ticket in await self.store.get_many(ids[i : i + 2000], time.time() * 1000):
                if ticket is None or ticket.state != pb.TICKET_STATE_ASSIGNED:
                    continue
                players[ticket.assignment.match_id] += len(ticket.players)
                modes[ticket.assignment.match_id] = ticket.mode
        size = {"duel": 2, "5v5": 10}
        return sum(1 for m, n in players.items() if n != size[modes[m]])


async def scenario(
    redis_server: LocalRedis,
    records: RatingRecords,
    replicas: int,
    rate: float,
    duration_s: float,
    *,
    tokens: bool,
) -> dict[str, Any]:
    redis = common_store.connect(redis_server.url, max_connections=32)
    await redis.flushall()
    keys = WorldKeys("main")
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="main", zone="z1"), state=zone_pb2.ZONE_STATE_ACTIVE
    )
    await redis.sadd(keys.zones, "z1")
    await redis.set(keys.zone_status("z1"), status.SerializeToString())
    auth = await asyncio.to_thread(start, auth_service(redis_server.url)) if tokens else None
    processes = [matcher(redis_server.url, i, auth) for i in range(replicas)]
    for p in processes:
        await asyncio.to_thread(start, p)
    run = Run(redis, records, rate, duration_s, seed=replicas)
    ready = asyncio.Event()
    listener = asyncio.create_task(run.listen(ready))
    await ready.wait()
    busy = [p.pid for p in processes] + ([auth.pid] if auth is not None else [])
    cpu_before = [cpu_seconds(pid) for pid in busy]
    elapsed = await run.generate()
    cpu = [
        round((cpu_seconds(pid) - c) / elapsed, 2) for pid, c in zip(busy, cpu_before, strict=True)
    ]
    # Let the loop finish what arrived in the last moments.
    await asyncio.sleep(1.0)
    backlog = {m["name"]: await redis.zcard(Store.pool_key(str(m["name"]))) for m in MODES}
    metrics = [scrape(p) for p in processes]
    for p in processes:
        p.terminate()
    if auth is not None:
        auth.terminate()
    listener.cancel()
    broken = await run.broken_matches()
    await redis.aclose()

    def total(name: str, only: list[dict[str, float]] | None = None) -> float:
        """A metric summed over replicas and over label sets not named in ``name``."""
        return sum(
            value
            for m in (metrics if only is None else only)
            for key, value in m.items()
            if key == name or (key.startswith(name + "{") and "{" not in name)
        )

    out: dict[str, Any] = {
        "replicas": replicas,
        "connect_tokens": tokens,
        "offered_tickets_per_s": round(len(run.created) / elapsed, 1),
        "tickets_per_s": round(len(run.assigned_at) / elapsed, 1),
        "tickets_created": len(run.created),
        "tickets_assigned": len(run.assigned_at),
        "backlog_after_1s": backlog,
        "double_assignments": sum(1 for n in run.assigned_count.values() if n > 1) + broken,
        "claims_conflicted": int(total("tessera_matchmaking_claims_conflicted_total")),
        "matches_per_replica": [
            int(total("tessera_matchmaking_matches_total", [m])) for m in metrics
        ],
        # Cores used while tickets arrived: each matchmaker, then auth (token scenario).
        "cpu_cores": cpu,
        "connect_token_failures": int(total("tessera_matchmaking_connect_token_failures_total")),
    }
    gaps = []
    for mode in ("duel", "5v5"):
        waits = [
            run.assigned_at[t] - created
            for t, (m, created) in run.created.items()
            if m == mode and t in run.assigned_at
        ]
        label = "1v1" if mode == "duel" else "5v5"
        out[f"time_to_match_ms_p50_{label}"] = round(percentile(waits, 0.5), 1)
        out[f"time_to_match_ms_p99_{label}"] = round(percentile(waits, 0.99), 1)
        gap_sum = total(f'tessera_matchmaking_rating_gap_sum{{mode="{mode}"}}')
        gap_count = total(f'tessera_matchmaking_rating_gap_count{{mode="{mode}"}}')
        mean_gap = gap_sum / gap_count if gap_count else float("nan")
        out[f"mean_rating_gap_{label}"] = round(mean_gap, 3)
        gaps.append(mean_gap)
    out["time_to_match_ms_p50"] = out["time_to_match_ms_p50_1v1"]
    out["time_to_match_ms_p99"] = out["time_to_match_ms_p99_1v1"]
    out["mean_rating_gap"] = round(statistics.fmean(gaps), 3)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CallerPlan:
    """What one client process of the gRPC scenario does."""

    address: str
    players: list[tuple[str, str]]  # (account id, access token)
    callers: int
    channels: int
    duration_s: float


def caller_process(plan: CallerPlan, out: Any) -> None:
    """One client process: ``plan.callers`` closed-loop CreateTicket callers over
    ``plan.channels`` connections (each its own, so SO_REUSEPORT can spread them over
    front ends); puts its report on ``out``."""

    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        created: list[tuple[str, float]] = []
        failures: Counter[str] = Counter()
        queue = collections.deque((0.0, player) for player in plan.players)
        options = [("grpc.use_local_subchannel_pool", 1)]
        opened = [
            grpc.aio.insecure_channel(plan.address, options=options) for _ in range(plan.channels)
        ]
        stubs = [pb_grpc.MatchmakerStub(channel) for channel in opened]
        started = time.monotonic()

        async def caller(index: int) -> None:
            stub = stubs[index % len(stubs)]
            while time.monotonic() - started < plan.duration_s:
                ready, (player, token) = queue.popleft()
                await asyncio.sleep(max(0.0, ready - time.monotonic()))
                request = pb.CreateTicketRequest(
                    mode="duel",
                    players=[pb.TicketPlayer(player_id=player)],
                    regions=[pb.RegionLatency(region="eu", latency_ms=20.0)],
                )
                t0 = time.perf_counter()
                try:
                    ticket = await stub.CreateTicket(
                        request, metadata=bearer_metadata(token), timeout=10
                    )
                    latencies.append((time.perf_counter() - t0) * 1000.0)
                    created.append((ticket.id, ticket.created_at_ms))
                except grpc.aio.AioRpcError as err:
                    failures[err.code().name] += 1
                # The ticket is matched within milliseconds; queue the player again later.
                queue.append((time.monotonic() + PLAYER_REUSE_S, (player, token)))

        await asyncio.gather(*(caller(i) for i in range(plan.callers)))
        elapsed = time.monotonic() - started
        for channel in opened:
            await channel.close(None)
        times = os.times()
        return {
            "calls": len(latencies),
            "elapsed": elapsed,
            "latencies": latencies,
            "created": created,
            "failures": dict(failures),
            "cpu_s": times.user + times.system,
        }

    out.put(asyncio.run(run()))


@dataclass(frozen=True)
class StreamPlan:
    """What one client process of the stream scenario does."""

    address: str
    token: str  # a service's access token
    name: str  # prefix of this process's player ids
    streams: int
    window: int
    duration_s: float


def stream_process(plan: StreamPlan, out: Any) -> None:
    """One client process: ``plan.streams`` CreateTickets streams, each on its own
    connection, each keeping up to ``plan.window`` duel tickets unanswered; puts its
    report on ``out``."""

    async def one(index: int, created: list[tuple[str, float]], failures: Counter[str]) -> int:
        room = asyncio.Semaphore(plan.window)
        started = time.monotonic()

        async def requests() -> Any:
            n = 0
            while time.monotonic() - started < plan.duration_s:
                await room.acquire()
                n += 1
                yield pb.CreateTicketRequest(
                    mode="duel",
                    players=[pb.TicketPlayer(player_id=f"{plan.name}-{index}-{n}")],
                    regions=[pb.RegionLatency(region="eu", latency_ms=20.0)],
                )

        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(plan.address, options=options) as channel:
            stub = pb_grpc.MatchmakerStub(channel)
            results = 0
            async for result in stub.CreateTickets(
                requests(), metadata=bearer_metadata(plan.token)
            ):
                room.release()
                results += 1
                if result.code == 0:
                    created.append((result.ticket.id, result.ticket.created_at_ms))
                else:
                    failures[CODE_NAMES.get(result.code, str(result.code))] += 1
        return results

    async def run() -> dict[str, Any]:
        created: list[tuple[str, float]] = []
        failures: Counter[str] = Counter()
        started = time.monotonic()
        counts = await asyncio.gather(*(one(i, created, failures) for i in range(plan.streams)))
        elapsed = time.monotonic() - started
        times = os.times()
        return {
            "calls": sum(counts),
            "elapsed": elapsed,
            "latencies": [],
            "created": created,
            "failures": dict(failures),
            "cpu_s": times.user + times.system,
        }

    out.put(asyncio.run(run()))


async def frontend(
    redis_server: LocalRedis,
    records: RatingRecords,
    duration_s: float,
    callers: int,
    front_workers: int,
    *,
    client_processes: int,
    window: int = 0,
) -> dict[str, Any]:
    """Closed-loop CreateTicket calls over gRPC (real access tokens) from
    ``client_processes`` processes against one matchmaker with ``front_workers``
    front-end processes (the first also runs the matching loop). With a ``window``,
    ``callers`` CreateTickets streams of that window instead, as a service."""
    redis = common_store.connect(redis_server.url, max_connections=32)
    await redis.flushall()
    keys = WorldKeys("main")
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="main", zone="z1"), state=zone_pb2.ZONE_STATE_ACTIVE
    )
    await redis.sadd(keys.zones, "z1")
    await redis.set(keys.zone_status("z1"), status.SerializeToString())
    auth = auth_service(redis_server.url)
    auth.env["TESSERA_AUTH_REGISTRATIONS_PER_ADDRESS"] = "1000000"
    await asyncio.to_thread(start, auth)
    mm = matcher(redis_server.url, 0, None)
    mm.env.update(
        {
            "TESSERA_MM_FRONTEND": "true",
            "TESSERA_AUTH_ADDRESS": auth.grpc_address,
            "TESSERA_MM_FRONTEND_WORKERS": str(front_workers),
        }
    )
    await asyncio.to_thread(start, mm)
    serving = next(r for r in mm.records() if r.get("msg") == "serving")
    server_pids = [mm.pid, *serving.get("frontend_worker_pids", [])]
    metrics_ports = [mm.ports["metrics_port"]] + [
        r["metrics_port"] for r in mm.records() if r.get("msg") == "frontend worker serving"
    ]
    players: list[tuple[str, str]] = []
    async with grpc.aio.insecure_channel(auth.grpc_address) as auth_channel:
        auth_stub = auth_pb2_grpc.AuthStub(auth_channel)
        backend = await auth_stub.ServiceLogin(
            auth_pb2.ServiceLoginRequest(client_id="backend", client_secret=SECRET)
        )
        wanted = 0 if window else callers * PLAYERS_PER_CALLER
        for batch in range(0, wanted, 64):
            sessions = await asyncio.gather(
                *(
                    auth_stub.GuestLogin(auth_pb2.GuestLoginRequest(device_id=f"bench-{i:010d}"))
                    for i in range(batch, min(batch + 64, wanted))
                )
            )
            players += [(s.account_id, s.access_token) for s in sessions]
    run = Run(redis, records, 0.0, duration_s, seed=0)
    ready = asyncio.Event()
    listener = asyncio.create_task(run.listen(ready))
    await ready.wait()
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    plans: list[Any] = [
        StreamPlan(
            mm.grpc_address,
            backend.access_token,
            f"c{i}",
            callers // client_processes,
            window,
            duration_s,
        )
        if window
        else CallerPlan(
            mm.grpc_address,
            players[i::client_processes],
            callers // client_processes,
            CHANNELS_PER_CLIENT,
            duration_s,
        )
        for i in range(client_processes)
    ]
    target = stream_process if window else caller_process
    clients = [context.Process(target=target, args=(plan, out)) for plan in plans]
    server_cpu = [cpu_seconds(pid) for pid in server_pids]
    assert redis_server.proc is not None
    redis_cpu = cpu_seconds(redis_server.proc.pid)
    for client in clients:
        client.start()
    reports = [await asyncio.to_thread(out.get) for _ in clients]
    server_cpu = [
        cpu_seconds(pid) - before for pid, before in zip(server_pids, server_cpu, strict=True)
    ]
    assert redis_server.proc is not None
    redis_cpu = cpu_seconds(redis_server.proc.pid) - redis_cpu
    for client in clients:
        client.join()
    await asyncio.sleep(1.0)  # the last tickets' assignments
    metrics = scrape(mm)
    per_process = [scrape(mm, port) for port in metrics_ports]
    served = [
        sum(
            v
            for k, v in m.items()
            if k.startswith("tessera_matchmaking_tickets_total{") and 'state="created"' in k
        )
        for m in per_process
    ]
    mm.terminate()
    auth.terminate()
    listener.cancel()
    await redis.aclose()
    elapsed = max(r["elapsed"] for r in reports)
    calls = sum(r["calls"] for r in reports)
    latencies = [x for r in reports for x in r["latencies"]]
    waits = [
        run.assigned_at[ticket_id] - created_ms
        for r in reports
        for ticket_id, created_ms in r["created"]
        if ticket_id in run.assigned_at
    ]
    failures: Counter[str] = Counter()
    for r in reports:
        failures.update(r["failures"])
    client_cpu = sum(r["cpu_s"] for r in reports)
    assigned = sum(
        v
        for k, v in metrics.items()
        if k.startswith("tessera_matchmaking_tickets_total{") and 'state="assigned"' in k
    )
    per_call = 1e6 / max(calls, 1)
    if window:
        batches = sum(
            m.get("tessera_matchmaking_create_batch_tickets_count", 0.0) for m in per_process
        )
        batched = sum(
            m.get("tessera_matchmaking_create_batch_tickets_sum", 0.0) for m in per_process
        )
        kind: dict[str, Any] = {
            "scenario": "grpc CreateTickets stream",
            "streams": callers,
            "stream_window": window,
            "grpc_stream_tickets_per_s": round(calls / elapsed, 1),
            "grpc_stream_time_to_match_ms_p50": round(percentile(waits, 0.5), 1),
            "grpc_stream_time_to_match_ms_p99": round(percentile(waits, 0.99), 1),
            "mean_batch_tickets": round(batched / max(batches, 1), 1),
        }
    else:
        kind = {
            "scenario": "grpc CreateTicket",
            "workers": callers,
            "grpc_tickets_per_s": round(calls / elapsed, 1),
            "create_ticket_per_s": round(calls / elapsed, 1),
            "grpc_call_ms_p50": round(percentile(latencies, 0.5), 2),
            "grpc_call_ms_p99": round(percentile(latencies, 0.99), 2),
            "create_ticket_ms_p50": round(percentile(latencies, 0.5), 2),
            "create_ticket_ms_p99": round(percentile(latencies, 0.99), 2),
        }
    return {
        **kind,
        "frontend_workers": front_workers,
        "client_processes": client_processes,
        "time_to_match_ms_p50": round(percentile(waits, 0.5), 1),
        "time_to_match_ms_p99": round(percentile(waits, 0.99), 1),
        "tickets_matched": len(waits),
        "failures": dict(failures),
        "assigned_per_s": round(assigned / elapsed, 1),
        "server_cpu_us_per_call": round(sum(server_cpu) * per_call),
        "server_cpu_cores": [round(c / elapsed, 2) for c in server_cpu],
        # Per process, the first serving the API and running the matching loop.
        "calls_per_process": [int(n) for n in served],
        "cpu_us_per_call_per_process": [
            round(c * 1e6 / n) if n else None for c, n in zip(server_cpu, served, strict=True)
        ],
        "redis_cpu_us_per_call": round(redis_cpu * per_call),
        "client_cpu_us_per_call": round(client_cpu * per_call),
        "client_cpu_cores": round(client_cpu / elapsed, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("replicas", "replicas"),
        ("connect tokens from auth", "connect_tokens"),
        ("offered tickets/s", "offered_tickets_per_s"),
        ("matched tickets/s", "tickets_per_s"),
        ("backlog after 1 s", "backlog_after_1s"),
        ("time to match p50 1v1 (ms)", "time_to_match_ms_p50_1v1"),
        ("time to match p99 1v1 (ms)", "time_to_match_ms_p99_1v1"),
        ("time to match p50 5v5 (ms)", "time_to_match_ms_p50_5v5"),
        ("time to match p99 5v5 (ms)", "time_to_match_ms_p99_5v5"),
        ("mean rating gap 1v1 (mu)", "mean_rating_gap_1v1"),
        ("mean rating gap 5v5 (mu)", "mean_rating_gap_5v5"),
        ("claims conflicted", "claims_conflicted"),
        ("matches per replica", "matches_per_replica"),
        ("double assignments", "double_assignments"),
        ("cores: matchmakers, auth", "cpu_cores"),
        ("connect token failures", "connect_token_failures"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = []
    for label, key in rows:
        cells = "  ".join(f"{r[key]!s:>22}" for r in results)
        lines.append(f"{label:<{width}}  {cells}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with LocalRedis() as redis_server, LocalPostgres() as postgres:
        # Every service process started below inherits this environment.
        os.environ["TESSERA_DATABASE_URL"] = postgres.create_database("bench")
        pool = await open_database(os.environ["TESSERA_DATABASE_URL"])
        records = RatingRecords(pool)
        results = [
            await scenario(redis_server, records, int(n), args.rate, args.duration, tokens=False)
            for n in args.replicas.split(",")
        ]
        if args.token_rate > 0:
            results.append(
                await scenario(
                    redis_server, records, 1, args.token_rate, args.duration, tokens=True
                )
            )
        fronts = [
            await frontend(
                redis_server,
                records,
                args.duration,
                args.workers,
                int(n),
                client_processes=args.client_processes,
            )
            for n in (args.frontend_workers.split(",") if args.workers > 0 else [])
        ]
        streams = [
            await frontend(
                redis_server,
                records,
                args.duration,
                args.streams,
                int(n),
                client_processes=args.client_processes,
                window=args.stream_window,
            )
            for n in (args.stream_frontend_workers.split(",") if args.streams > 0 else [])
        ]
        await pool.close()
    return {
        "benchmark": "matchmaking",
        "rate": args.rate,
        "duration_s": args.duration,
        "targets": {
            "tickets_per_s": 5000,
            "time_to_match_ms_p50_1v1": 150,
            "double_assignments": 0,
        },
        "scenarios": results,
        "frontend": fronts[0] if fronts else None,
        "frontends": fronts,
        "stream": streams[0] if streams else None,
        "streams": streams,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="write results here")
    parser.add_argument("--rate", type=float, default=5000.0, help="offered tickets per second")
    parser.add_argument(
        "--duration", type=float, default=8.0, help="seconds of arrivals per scenario"
    )
    parser.add_argument("--replicas", default="1,2", help="matchmaker process counts to run")
    parser.add_argument(
        "--token-rate",
        type=float,
        default=5000.0,
        help="offered tickets/s of a last scenario that issues connect tokens via auth (0 = skip)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=64,
        help="concurrent gRPC CreateTicket callers of the front-end scenario (0 = skip)",
    )
    parser.add_argument(
        "--frontend-workers",
        default="1,2",
        help="front-end process counts (TESSERA_MM_FRONTEND_WORKERS) of the gRPC scenario",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=2,
        help="processes the gRPC scenario's callers are spread over",
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=4,
        help="CreateTickets streams of the stream scenario, over the client processes (0 = skip)",
    )
    parser.add_argument(
        "--stream-window",
        type=int,
        default=64,
        help="tickets each stream keeps unanswered at most",
    )
    parser.add_argument(
        "--stream-frontend-workers",
        default="1,2",
        help="front-end process counts (TESSERA_MM_FRONTEND_WORKERS) of the stream scenario",
    )
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    print(table(report["scenarios"]))
    for front in report["frontends"]:
        print(
            f"\ngRPC CreateTicket, {front['frontend_workers']} front-end process(es), "
            f"{front['workers']} callers in {front['client_processes']} client processes: "
            f"{front['grpc_tickets_per_s']}/s, call p50 {front['grpc_call_ms_p50']} ms, "
            f"p99 {front['grpc_call_ms_p99']} ms, time to match p50 "
            f"{front['time_to_match_ms_p50']} ms, p99 {front['time_to_match_ms_p99']} ms, "
            f"failures {front['failures']}\n  CPU per call: server "
            f"{front['server_cpu_us_per_call']} us (cores {front['server_cpu_cores']}, per "
            f"process {front['cpu_us_per_call_per_process']} us for "
            f"{front['calls_per_process']} calls), "
            f"Redis {front['redis_cpu_us_per_call']} us, clients "
            f"{front['client_cpu_us_per_call']} us ({front['client_cpu_cores']} cores); "
            f"load average {front['load_average_1m']}"
        )
    for front in report["streams"]:
        print(
            f"\ngRPC CreateTickets, {front['frontend_workers']} front-end process(es), "
            f"{front['streams']} streams (window {front['stream_window']}) in "
            f"{front['client_processes']} client processes: "
            f"{front['grpc_stream_tickets_per_s']}/s, time to match p50 "
            f"{front['grpc_stream_time_to_match_ms_p50']} ms, p99 "
            f"{front['grpc_stream_time_to_match_ms_p99']} ms, matched "
            f"{front['tickets_matched']}, failures {front['failures']}, mean batch "
            f"{front['mean_batch_tickets']}\n  CPU per ticket: server "
            f"{front['server_cpu_us_per_call']} us (cores {front['server_cpu_cores']}, per "
            f"process {front['cpu_us_per_call_per_process']} us for "
            f"{front['calls_per_process']} tickets), "
            f"Redis {front['redis_cpu_us_per_call']} us, clients "
            f"{front['client_cpu_us_per_call']} us ({front['client_cpu_cores']} cores); "
            f"load average {front['load_average_1m']}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
