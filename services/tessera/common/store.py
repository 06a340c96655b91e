"""Redis connection factory, the key layout shared by all services, and the
readers of world state that one component writes and many read.

Every key starts with ``tessera:`` and carries a hash tag (``{world}`` for world
state, ``{auth}`` / ``{mm}`` for service-wide state) so each world's keys live in
one Redis Cluster slot and multi-key scripts keep working when Redis is sharded.
The layout is documented in docs/ARCHITECTURE.md ("Redis keys"). :func:`connect`
gives a single-server client, or a cluster client for a ``redis+cluster://``
address; every store takes either (:data:`Client`).

Zone heartbeats are written by the zone (``tessera.zone.store``) and read here
only: :func:`read_heartbeats` / :func:`read_heartbeat` serve the relay,
matchmaking, the operator and the demo, which also reads routes and scaling
events through :func:`read_route_zone` and :func:`read_events`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from google.protobuf.message import DecodeError
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tessera.common.config import CLUSTER_SCHEME, cluster_address
from tessera.v1 import zone_pb2
from tessera.wire.names import check_name

Client: TypeAlias = Redis | RedisCluster
"""A single-server or a cluster client: every store accepts either."""


def connect(
    url: str,
    *,
    timeout_s: float = 2.0,
    retries: int = 6,
    max_connections: int = 64,
    decode_responses: bool = False,
) -> Client:
    """A pooled async client that retries transient failures with jittered backoff.

    Six retries with a 50 ms base and 2 s cap ride out a Redis restart of a few
    seconds without surfacing errors to callers. A ``redis+cluster://`` URL
    (:func:`tessera.common.config.cluster_address`) gives a :class:`RedisCluster`
    that starts from the listed nodes and discovers the rest; ``max_connections``
    is then per node.
    """
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries)
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": retry,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        "health_check_interval": 15,
        "max_connections": max_connections,
        "decode_responses": decode_responses,
    }
    if url.startswith(CLUSTER_SCHEME):
        address = cluster_address(url)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
            username=address.username,
            password=address.password,
            **options,
        )
    return Redis.from_url(url, **options)


async def queue_script(
    pipe: Pipeline | ClusterPipeline, script: AsyncScript, keys: list[Any], args: list[Any]
) -> None:
    """Queue ``script`` on a pipeline.

    A single-server pipeline loads missing scripts before it runs; a cluster
    pipeline only queues EVALSHA, which fails with NOSCRIPT on a node that never
    saw the script (a new or promoted one), so there the body is sent (EVAL).
    """
    if isinstance(pipe, ClusterPipeline):
        text = script.script
        pipe.eval(text if isinstance(text, str) else bytes(text).decode(), len(keys), *keys, *args)
    else:
        await script(keys=keys, args=args, client=pipe)


async def follow_slot(redis: Client, channel: str) -> None:
    """Before (re)subscribing to ``channel``: on a cluster, one keyed command on
    the channel's slot. A cluster client subscribes on the master its slot map
    names and a subscription never refreshes that map, so after a failover a
    client that only subscribes would dial the dead master forever; a failing
    command makes the client reload the map and find the promoted one."""
    if isinstance(redis, RedisCluster):
        await redis.exists(channel)


def instance_zone(match_id: str) -> str:
    """The instance zone of a match (a DNS label): the matchmaker names it in the
    assignment and the connect tokens, the operator creates it."""
    return "inst-" + match_id[:24].lower()


def instances_stream(world: str) -> str:
    """STREAM of a world's instance-zone requests (``kind`` create/end), written by
    the matchmaker (under its ``{mm}`` hash tag), read by the operator."""
    return f"tessera:{{mm}}:instances:{check_name('world', world)}"


@dataclass(frozen=True)
class WorldKeys:
    """Keys of one world; all share the ``{world}`` hash tag."""

    world: str

    def __post_init__(self) -> None:
        check_name("world", self.world)

    def key(self, *parts: str) -> str:
        return ":".join(("tessera", "{" + self.world + "}", *parts))

    @property
    def zones(self) -> str:
        """SET of zone names that have registered."""
        return self.key("zones")

    def zone_status(self, zone: str) -> str:
        """STRING: the zone's heartbeat, a serialized ZoneStatus, with a TTL."""
        return self.key("zone", zone, "status")

    def zone_inbox(self, zone: str) -> str:
        """STREAM of InboxMessage: handoff PREPARE/ACK/COMMIT/ABORT, forwarded hits."""
        return self.key("zone", zone, "inbox")

    def zone_closed(self, zone: str) -> str:
        """Set once the zone has drained: no handoff commits into it any more."""
        return self.key("zone", zone, "closed")

    def zone_ghosts(self, zone: str) -> str:
        """Pub/sub channel: ghost batches published by the zone for its neighbours."""
        return self.key("zone", zone, "ghosts")

    @property
    def zone_map(self) -> str:
        """STRING: the serialized ZoneMap (bounds and addresses of all zones)."""
        return self.key("map")

    @property
    def zone_map_changed(self) -> str:
        """Pub/sub channel: the new ZoneMap version, published on every change."""
        return self.key("map", "changed")

    @property
    def routes(self) -> str:
        """HASH player id -> "<zone>|<epoch>": the zone that owns each player."""
        return self.key("routes")

    @property
    def routes_changed(self) -> str:
        """Pub/sub channel: "<player>|<zone>|<epoch>" on every route change."""
        return self.key("routes", "changed")

    @property
    def checkpoints(self) -> str:
        """HASH player id -> serialized EntityState (the last checkpoint)."""
        return self.key("checkpoints")

    @property
    def entity_ids(self) -> str:
        """STRING counter: world-unique entity ids are allocated from it in blocks."""
        return self.key("entity-ids")

    @property
    def events(self) -> str:
        """STREAM: scaling and lifecycle events (split, merge, drain), capped."""
        return self.key("events")

    def cheat_tallies(self, reason: str) -> str:
        """ZSET player id -> the player's anti-cheat tally of ``reason``, with a TTL."""
        return self.key("cheat", reason)

    @property
    def cheat_zones(self) -> str:
        """HASH player id -> the zone that published the player's tallies last."""
        return self.key("cheat", "zones")

    @property
    def cheat_since(self) -> str:
        """HASH player id -> Unix ms of the first non-zero tally published."""
        return self.key("cheat", "since")

    @property
    def cheat_changed(self) -> str:
        """ZSET player id -> Unix ms when a zone last published a change of the
        player's tallies (players unchanged for the TTL are forgotten)."""
        return self.key("cheat", "changed")

    @property
    def kicks(self) -> str:
        """Pub/sub channel: "<player>|<reason>", a kick for whichever relay holds the player."""
        return self.key("kicks")


