"""The matchmaking process: settings, and two real processes racing over one pool."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from tessera.common.config import ConfigError, Env
from tessera.common.database import Pool
from tessera.common.process import ServiceProcess
from tessera.common.store import WorldKeys
from tessera.harness.redis import LocalRedis
from tessera.matchmaking.config import Settings
from tessera.matchmaking.records import RatingRecords
from tessera.matchmaking.store import Store
from tessera.v1 import common_pb2, zone_pb2
from tessera.v1 import matchmaking_pb2 as pb

MODES = json.dumps(
    [
        {"name": "duel", "zone_capacity": 1000000, "skill_window": [[0, 5], [2, 50]]},
        {
            "name": "5v5",
            "team_size": 5,
            "max_party": 5,
            "zone_capacity": 1000000,
            "skill_window": [[0, 5], [2, 50]],
        },
    ]
)


def test_settings_defaults_and_errors() -> None:
    base = {
        "TESSERA_AUTH_ADDRESS": "127.0.0.1:5000",
        "TESSERA_MM_CLIENT_SECRET": "s",
        "TESSERA_DATABASE_URL": "postgresql://db/t",
    }
    env = Env(base)
    settings = Settings.from_env(env)
    assert settings.database_url == "postgresql://db/t"
    assert settings.frontend and settings.matching and settings.connect_tokens
    assert set(settings.modes) == {"duel", "5v5", "5v5-roles", "open-world"}
    assert settings.regions == frozenset() and settings.max_watches == 1000
    served = Settings.from_env(Env({**base, "TESSERA_MM_REGIONS": "eu, us-east"}))
    assert served.regions == {"eu", "us-east"}
    with pytest.raises(ConfigError, match="TESSERA_MM_REGIONS"):
        Settings.from_env(Env({**base, "TESSERA_MM_REGIONS": "EU West"}))
    with pytest.raises(ConfigError, match="TESSERA_AUTH_ADDRESS"):
        Settings.from_env(Env({}))
    with pytest.raises(ConfigError, match="TESSERA_MM_CLIENT_SECRET"):
        Settings.from_env(Env({"TESSERA_AUTH_ADDRESS": "a:1"}))
    with pytest.raises(ConfigError, match="TESSERA_MM_MODES"):
        Settings.from_env(
            Env(
                {
                    "TESSERA_MM_FRONTEND": "false",
                    "TESSERA_MM_CONNECT_TOKENS": "no",
                    "TESSERA_MM_MODES": '[{"name": "x", "teams": 0}]',
                }
            )
        )
    with pytest.raises(ConfigError, match="TESSERA_MM_MODES"):
        Settings.from_env(
            Env(
                {
                    "TESSERA_MM_FRONTEND": "false",
                    "TESSERA_MM_CONNECT_TOKENS": "no",
                    "TESSERA_MM_MODES": '[{"name": "x", "match_function": "nope.mod:f"}]',
                }
            )
        )
    matcher = Settings.from_env(
        Env(
            {
                "TESSERA_MM_FRONTEND": "false",
                "TESSERA_MM_CONNECT_TOKENS": "no",
                "TESSERA_DATABASE_URL": "postgresql://db/t",
            }
        )
    )
    with pytest.raises(ConfigError, match="TESSERA_DATABASE_URL"):
        Settings.from_env(Env({"TESSERA_MM_FRONTEND": "false", "TESSERA_MM_CONNECT_TOKENS": "no"}))
    assert matcher.matching and not matcher.frontend and not matcher.auth_address


def test_bad_config_exits_2_naming_the_variable(redis_server: LocalRedis) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tessera.matchmaking"],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": ":".join(sys.path),
            "TESSERA_REDIS_URL": redis_server.url_for("matchmaking"),
            "TESSERA_MM_FRONTEND": "false",
            "TESSERA_MM_CONNECT_TOKENS": "false",
            "TESSERA_MM_TICK_INTERVAL_S": "fast",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "TESSERA_MM_TICK_INTERVAL_S" in proc.stderr


def matcher(
    redis_server: LocalRedis, database_url: str, name: str, rotate_ms: float = 200.0
) -> ServiceProcess:
    return ServiceProcess(
        "tessera.matchmaking",
        {
            "TESSERA_REDIS_URL": redis_server.url_for("matchmaking"),
            "TESSERA_DATABASE_URL": database_url,
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_MM_FRONTEND": "false",
            "TESSERA_MM_CONNECT_TOKENS": "false",
            "TESSERA_MM_MODES": MODES,
            "TESSERA_MM_TICK_INTERVAL_S": "0.005",
            "TESSERA_MM_SHARE_ROTATE_MS": str(rotate_ms),
        },
        name=name,
    )


def metric(process: ServiceProcess, name: str) -> float:
    url = f"http://127.0.0.1:{process.ports['metrics_port']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


@pytest.mark.integration
@pytest.mark.parametrize("rotate_ms", [0.0, 200.0], ids=["full-race", "dealt"])
async def test_two_processes_race_without_double_assignment(
    *,
    redis_server: LocalRedis,
    redis: Redis,
    database: Pool,
    database_url: str,
    rotate_ms: float,
    start_service: Callable[[ServiceProcess], ServiceProcess],
) -> None:
    keys = WorldKeys("main")
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="main", zone="z1"), state=zone_pb2.ZONE_STATE_ACTIVE
    )
    await redis.sadd(keys.zones, "z1")
    await redis.set(keys.zone_status("z1"), status.SerializeToString())
    store = Store(redis, RatingRecords(database), ticket_ttl_s=60.0)
    assigned: Counter[str] = Counter()
    pubsub = redis.pubsub()
    await pubsub.subscribe(Store.events_channel)

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                state, *ids = message["data"].decode().split(" ")
                if int(state) == pb.TICKET_STATE_ASSIGNED:
                    assigned.update(ids)

    listener = asyncio.create_task(listen())
    processes = [matcher(redis_server, database_url, f"mm-{i}", rotate_ms) for i in range(2)]
    try:
        for p in processes:
            await asyncio.to_thread(start_service, p)
        # Both loops registered and have refreshed their view of the replicas.
        for _ in range(100):
            if await redis.zcard(Store.replicas_key) == 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)
        rng = random.Random(11)
        tickets: dict[str, pb.Ticket] = {}
        for burst in range(40):
            for i in range(20):
                mode = "duel" if i % 2 else "5v5"
                size = 1 if mode == "duel" else rng.choice([1, 1, 1, 2, 3])
                ticket = pb.Ticket(
                    id=uuid.uuid4().hex,
                    mode=mode,
                    players=[pb.TicketPlayer(player_id=f"b{burst}-{i}-{k}") for k in range(size)],
                    regions=[pb.RegionLatency(region="eu", latency_ms=5)],
                    created_at_ms=time.time() * 1000,
                )
                tickets[ticket.id] = await store.create(ticket, time.time() * 1000)
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            left = {mode: await redis.zcard(Store.pool_key(mode)) for mode in ("duel", "5v5")}
            if left["duel"] <= 1 and left["5v5"] < 10:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        matches_per_process = [metric(p, "tessera_matchmaking_matches_total") for p in processes]
    finally:
        for p in processes:
            assert p.terminate() == 0
        # Claims made while the loops shut down are still published; let them arrive.
        await asyncio.sleep(0.5)
        listener.cancel()
        await pubsub.aclose()

    # No ticket was published as assigned twice ...
    assert assigned and max(assigned.values()) == 1
    # ... and every match id holds exactly one whole match (no ticket was re-assigned
    # to a second match, which would leave the first one short).
    stored = await store.get_many(list(tickets), time.time() * 1000)
    players_by_match: Counter[str] = Counter()
    for maybe in stored:
        assert maybe is not None
        ticket = maybe
        if ticket.state == pb.TICKET_STATE_ASSIGNED:
            assert assigned[ticket.id] == 1
            players_by_match[ticket.assignment.match_id] += len(ticket.players)
            assert {p.player_id for p in ticket.assignment.players} == {
                p.player_id for p in ticket.players
            }
        else:
            assert ticket.state == pb.TICKET_STATE_SEARCHING
            assert ticket.id not in assigned
    assert set(players_by_match.values()) <= {2, 10}
    assert len(assigned) >= len(tickets) - 20
    # Both replicas did real work (counted before they stopped, so maybe not all of it).
    assert all(m > 0 for m in matches_per_process), matches_per_process
    assert sum(matches_per_process) <= len(players_by_match)


@pytest.mark.integration
async def test_matching_loop_survives_a_redis_restart(
    redis_server: LocalRedis,
    redis: Redis,
    database: Pool,
    database_url: str,
    start_service: Callable[[ServiceProcess], ServiceProcess],
) -> None:
    keys = WorldKeys("main")
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="main", zone="z1"), state=zone_pb2.ZONE_STATE_ACTIVE
    ).SerializeToString()
    process = matcher(redis_server, database_url, "mm-restart")
    try:
        await asyncio.to_thread(start_service, process)
        await asyncio.to_thread(redis_server.restart)
        await redis.sadd(keys.zones, "z1")
        await redis.set(keys.zone_status("z1"), status)
        store = Store(redis, RatingRecords(database), ticket_ttl_s=60.0)
        now = time.time() * 1000
        tickets = [
            pb.Ticket(
                id=uuid.uuid4().hex,
                mode="duel",
                players=[pb.TicketPlayer(player_id=p)],
                regions=[pb.RegionLatency(region="eu", latency_ms=5)],
                created_at_ms=now,
            )
            for p in ("after-1", "after-2")
        ]
        await store.create_many(tickets, now)
        deadline = time.monotonic() + 15
        states: list[int] = []
        while time.monotonic() < deadline:
            got = await store.get_many([t.id for t in tickets], time.time() * 1000)
            states = [t.state if t is not None else 0 for t in got]
            if states == [pb.TICKET_STATE_ASSIGNED] * 2:
                break
            await asyncio.sleep(0.1)
        assert states == [pb.TICKET_STATE_ASSIGNED] * 2
        assert process.alive()
    finally:
        assert process.terminate() == 0
