"""Shared fixtures: a real redis-server per test session, flushed per test (and, for
modules marked ``redis_cluster``, a real Redis Cluster as well), both with the
component users of ``tessera.common.acl`` and checked at the end for anything
they refused a component (a test that provokes refusals clears them), and a real
PostgreSQL cluster per session with a fresh database per test module; the
operator's local runtime on that Redis (``local_runtime``); an abort with every
thread's stack if the process outgrows ``RSS_LIMIT_BYTES``; the
``--redis-cluster`` option (``make test-cluster``) selects what runs on a cluster."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tessera.common import store
from tessera.common.config import Env
from tessera.common.database import Pool, open_database
from tessera.harness import tripwire
from tessera.harness.postgres import LocalPostgres
from tessera.harness.redis import LocalRedis, LocalRedisCluster
from tessera.harness.tokens import LOCAL
from tessera.operator.local import LocalRuntime
from tessera.zone.config import ZoneConfig
from tessera.zone.simulation import warm_up

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """One real redis-server on a free loopback port for the whole session."""
    server = LocalRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    refused = server.refusals()
    server.stop()
    assert not refused, f"Redis refused a component (ACL LOG): {refused}"


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """One real Redis Cluster (3 masters, 3 replicas) on loopback for the session,
    started only when a test asks for it."""
    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster
        refused = cluster.refusals()
    assert not refused, f"the Redis Cluster refused a component (ACL LOG): {refused}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis-cluster",
        action="store_true",
        help="run only what runs on a real Redis Cluster (make test-cluster): every test "
        "using the redis or redis_url fixture, on the cluster; tests using the "
        "redis_cluster fixture; tests marked redis_cluster_only",
    )


def runs_on_cluster(item: pytest.Item) -> bool:
    """Whether the test runs on a Redis Cluster (see ``--redis-cluster``)."""
    callspec = getattr(item, "callspec", None)
    return (
        item.get_closest_marker("redis_cluster_only") is not None
        or "redis_cluster" in getattr(item, "fixturenames", ())
        or (callspec is not None and callspec.params.get("redis_url") == "cluster")
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--redis-cluster`` keeps only the tests that run on a cluster; without it,
    the tests marked ``redis_cluster_only`` (too slow for ``make test``) are left out."""
    if config.getoption("--redis-cluster"):
        keep = [item for item in items if runs_on_cluster(item)]
    else:
        keep = [item for item in items if item.get_closest_marker("redis_cluster_only") is None]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the tests of modules marked ``redis_cluster`` that use the ``redis`` (or
    ``redis_url``) fixture twice: on the single server and on the cluster; with
    ``--redis-cluster``, every test that uses them and not ``redis_server`` too
    (only the cluster runs are kept)."""
    names = metafunc.fixturenames
    if "redis_url" in names and (
        metafunc.definition.get_closest_marker("redis_cluster")
        # A test that also starts services on redis_server itself stays single.
        or (metafunc.config.getoption("--redis-cluster") and "redis_server" not in names)
    ):
        metafunc.parametrize("redis_url", ["single", "cluster"], indirect=True)


# Far above what the session holds (about 250 MB through the late-ZoneLink stop test
# run 28 times over); a runaway (700 MB/s seen) reaches it within seconds.
RSS_LIMIT_BYTES = 4 * 1024**3


@pytest.fixture(scope="session", autouse=True)
def rss_tripwire() -> None:
    """Abort the session with every thread's stack above ``RSS_LIMIT_BYTES``
    (:mod:`tessera.harness.tripwire`), before the kernel kills it and its neighbours."""
    tripwire.abort_above(RSS_LIMIT_BYTES)


@pytest.fixture(scope="session", autouse=True)
def zone_kernels() -> None:
    """Compile the zone's kernels into numba's disk cache once per session (a no-op
    load when cached), so zone processes started by tests load them in a fraction
    of a second instead of each compiling them."""
    warm_up(ZoneConfig.from_env(Env({})))


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """The address of the Redis the test's ``redis`` client uses (the cluster's
    ``redis+cluster://`` URL on the cluster run of a ``redis_cluster`` module)."""
    if getattr(request, "param", "single") == "cluster":
        cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    server: LocalRedis = request.getfixturevalue("redis_server")
    if server.proc is None:
        server.start()
    return server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[store.Client]:
    """A client on the session's redis-server (or, on the cluster run of a
    ``redis_cluster`` module, on the Redis Cluster), emptied before each test."""
    client = store.connect(redis_url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """One real PostgreSQL cluster on a free loopback port for the whole session."""
    server = LocalPostgres()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def database_url(postgres_server: LocalPostgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database per test module (its schema is migrated by whoever opens it)."""
    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.module.__name__.lower())[-55:]
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Pool]:
    """A pool on the module's database, migrated, its tables emptied before each test."""
    pool = await open_database(database_url, max_size=4)
    tables = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        " AND tablename <> 'schema_migrations'"
    )
    if tables:
        await pool.execute("TRUNCATE " + ", ".join(r["tablename"] for r in tables) + " CASCADE")
    yield pool
    await pool.close()


MakeRuntime = Callable[..., LocalRuntime]


@pytest.fixture
def local_runtime(redis_server: LocalRedis) -> MakeRuntime:
    """Makes the operator's local runtime for a World on the session's Redis (the
    operator's and the zones' users), its zones trusting the harness's tokens and
    run with ``zone_env`` (default: heartbeats every 0.2 s), instance zones also
    with ``instance_env``."""

    def make(
        world_obj: Mapping[str, Any],
        zone_env: Mapping[str, str] | None = None,
        instance_env: Mapping[str, str] | None = None,
    ) -> LocalRuntime:
        return LocalRuntime(
            world_obj,
            redis_server.url_for("operator"),
            zone_redis_url=redis_server.url_for("zone"),
            zone_env={**(zone_env or {"TESSERA_HEARTBEAT_S": "0.2"}), **LOCAL.env()},
            channel=LOCAL.channel,
            instance_env=instance_env,
        )

    return make
