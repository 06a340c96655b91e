"""Shared fixtures: a real redis-server per test session, flushed per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tessera.common import store
from tessera.common.config import Env
from tessera.harness.redis import LocalRedis
from tessera.zone.config import ZoneConfig
from tessera.zone.simulation import warm_up

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """One real redis-server on a free loopback port for the whole session."""
    server = LocalRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def zone_kernels() -> None:
    """Compile the zone's kernels into numba's disk cache once per session (a no-op
    load when cached), so zone processes started by tests load them in a fraction
    of a second instead of each compiling them."""
    warm_up(ZoneConfig.from_env(Env({})))


@pytest.fixture
async def redis(redis_server: LocalRedis) -> AsyncIterator[Redis]:
    """A client on the session's redis-server, which is emptied before each test."""
    if redis_server.proc is None:
        redis_server.start()
    client = store.connect(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()
