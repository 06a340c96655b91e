"""An instance zone reports its match result to matchmaking itself (tessera.zone.results):
the reporter's retries on its own, then real processes (auth, matchmaking, the
instance zone, Redis, PostgreSQL) from a match's end to its recorded result."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from tessera.authclient.bearer import bearer_metadata
from tessera.common.database import Pool
from tessera.common.process import ServiceProcess
from tessera.common.store import Client, instances_stream
from tessera.game.rules import TIME_UP, Outcome, Standing
from tessera.harness.redis import LocalRedis, component_url
from tessera.harness.relays import metric
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import World
from tessera.matchmaking.records import RatingRecords
from tessera.matchmaking.store import Claim, Instance, Store
from tessera.v1 import auth_pb2, auth_pb2_grpc, common_pb2, zone_pb2
from tessera.v1 import matchmaking_pb2 as mm_pb
from tessera.v1 import matchmaking_pb2_grpc as mm_grpc
from tessera.zone.results import Backoff, Reporter, result_message

OUTCOME = Outcome(
    TIME_UP,
    (Standing(1, 0, 2.0, ("a", "c"), ("tank", "")), Standing(2, 1, 1.0, ("b",), ("",))),
    duration_s=30.0,
)


class Refusal(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "no", None)


def test_the_message_carries_teams_ranks_roles_and_start() -> None:
    msg = result_message("m1", "duel", OUTCOME, now_s=1000.0)
    assert (msg.match_id, msg.mode, msg.started_at_ms) == ("m1", "duel", 970_000)
    assert [(list(t.player_ids), t.rank, list(t.roles)) for t in msg.teams] == [
        (["a", "c"], 0, ["tank", ""]),
        (["b"], 1, [""]),
    ]


def test_backoff_doubles_up_to_its_ceiling() -> None:
    b = Backoff(first_s=1.0, most_s=5.0)
    assert [round(b.delay(n)) <= 1.0 * 2**n for n in range(3)] == [True] * 3
    assert 4.0 <= b.delay(10) <= 5.0


def reporter(answers: list[Any]) -> tuple[Reporter, list[mm_pb.MatchResult]]:
    sent: list[mm_pb.MatchResult] = []

    async def send(result: mm_pb.MatchResult) -> bool:
        sent.append(result)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return bool(answer)

    return Reporter(
        send, match_id="m1", mode="duel", actor="zone", backoff=Backoff(0.001, 0.01)
    ), sent


async def test_retries_until_matchmaking_has_it_and_reports_once() -> None:
    r, sent = reporter([Refusal(grpc.StatusCode.UNAVAILABLE), False])
    task = asyncio.create_task(r.run())
    await asyncio.sleep(0.01)
    assert sent == []  # nothing before the match ends
    r.submit(OUTCOME)
    r.submit(Outcome(TIME_UP, (), 1.0))  # a second outcome is ignored
    await asyncio.wait_for(task, 5)
    assert len(sent) == 2 and sent[0] == sent[1] and len(sent[0].teams) == 2
    assert r.done.is_set()


async def test_a_final_refusal_is_not_retried() -> None:
    r, sent = reporter([Refusal(grpc.StatusCode.INVALID_ARGUMENT)])
    r.submit(OUTCOME)
    await asyncio.wait_for(r.run(), 5)
    assert len(sent) == 1 and r.done.is_set()


MATCH = "c0ffee00c0ffee00c0ffee00c0ffee00"
INSTANCE = "inst-c0ffee00c0ffee00c0ffee00"
MODULE = """
from tessera.game import Module, Rules

