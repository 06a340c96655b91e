"""The Redis ACL users: the table's rules, the ACL file and, on a real Redis (and
a real Redis Cluster) that loaded them, what each component is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from fnmatch import fnmatchcase
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError

from tessera.auth.store import session_key
from tessera.authclient.store import REVOCATIONS, REVOKED
from tessera.common import acl, store
from tessera.common.store import WorldKeys, instances_stream
from tessera.harness.redis import LOCAL_PASSWORDS, component_url

pytestmark = pytest.mark.redis_cluster

W = WorldKeys("w")

OWNERS = [
    (W.zones, {"zone"}),
    (W.zone_status("z1"), {"zone"}),
    (W.zone_inbox("z1"), {"zone"}),
    (W.routes, {"zone"}),
    (W.checkpoints, {"zone"}),
    (W.entity_ids, {"zone"}),
    (W.cheat_tallies("teleports"), {"zone"}),
    (W.cheat_changed, {"zone"}),
    (W.zone_map, {"operator"}),
    (W.events, {"operator"}),
    (W.key("relays"), {"relay"}),
    (W.key("relay", "r1", "players"), {"relay"}),
    (W.key("relay", "spent", "00ff"), {"relay"}),
    (session_key("s1"), {"auth"}),
    (REVOKED, {"auth"}),
    ("tessera:{auth}:cheat:acted:w", {"auth"}),
    ("tessera:{mm}:ticket:t1", {"matchmaking"}),
    (instances_stream("w"), {"matchmaking", "operator"}),
]


def writers(key: str) -> set[str]:
    return {
        u.name
        for u in acl.USERS
        for part in u.rules().split()
        if part.startswith("~") and fnmatchcase(key, part[1:])
    }


@pytest.mark.parametrize(("key", "owners"), OWNERS)
def test_each_key_is_written_by_its_owners_only(key: str, owners: set[str]) -> None:
    assert writers(key) == owners


def test_only_auth_publishes_revocations_though_every_verifier_follows_them() -> None:
    for u in acl.USERS:
        root, _, selector = u.rules().partition("(")
        assert "+publish" not in root
        assert (REVOCATIONS in selector) == (u.name == "auth")
    assert {u.name for u in acl.USERS if REVOCATIONS in u.subscribe} == {
        "zone",
        "relay",
        "auth",
        "matchmaking",
        "console",
    }


def test_acl_file_has_the_admin_and_every_component() -> None:
    text = acl.acl_file(LOCAL_PASSWORDS, admin_password="s3cret")
    lines = text.splitlines()
    assert lines[0] == "user default on >s3cret ~* &* +@all"
    assert [line.split()[1] for line in lines[1:]] == list(acl.NAMES)
    assert "user zone on >local-zone " + acl.user("zone").rules() in lines
    assert acl.acl_file(LOCAL_PASSWORDS, admin_password=None).startswith("user default on nopass ")


@pytest.mark.parametrize(
    ("passwords", "admin", "message"),
    [
        ({}, None, "'zone'"),
        ({**LOCAL_PASSWORDS, "relay": "two words"}, None, "'relay'"),
        ({**LOCAL_PASSWORDS, "auth": ""}, None, "'auth'"),
        (LOCAL_PASSWORDS, "new\nline", "admin"),
    ],
)
def test_acl_file_refuses_passwords_a_line_cannot_hold(
    passwords: dict[str, str], admin: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        acl.acl_file(passwords, admin_password=admin)


def test_unknown_user_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="zone, relay"):
        acl.user("billing")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://zone:p%40ss@127.0.0.1:6379/0"),
        ("rediss://:old@h:1", "rediss://zone:p%40ss@h:1"),
        ("redis+cluster://a:b@h:1,h:2/0", "redis+cluster://zone:p%40ss@h:1,h:2/0"),
    ],
)
def test_with_user_replaces_the_credentials(url: str, expected: str) -> None:
    assert acl.with_user(url, "zone", "p@ss") == expected


def test_with_user_needs_a_scheme() -> None:
    with pytest.raises(ValueError, match="scheme"):
        acl.with_user("localhost:6379", "zone", "x")


@pytest.fixture
async def as_user(
    redis: store.Client, redis_url: str
) -> AsyncIterator[Callable[[str], store.Client]]:
    """Clients of the test's Redis under a component's user."""
    clients: list[store.Client] = []

    def connect(name: str) -> store.Client:
        clients.append(store.connect(component_url(redis_url, name), retries=0))
        return clients[-1]

    yield connect
    for client in clients:
        await client.aclose()
    # The refusals were the point: clear them (the session's fixtures check none is left).
    nodes: dict[str, Any] = {"target_nodes": "all"} if isinstance(redis, RedisCluster) else {}
    await redis.execute_command("ACL", "LOG", "RESET", **nodes)


async def refused(call: Awaitable[Any]) -> None:
    with pytest.raises(NoPermissionError):
        await call


async def test_zone_credentials_are_refused_on_auth_keys(
    redis: store.Client, as_user: Callable[[str], store.Client]
) -> None:
    await redis.hset(session_key("s1"), "account", "a1")
    zone = as_user("zone")
    await refused(zone.hgetall(session_key("s1")))
    await refused(zone.hset(session_key("s1"), "roles", "admin"))
    await refused(zone.zadd(REVOKED, {"s1": 1}))
    await refused(zone.publish(REVOCATIONS, "s1 1"))
    # A script is checked against the same user, its declared keys and its calls.
    await refused(zone.eval("return redis.call('HGETALL', KEYS[1])", 1, session_key("s1")))
    # What a zone's own work needs is served.
    assert await zone.zrangebyscore(REVOKED, 0, "+inf") == []
    assert await zone.hset(W.routes, "p1", "z1|1") == 1
    assert await zone.publish(W.routes_changed, "p1|z1|1") >= 0


@pytest.mark.parametrize("name", ["matchmaking", "relay", "auth", "operator", "console"])
async def test_only_zones_rewrite_routes(
    redis: store.Client, as_user: Callable[[str], store.Client], name: str
) -> None:
    await redis.hset(W.routes, "p1", "z1|1")
    client = as_user(name)
    await refused(client.hset(W.routes, "p1", "evil|9"))
    await refused(client.publish(W.routes_changed, "p1|evil|9"))
    assert await redis.hget(W.routes, "p1") == b"z1|1"


async def test_console_reads_and_writes_nothing(
    redis: store.Client, as_user: Callable[[str], store.Client]
) -> None:
    await redis.set(W.zone_map, b"map")
    console = as_user("console")
    assert await console.get(W.zone_map) == b"map"
    await refused(console.set(W.zone_map, b"other"))
    await refused(console.delete(W.zone_map))


@pytest.mark.parametrize("name", acl.NAMES)
async def test_no_component_lists_flushes_or_reconfigures(
    redis: store.Client, as_user: Callable[[str], store.Client], name: str
) -> None:
    await redis.set(W.zone_map, b"map")
    client = as_user(name)
    nodes: dict[str, Any] = (
        {"target_nodes": "primaries"} if isinstance(client, RedisCluster) else {}
    )
    for command in (
        ["KEYS", "*"],
        ["SCAN", "0"],
        ["FLUSHALL"],
        ["CONFIG", "GET", "*"],
        ["ACL", "LIST"],
    ):
        await refused(client.execute_command(*command, **nodes))
    assert await redis.get(W.zone_map) == b"map"