def parse_heartbeat(raw: bytes | str | None) -> zone_pb2.ZoneStatus | None:
    """A zone's heartbeat from its stored value (a serialized ZoneStatus); None when
    it is missing or does not parse, so a torn or foreign value counts as no
    heartbeat."""
    if raw is None:
        return None
    try:
        return zone_pb2.ZoneStatus.FromString(raw.encode() if isinstance(raw, str) else raw)
    except DecodeError:
        return None


async def registered_zones(redis: Client, world: str) -> list[str]:
    """The names of the zones that ever registered in ``world`` (alive or not), sorted."""
    return sorted(_text(name) for name in await redis.smembers(WorldKeys(world).zones))


async def zone_registered(redis: Client, world: str, zone: str) -> bool:
    """Whether ``zone`` ever registered in ``world`` (heartbeated at least once)."""
    return bool(await redis.sismember(WorldKeys(world).zones, zone))


async def read_heartbeats(
    redis: Client, world: str, zones: Sequence[str] | None = None
) -> dict[str, zone_pb2.ZoneStatus]:
    """Zone -> heartbeat for each of ``zones`` (default: every registered zone, by
    name) whose heartbeat is alive (its key has not expired) and parses."""
    names = await registered_zones(redis, world) if zones is None else list(zones)
    if not names:
        return {}
    keys = WorldKeys(world)
    values = await redis.mget([keys.zone_status(name) for name in names])
    out: dict[str, zone_pb2.ZoneStatus] = {}
    for name, value in zip(names, values, strict=True):
        status = parse_heartbeat(value)
        if status is not None:
            out[name] = status
    return out


async def read_heartbeat(redis: Client, world: str, zone: str) -> zone_pb2.ZoneStatus | None:
    """The zone's heartbeat; None when it has expired (the zone is not alive) or does
    not parse."""
    return parse_heartbeat(await redis.get(WorldKeys(world).zone_status(zone)))


async def read_route_zone(redis: Client, world: str, player: str) -> str:
    """The zone the player's route (``<zone>|<epoch>``) names; "" without a route."""
    raw = await redis.hget(WorldKeys(world).routes, player)
    return "" if raw is None else _text(raw).partition("|")[0]


async def read_events(
    redis: Client, world: str, *, after: str | None = None, count: int = 500
) -> list[tuple[str, dict[str, str]]]:
    """Up to ``count`` scaling events of ``world`` after the entry id ``after`` (from
    the first when None), oldest first, as (entry id, fields)."""
    start = "-" if after is None else f"({after}"
    entries = await redis.xrange(WorldKeys(world).events, min=start, count=count) or []
    return [
        (_text(entry_id), {_text(k): _text(v) for k, v in (fields or {}).items()})
        for entry_id, fields in entries
    ]


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
