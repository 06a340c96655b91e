"""The backup CronJob's script and the restore procedure of docs/OPERATIONS.md, run
for real: accounts registered through a running auth, a ban and its audit record
written by auth's BanAccount, a console audit record, ratings and a match result
written by matchmaking's records with the players' match history, a profile and
a linked device, player data and combat events written by a zone's persistence
all survive backup → drop database → restore; the accounts log
in again, the banned one is still refused, and a zone process resumes a player at
the saved position with the saved data."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis

from tessera.auth.records import AccountRecords
from tessera.authclient.bearer import bearer_metadata
from tessera.common import eventlog, playerdata
from tessera.common.audit import AuditLog, AuditRecord
from tessera.common.database import Pool, open_database
from tessera.common.process import ServiceProcess
from tessera.harness.audit import audit_trail
from tessera.harness.playerdata import row_after
from tessera.harness.postgres import LocalPostgres, server_bin
from tessera.harness.redis import LocalRedis
from tessera.harness.zones import World, ZoneSpec
from tessera.matchmaking.records import RatingRecords
from tessera.v1 import auth_pb2, auth_pb2_grpc
from tessera.wire.geometry import Rect
from tessera.zone.entities import Record
from tessera.zone.events import DIED, HIT_DEALT, Event
from tessera.zone.persistence import Persistence

from .conftest import CHART_DIR

pytestmark = pytest.mark.integration

ROOT = CHART_DIR.parents[1]
BACKUP = CHART_DIR / "scripts" / "backup.sh"
PASSWORD = "backup test password"
NAMES = ("alice", "bob", "mallory")


def restore_block() -> str:
    """The shell block of OPERATIONS.md that restores a dump."""
    doc = (ROOT / "docs" / "OPERATIONS.md").read_text()
    blocks = re.findall(r"```sh\n(# restore: .*?)```", doc, flags=re.DOTALL)
    assert len(blocks) == 1, "OPERATIONS.md has one restore block"
    return str(blocks[0])


def tools_env(**env: str) -> dict[str, str]:
    """The environment the CronJob's container gives: PostgreSQL's tools on PATH."""
    return {**os.environ, "PATH": f"{server_bin()}:{os.environ['PATH']}", **env}


def run(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        command, check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def start_auth(redis_url: str, database_url: str, **extra: str) -> ServiceProcess:
    env = {
        **extra,
        "TESSERA_HOST": "127.0.0.1",
        "TESSERA_GRPC_PORT": "0",
        "TESSERA_METRICS_PORT": "0",
        "TESSERA_REDIS_URL": redis_url,
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_CONNECT_KEY": base64.b64encode(os.urandom(32)).decode(),
        "TESSERA_AUTH_GENERATE_KEYS": "true",
        "TESSERA_AUTH_ARGON2_TIME_COST": "1",
        "TESSERA_AUTH_ARGON2_MEMORY_KIB": "64",
        "TESSERA_SHUTDOWN_GRACE_S": "1",
    }
    proc = ServiceProcess("tessera.auth", env, name="auth").start()
    proc.wait_serving()
    return proc


async def register_and_ban(redis_url: str, database_url: str) -> dict[str, str]:
    """Register NAMES through auth, then ban mallory as admin alice (BanAccount
    writes the ban and its audit record); their account ids."""
    proc = start_auth(redis_url, database_url)
    try:
        async with grpc.aio.insecure_channel(proc.grpc_address) as channel:
            auth = auth_pb2_grpc.AuthStub(channel)
            ids = {
                name: (
                    await auth.Register(auth_pb2.RegisterRequest(username=name, password=PASSWORD))
                ).account_id
                for name in NAMES
            }
    finally:
        proc.terminate()
    proc = start_auth(redis_url, database_url, TESSERA_AUTH_ADMIN_ACCOUNTS=ids["alice"])
    try:
        async with grpc.aio.insecure_channel(proc.grpc_address) as channel:
            auth = auth_pb2_grpc.AuthStub(channel)
            login = auth_pb2.LoginRequest(username="alice", password=PASSWORD)
            token = (await auth.Login(login)).access_token
            ban = auth_pb2.BanAccountRequest(account_id=ids["mallory"], reason="aimbot")
            await auth.BanAccount(ban, metadata=bearer_metadata(token))
    finally:
        proc.terminate()
    return ids


async def play(pool: Pool, ids: dict[str, str]) -> None:
    """A duel's result and ratings (matchmaking's records), a zone's write-behind of
    alice's player data and its combat events, an admin login in the console's
    audit log."""
    teams = [[ids["alice"]], [ids["bob"]]]
    assert await RatingRecords(pool).apply_result(
        "m1", "duel", teams, [0, 1], now_ms=1e12, roles=[["mage"], []], started_ms=10**12 - 60_000
    )
    accounts = AccountRecords(pool)
    profile = {"display_name": "Alice", "timezone": "Europe/Paris", "metadata": '{"lvl":3}'}
    assert await accounts.update_profile(ids["alice"], profile, now=1e9)
    assert await accounts.link_device(ids["alice"], "ab" * 32, now=1e9) == ids["alice"]
    zone = Persistence(
        pool,
        world="w",
        zone="z1",
        match="",
        capacity=10,
        event_capacity=10,
        interval_s=60.0,
        event_interval_s=60.0,
    )
    alice = Record(
        1,
        player_id=ids["alice"],
        position=(5.0, 1.0, -7.0),
        health=80.0,
        blob=b"inv",
        data_version=3,
        kills=2,
        deaths=1,
        hits_dealt=9,
        hits_taken=4,
    )
    zone.save([alice])
    zone.log(
        [Event(ids["alice"], HIT_DEALT, 2, 20.0, "ranged"), Event(ids["bob"], DIED, 1, 0.0)],
        {ids["alice"]: (5.0, -7.0), ids["bob"]: (9.0, -7.0)},
    )
    await zone.flush()
    audit = AuditLog(pool)
    audit.write(AuditRecord(ids["alice"], "login", "alice", "127.0.0.1", "ok"))
    assert await audit.close()


async def records(pool: Pool, ids: dict[str, str]) -> dict[str, object]:
    """Every record the test wrote, as read through the code that reads it."""
    events = await pool.fetch(
        f"SELECT {', '.join(eventlog.COLUMNS)} FROM game_events ORDER BY kind"
    )
    return {
        "ratings": await RatingRecords(pool).ratings("duel", [ids["alice"], ids["bob"]]),
        "results": [
            tuple(r)
            for r in await pool.fetch("SELECT match_id, mode, teams, ranks FROM match_results")
        ],
        "bans": [
            tuple(r)
            for r in await pool.fetch("SELECT account_id, reason, banned_by, expires_at FROM bans")
        ],
        "history": await RatingRecords(pool).history(ids["alice"], limit=9),
        "accounts": [await AccountRecords(pool).view(ids[name]) for name in NAMES],
        "player_data": await playerdata.load(pool, "w", ids["alice"]),
        "events": [tuple(r) for r in events],
        "audit": await AuditLog(pool).recent(),
    }


async def test_backup_drop_restore_brings_every_record_back(
    postgres_server: LocalPostgres, redis_server: LocalRedis, redis: Redis, tmp_path: Path
) -> None:
    database_url = postgres_server.create_database("t_backup_restore")
    ids = await register_and_ban(redis_server.url, database_url)
    pool = await open_database(database_url, max_size=2)
    try:
        await play(pool, ids)
        await audit_trail(pool, 2)
        before = await records(pool, ids)
    finally:
        await pool.close()
    ratings = before["ratings"]
    assert isinstance(ratings, dict) and all(r.version == 1 for r in ratings.values())
    assert before["results"] and before["bans"]
    history = before["history"]
    assert isinstance(history, list)
    (played,) = history
    assert (played.match_id, played.role, played.outcome) == ("m1", "mage", "win")
    alice_account = before["accounts"][0]  # type: ignore[index]
    assert alice_account.profile.display_name == "Alice" and alice_account.devices == 1
    alice = before["player_data"]
    assert isinstance(alice, playerdata.PlayerData) and alice.blob == b"inv"
    assert (alice.kills, alice.deaths, alice.hits_dealt, alice.hits_taken) == (2, 1, 9, 4)
    assert len(before["events"]) == 2  # type: ignore[arg-type]
    audit = before["audit"]
    assert isinstance(audit, list)
    assert [(r.action, r.target) for r in audit] == [
        ("login", "alice"),
        ("ban", ids["mallory"]),
    ]

    backups = tmp_path / "backups"
    backups.mkdir()
    old = [backups / f"tessera-2020010{d}T000000Z.dump" for d in (1, 2, 3)]
    for path in old:
        path.write_bytes(b"an older dump")
    (backups / "notes.txt").write_text("not a dump: kept")
    (backups / ".tessera-20200104T000000Z.partial").write_bytes(b"a failed run")
    env = tools_env(TESSERA_DATABASE_URL=database_url, BACKUP_DIR=str(backups), BACKUP_KEEP="2")
    assert "written" in run(["sh", str(BACKUP)], env)
    dumps = sorted(p.name for p in backups.glob("tessera-*.dump"))
    assert len(dumps) == 2 and dumps[0] == old[-1].name, "the newest two are kept"
    assert (backups / "notes.txt").exists() and not list(backups.glob(".*"))

    postgres_server.drop_database("t_backup_restore")
    run(["sh", "-euc", restore_block()], env)
    await redis.flushall()  # the procedure's Redis step

    pool = await open_database(database_url, max_size=2)
    try:
        assert await records(pool, ids) == before
        applied = await pool.fetchval("SELECT count(*) FROM schema_migrations")
        assert applied >= 5
    finally:
        await pool.close()
    proc = start_auth(redis_server.url, database_url)
    try:
        async with grpc.aio.insecure_channel(proc.grpc_address) as channel:
            auth = auth_pb2_grpc.AuthStub(channel)
            for name in ("alice", "bob"):
                login = auth_pb2.LoginRequest(username=name, password=PASSWORD)
                assert (await auth.Login(login)).account_id == ids[name]
            login = auth_pb2.LoginRequest(username="mallory", password=PASSWORD)
            with pytest.raises(grpc.aio.AioRpcError) as banned:
                await auth.Login(login)
            assert banned.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        proc.terminate()
    await resume_in_a_zone(redis, redis_server.url, database_url, ids["alice"], alice)
    postgres_server.drop_database("t_backup_restore")


async def resume_in_a_zone(
    redis: Redis, redis_url: str, database_url: str, player: str, saved: playerdata.PlayerData
) -> None:
    """A zone of the restored world loads the player's data on join: the entity
    appears at the saved position, and the zone's write on leave carries the saved
    blob and stats (it writes what the entity holds)."""
    world = World(redis, redis_url, env={"TESSERA_DATABASE_URL": database_url})
    try:
        await world.start_all([ZoneSpec("solo", Rect(-50, -50, 50, 50))])
        joined = await world.join("solo", player, x=20.0, z=20.0)
        assert joined.restored
        assert (joined.position.x, joined.position.z) == pytest.approx((5.0, -7.0))
        status = await world.status("solo", entities=True)
        assert list(status.entity_players) == [player]
        await world.leave("solo", player)
        pool = await open_database(database_url, max_size=1)
        try:
            written = await row_after(pool, "w", player, saved.version)
        finally:
            await pool.close()
    finally:
        world.stop()
    assert written.written_by == "solo" and written.blob == saved.blob == b"inv"
    assert (written.kills, written.deaths, written.hits_dealt, written.hits_taken) == (2, 1, 9, 4)
    assert (written.position[0], written.position[2]) == pytest.approx((5.0, -7.0))
