"""The backup CronJob's script and the restore procedure of docs/OPERATIONS.md, run
for real: accounts registered through a running auth and ratings written by
matchmaking's records survive backup → drop database → restore, and log in again."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis

from tessera.common.database import open_database
from tessera.common.process import ServiceProcess
from tessera.harness.postgres import LocalPostgres, server_bin
from tessera.harness.redis import LocalRedis
from tessera.matchmaking.records import RatingRecords
from tessera.v1 import auth_pb2, auth_pb2_grpc

from .conftest import CHART_DIR

pytestmark = pytest.mark.integration

ROOT = CHART_DIR.parents[1]
BACKUP = CHART_DIR / "scripts" / "backup.sh"
PASSWORD = "backup test password"
NAMES = ("alice", "bob")


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


def start_auth(redis_url: str, database_url: str) -> ServiceProcess:
    env = {
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


async def register_and_rate(redis_url: str, database_url: str) -> dict[str, str]:
    """Register NAMES through auth and rate them in one duel; their account ids."""
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
    pool = await open_database(database_url, max_size=2)
    try:
        teams = [[ids["alice"]], [ids["bob"]]]
        assert await RatingRecords(pool).apply_result("m1", "duel", teams, [0, 1], now_ms=1e12)
    finally:
        await pool.close()
    return ids


async def test_backup_drop_restore_brings_accounts_and_ratings_back(
    postgres_server: LocalPostgres, redis_server: LocalRedis, redis: Redis, tmp_path: Path
) -> None:
    database_url = postgres_server.create_database("t_backup_restore")
    ids = await register_and_rate(redis_server.url, database_url)
    pool = await open_database(database_url, max_size=2)
    rated = await RatingRecords(pool).ratings("duel", list(ids.values()))
    await pool.close()
    assert all(r.version == 1 for r in rated.values())

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
        assert await RatingRecords(pool).ratings("duel", list(ids.values())) == rated
        applied = await pool.fetchval("SELECT count(*) FROM schema_migrations")
        assert applied >= 1
    finally:
        await pool.close()
    proc = start_auth(redis_server.url, database_url)
    try:
        async with grpc.aio.insecure_channel(proc.grpc_address) as channel:
            auth = auth_pb2_grpc.AuthStub(channel)
            for name, account_id in ids.items():
                login = auth_pb2.LoginRequest(username=name, password=PASSWORD)
                assert (await auth.Login(login)).account_id == account_id
    finally:
        proc.terminate()
    postgres_server.drop_database("t_backup_restore")