GAME = Module(name="quick", rules=Rules("duel", teams=2, start_timeout_s=5, time_limit_s=1))
"""
COMMON = {
    "TESSERA_HOST": "127.0.0.1",
    "TESSERA_GRPC_PORT": "0",
    "TESSERA_METRICS_PORT": "0",
    "TESSERA_SHUTDOWN_GRACE_S": "1",
}
ZONE_SECRET = "zone-secret-0123456789"


def serve(name: str, env: dict[str, str]) -> ServiceProcess:
    return ServiceProcess(f"tessera.{name}", {**COMMON, **env}, name=name).start()


@pytest.mark.integration
async def test_an_instance_zone_ends_its_match_and_matchmaking_records_it(
    tmp_path: Path,
    redis_server: LocalRedis,
    redis: Client,
    database: Pool,
    database_url: str,
) -> None:
    (tmp_path / "quickgame.py").write_text(MODULE)
    auth = serve(
        "auth",
        {
            "TESSERA_REDIS_URL": component_url(redis_server.url, "auth"),
            "TESSERA_DATABASE_URL": database_url,
            **LOCAL.auth_env(tmp_path / "keys"),  # zones trust LOCAL: auth signs with it
            "TESSERA_CONNECT_KEY": base64.b64encode(os.urandom(32)).decode(),
            "TESSERA_AUTH_SERVICE_CLIENTS": (
                f"matchmaking=mm-secret-0123456789,zone={ZONE_SECRET}"
            ),
            "TESSERA_AUTH_RELAYS": "default=127.0.0.1:7777",
        },
    )
    procs = [auth]
    world = World(redis, redis_server.url)
    try:
        auth.wait_serving()
        mm = serve(
            "matchmaking",
            {
                "TESSERA_REDIS_URL": component_url(redis_server.url, "matchmaking"),
                "TESSERA_DATABASE_URL": database_url,
                "TESSERA_AUTH_ADDRESS": auth.grpc_address,
                "TESSERA_MM_CLIENT_SECRET": "mm-secret-0123456789",
            },
        )
        procs.append(mm)
        mm.wait_serving()
        # Matchmaking made the match for an instance zone (as its director does).
        store = Store(redis, RatingRecords(database))
        await store.claim(
            "duel", [Claim(MATCH, [], instance=Instance(world.world, INSTANCE, b""))], 0.0
        )
        async with grpc.aio.insecure_channel(auth.grpc_address) as channel:
            stub: Any = auth_pb2_grpc.AuthStub(channel)
            players = [
                (
                    await stub.GuestLogin(auth_pb2.GuestLoginRequest(device_id=uuid.uuid4().hex))
                ).account_id
                for _ in range(2)
            ]
        zone = await world.start_instance(
            INSTANCE,
            MATCH,
            {
                "TESSERA_AUTH_PUBLIC_KEYS": "",
                "TESSERA_AUTH_ADDRESS": auth.grpc_address,
                "TESSERA_MATCHMAKING_ADDRESS": mm.grpc_address,
                "TESSERA_SERVICE_CLIENT_ID": "zone",
                "TESSERA_SERVICE_CLIENT_SECRET": ZONE_SECRET,
                "TESSERA_GAME_MODULE": "quickgame",
                "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
            },
        )
        channel, zone_stub = world.stub(INSTANCE)
        async with channel:
            for team, player in enumerate(players, start=1):
                await zone_stub.Join(
                    zone_pb2.JoinRequest(
                        player_id=player,
                        relay_id="testbed",
                        spawn=common_pb2.Vec3(x=20.0 * team),
                        match_id=MATCH,
                        team=team,
                        role="duelist",
                    )
                )
        # Both teams present: the match starts, its second runs out, a draw is reported
        # and matchmaking ends the instance.
        deadline = time.monotonic() + 20
        ended: list[Any] = []
        while not ended and time.monotonic() < deadline:
            entries: Any = await redis.xrange(instances_stream(world.world))
            ended = [
                f for _, f in entries if f[b"kind"] == b"end" and f[b"match"] == MATCH.encode()
            ]
            await asyncio.sleep(0.1)
        assert ended and ended[0][b"zone"] == INSTANCE.encode()
        async with grpc.aio.insecure_channel(auth.grpc_address) as channel:
            session = await auth_pb2_grpc.AuthStub(channel).ServiceLogin(
                auth_pb2.ServiceLoginRequest(client_id="zone", client_secret=ZONE_SECRET)
            )
        async with grpc.aio.insecure_channel(mm.grpc_address) as channel:
            history = await mm_grpc.MatchmakerStub(channel).ListMatchHistory(
                mm_pb.ListMatchHistoryRequest(player_id=players[0]),
                metadata=bearer_metadata(session.access_token),
            )
        (entry,) = history.matches
        assert (entry.match_id, entry.mode, entry.outcome, entry.role) == (
            MATCH,
            "duel",
            "draw",
            "duelist",
        )
        assert entry.rated and 0 < entry.started_at_ms < entry.ended_at_ms
        assert metric(zone, "tessera_zone_match_results_total", outcome="reported") == 1
        assert metric(zone, "tessera_zone_matches_ended_total", reason="time") == 1
    finally:
        world.stop()
        for proc in reversed(procs):
            proc.terminate()
