"""Redis connection factory and the key layout shared by all services.

Every key starts with ``tessera:`` and carries a hash tag (``{world}`` for world
state, ``{auth}`` / ``{mm}`` for service-wide state) so each world's keys live in
one Redis Cluster slot and multi-key scripts keep working when Redis is sharded.
The layout is documented in docs/ARCHITECTURE.md ("Redis keys").
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tessera.wire.names import check_name


def connect(
    url: str,
    *,
    timeout_s: float = 2.0,
    retries: int = 6,
    max_connections: int = 64,
    decode_responses: bool = False,
) -> Redis:
    """A pooled async client that retries transient failures with jittered backoff.

    Six retries with a 50 ms base and 2 s cap ride out a Redis restart of a few
    seconds without surfacing errors to callers.
    """
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries)
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        health_check_interval=15,
        max_connections=max_connections,
        decode_responses=decode_responses,
    )


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
