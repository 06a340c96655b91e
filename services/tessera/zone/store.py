"""The zone's Redis adapter: the only code of the zone that talks to Redis.

Keys (tessera.common.store.WorldKeys, docs/ARCHITECTURE.md "Redis keys"):
registration and heartbeat (``zones`` set, ``zone:<z>:status`` with a TTL),
routes (``routes`` hash ``player -> <zone>|<epoch>``, changes published on
``routes:changed`` as ``<player>|<zone>|<epoch>``, a traced handoff's with
``|<traceparent>`` added; a removal publishes
``<player>||0``), checkpoints (``checkpoints`` hash ``player -> EntityState``)
entity ids (``entity-ids`` counter, handed out in blocks), the zone map
(``map``) and the handoff inbox (``zone:<z>:inbox`` stream, consumer group
``zone``; a handoff commits with one script: route CAS + checkpoint + COMMIT)
and the players' non-zero anti-cheat tallies (``cheat:<reason>`` sorted sets,
``cheat:zones`` and ``cheat:since`` hashes, ``cheat:changed``, all with a TTL)
for auth's ``ListSuspects`` and cheat policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from redis.exceptions import ResponseError

from tessera.common.store import Client, WorldKeys, parse_heartbeat
from tessera.common.subscriber import Subscriber
from tessera.v1 import zone_pb2
from tessera.wire.names import CHEAT_REASONS
from tessera.zone.snapshot import ID_LIMIT

# Compare-and-set a route: only if it still holds the value the caller read.
# Finding the new value already there means this same call ran before and its
# answer was lost (the client retries a timed-out command): done, not refused.
_CLAIM = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur == ARGV[3] then return 1 end
if (cur or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[1] .. '|' .. ARGV[3])
return 1
"""

# Delete a route only if it names this zone.
_RELEASE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur or string.sub(cur, 1, #ARGV[2] + 1) ~= ARGV[2] .. '|' then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[1] .. '||0')
return 1
"""


# Commit a handoff atomically: compare-and-set the route on the owner's epoch,
# store the entity's new checkpoint, publish the change and queue the COMMIT in
# the target's inbox. NPCs (no player id) have no route: only the COMMIT. A route
# that already reads ``<target>|<epoch>`` is this commit run before (a retried
# command whose answer was lost): done, nothing written or queued twice.
# Publish anti-cheat tallies and forget stale ones. KEYS: the reasons' ZSETs, then
# zones, since (HASH) and changed (ZSET player -> ms of the last change). ARGV:
# zone, now_ms, ttl_s, reasons, then per player: id and one tally per reason.
_TALLIES = """
local n = tonumber(ARGV[4])
local zones, since, changed = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3]
local i = 5
while i <= #ARGV do
  local player = ARGV[i]
  for r = 1, n do redis.call('ZADD', KEYS[r], ARGV[i + r], player) end
  redis.call('HSET', zones, player, ARGV[1])
  redis.call('HSETNX', since, player, ARGV[2])
  redis.call('ZADD', changed, ARGV[2], player)
  i = i + 1 + n
end
local cutoff = tonumber(ARGV[2]) - tonumber(ARGV[3]) * 1000
local stale = redis.call('ZRANGEBYSCORE', changed, '-inf', '(' .. cutoff, 'LIMIT', 0, 1000)
for _, player in ipairs(stale) do
  for r = 1, n do redis.call('ZREM', KEYS[r], player) end
  redis.call('HDEL', zones, player)
  redis.call('HDEL', since, player)
  redis.call('ZREM', changed, player)
end
for k = 1, n + 3 do redis.call('EXPIRE', KEYS[k], ARGV[3]) end
return #stale
"""

# Commits of one batch, in order, each all or nothing: KEYS routes, routes_changed,
# checkpoints, the target inboxes, then the targets' closed flags in the same
# order; ARGV the inbox length cap, then 7 per commit (player, expected route, new
# route, state, COMMIT, traceparent suffix, index of the target inbox in KEYS). A
# commit whose route is already the new one (a retried call whose answer was lost)
# is done: nothing is written twice. A player's commit into a zone that has closed
# (drained) is refused with 2: that inbox is read no more. An NPC's is not (with no
# route, a retry cannot be told from a first run; refusing a retry would keep the
# NPC here and there).
_COMMIT = """
local targets = (#KEYS - 3) / 2
local out = {}
for b = 2, #ARGV, 7 do
  local player, route = ARGV[b], ARGV[b + 2]
  local inbox = tonumber(ARGV[b + 6])
  local ok, queue = 1, true
  if player ~= '' then
    local cur = redis.call('HGET', KEYS[1], player)
    if cur == route then
      queue = false
    elseif redis.call('EXISTS', KEYS[inbox + targets]) == 1 then
      ok, queue = 2, false
    elseif (cur or '') ~= ARGV[b + 1] then
      ok, queue = 0, false
    else
      redis.call('HSET', KEYS[1], player, route)
      redis.call('HSET', KEYS[3], player, ARGV[b + 3])
      redis.call('PUBLISH', KEYS[2], player .. '|' .. route .. ARGV[b + 5])
    end
  end
  if queue then
    redis.call('XADD', KEYS[inbox], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[b + 4])
  end
  out[#out + 1] = ok
end
return out
"""

# Close a zone's inbox to commits: KEYS its closed flag and inbox, ARGV the flag's
# TTL. Returns the id of the inbox's newest entry ('' if empty).
_CLOSE = """
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if last[1] then return last[1][1] end
return ''
"""

# Append messages to zones' inboxes at once: KEYS the inboxes, ARGV the length
# cap, then per message its body and the index of its inbox in KEYS.
_SEND = """
for m = 2, #ARGV, 2 do
  redis.call('XADD', KEYS[tonumber(ARGV[m + 1])], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[m])
end
return (#ARGV - 1) / 2
"""

GROUP = "zone"
INBOX_MAXLEN = 100_000
# commit_handoffs' outcomes: refused (the route moved), committed, target closed.
REFUSED, COMMITTED, CLOSED = 0, 1, 2
CLOSED_TTL_S = 86_400  # the flag outlives any handoff into the zone


@dataclass(frozen=True)
class Commit:
    """One handoff commit: the route CAS, the checkpoint and the COMMIT message."""

    target: str
    player_id: str
    expected: str
    epoch: int
    state: zone_pb2.EntityState
    message: zone_pb2.InboxMessage

    @property
    def traceparent(self) -> str:
        """The handoff's W3C traceparent ('' when not traced)."""
        return self.message.trace_context.get("traceparent", "")


@dataclass(frozen=True)
class Route:
    """One routing-table entry."""

    zone: str
    epoch: int
    raw: str


def parse_route(raw: str) -> Route | None:
    """``<zone>|<epoch>``, or None if malformed."""
    zone, sep, epoch = raw.partition("|")
    if not sep or not epoch.isdigit():
        return None
    return Route(zone, int(epoch), raw)


class ZoneStore:
    """Registration, routes, checkpoints and entity ids of one zone."""

    def __init__(self, redis: Client, *, world: str, zone: str, id_block: int = 1024) -> None:
        self.redis = redis
        self.keys = WorldKeys(world)
        self.zone = zone
        self.id_block = id_block
        self._ids: list[int] = []
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._commit = redis.register_script(_COMMIT)
        self._tallies = redis.register_script(_TALLIES)
        self._send = redis.register_script(_SEND)
        self._close = redis.register_script(_CLOSE)
        self._inbox_ready = False
        # Tallies this zone published last, of the players it held then.
        self._published: dict[str, tuple[int, ...]] = {}

    async def heartbeat(self, status: zone_pb2.ZoneStatus, ttl_s: float) -> None:
        """Register the zone and store its status with a TTL (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self.keys.zones, self.zone)
            pipe.set(
                self.keys.zone_status(self.zone),
                status.SerializeToString(),
                px=max(1, int(ttl_s * 1000)),
            )
            await pipe.execute()

    async def zone_alive(self, zone: str) -> bool:
        """True while the zone's heartbeat key exists."""
        return bool(await self.redis.exists(self.keys.zone_status(zone)))

    async def read_heartbeat(self, zone: str) -> zone_pb2.ZoneStatus | None:
        """The zone's heartbeat while it is alive and parses, else None."""
        return parse_heartbeat(await self.redis.get(self.keys.zone_status(zone)))

    async def route(self, player_id: str) -> Route | None:
        raw = await self.redis.hget(self.keys.routes, player_id)
        return None if raw is None else parse_route(_text(raw))

    async def claim_route(self, player_id: str, expected: str, epoch: int) -> bool:
        """Point the player's route at this zone if it still reads ``expected`` ('' = none)."""
        value = f"{self.zone}|{epoch}"
        done = await self._claim(
            keys=[self.keys.routes, self.keys.routes_changed], args=[player_id, expected, value]
        )
        return bool(done)

    async def release_route(self, player_id: str) -> bool:
        """Delete the player's route if it names this zone."""
        done = await self._release(
            keys=[self.keys.routes, self.keys.routes_changed], args=[player_id, self.zone]
        )
        return bool(done)

    async def routes_here(self) -> dict[str, int]:
        """Players routed to this zone, with their epochs."""
        found: dict[str, int] = {}
        async for key, raw in self.redis.hscan_iter(self.keys.routes, count=1000):
            route = parse_route(_text(raw))
            if route is not None and route.zone == self.zone:
                found[_text(key)] = route.epoch
        return found

    async def load_checkpoints(self, players: list[str]) -> dict[str, zone_pb2.EntityState]:
        """The last checkpoint of each player that has one."""
        if not players:
            return {}
        raws = await self.redis.hmget(self.keys.checkpoints, players)
        return {
            p: zone_pb2.EntityState.FromString(_raw(raw))
            for p, raw in zip(players, raws, strict=True)
            if raw is not None
        }

    async def save_checkpoints(self, payloads: Mapping[str, bytes]) -> None:
        """Write many checkpoints (serialised ``EntityState`` by player) in one command."""
        mapping: dict[Any, Any] = dict(payloads)
        if mapping:
            await self.redis.hset(self.keys.checkpoints, mapping=mapping)

    async def publish_tallies(
        self, tallies: Mapping[str, tuple[int, ...]], *, ttl_s: int, now_ms: int
    ) -> int:
        """Publish the anti-cheat tallies (by player, in ``CHEAT_REASONS`` order) that
        are not all zero and changed since this zone last published them, and forget
        (up to 1000 per call) players whose tallies have not changed for ``ttl_s``;
        one script, which also sets the keys' TTL. How many players were written."""
        flagged = {p: t for p, t in tallies.items() if any(t)}
        self._published, previous = flagged, self._published
        if not flagged:
            return 0
        changed = [(p, t) for p, t in flagged.items() if previous.get(p) != t]
        k = self.keys
        reasons = [k.cheat_tallies(r) for r in CHEAT_REASONS]
        rows: list[Any] = [v for p, t in changed for v in (p, *t)]
        await self._tallies(
            keys=[*reasons, k.cheat_zones, k.cheat_since, k.cheat_changed],
            args=[self.zone, now_ms, ttl_s, len(CHEAT_REASONS), *rows],
        )
        return len(changed)

    async def next_ids(self, count: int) -> list[int]:
        """``count`` world-unique entity ids, drawn from blocks of the shared counter."""
        while len(self._ids) < count:
            block = max(self.id_block, count - len(self._ids))
            end = int(await self.redis.incrby(self.keys.entity_ids, block))
            if end >= ID_LIMIT:
                raise RuntimeError("entity id space exhausted")
            self._ids.extend(range(end - block + 1, end + 1))
        out, self._ids = self._ids[:count], self._ids[count:]
        return out

    # --- zone map and handoff inbox ------------------------------------------

    async def zone_map(self) -> zone_pb2.ZoneMap | None:
        raw = await self.redis.get(self.keys.zone_map)
        return None if raw is None else zone_pb2.ZoneMap.FromString(_raw(raw))

    async def receive(
        self, *, count: int = 512, block_ms: int = 50, done: Sequence[str] = ()
    ) -> list[tuple[str, zone_pb2.InboxMessage | None]]:
        """The next inbox entries for this zone (consumer group ``zone``), in one
        round trip: ``done``, the entries the caller has handled since its last
        read, are acknowledged and deleted; then come the entries delivered to this
        zone and never acknowledged (after a crash, or a read whose reply was lost:
        the client retries a timed-out command, and the first try's entries stay
        delivered), then new ones, waiting up to ``block_ms`` for a first one (not
        on the first read: a restarted zone takes its pending entries at once).
        Entries that do not parse come back as None (the caller counts and
        acknowledges them)."""
        stream = self.keys.zone_inbox(self.zone)
        first = not self._inbox_ready
        if first:
            try:
                await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise
        async with self.redis.pipeline(transaction=False) as pipe:
            if done:
                pipe.xack(stream, GROUP, *done)
                pipe.xdel(stream, *done)
            pipe.xreadgroup(GROUP, self.zone, {stream: "0"}, count=count)
            block = None if first else block_ms
            pipe.xreadgroup(GROUP, self.zone, {stream: ">"}, count=count, block=block)
            replies = await pipe.execute()
        self._inbox_ready = True
        return _entries(replies[-2]) + _entries(replies[-1])

    async def open_inbox(self) -> None:
        """Take handoff commits (a zone of this name that ran before may have closed)."""
        await self.redis.delete(self.keys.zone_closed(self.zone))

    async def close_inbox(self) -> str:
        """No handoff commits into this zone from now on (it has drained): the
        commit script refuses them. Returns the id of the newest entry in the inbox
        at the close ("" if none): once that is handled, nothing more can come."""
        keys = [self.keys.zone_closed(self.zone), self.keys.zone_inbox(self.zone)]
        return _text(await self._close(keys=keys, args=[CLOSED_TTL_S]))

    async def publish_ghosts(self, payload: bytes) -> None:
        await self.redis.publish(self.keys.zone_ghosts(self.zone), payload)

    def ghost_feed(
        self, deliver: Callable[[str, bytes], object], on_map: Callable[[], object] | None = None
    ) -> GhostFeed:
        return GhostFeed(self.redis, self.keys, deliver, on_map)

    async def send_many(self, messages: list[tuple[str, zone_pb2.InboxMessage]]) -> None:
        """Append messages to zones' inbox streams in one script (a world's keys
        share one cluster slot), all at once: a zone waiting on its inbox reads the
        whole batch, rather than the first message alone while the rest wait behind
        that message's processing. A script, not MULTI/EXEC: redis-py's cluster
        client runs each command queued in a transaction on a thread of its own
        (docs/BENCHMARKS.md, "Transactions on a Redis Cluster")."""
        if not messages:
            return
        zones = sorted({zone for zone, _ in messages})
        inbox = {z: 1 + i for i, z in enumerate(zones)}
        args: list[Any] = [INBOX_MAXLEN]
        for zone, msg in messages:
            args += [msg.SerializeToString(), inbox[zone]]
        await self._send(keys=[self.keys.zone_inbox(z) for z in zones], args=args)

    async def commit_handoffs(self, commits: list[Commit]) -> list[int]:
        """Commit a batch of handoffs in one script (one round trip, one command to
        pack rather than one per handoff): for each, switch the entity's route from
        ``expected`` to ``<target>|<epoch>``, store its checkpoint and queue the
        COMMIT, all or nothing; the COMMITs land together, as :meth:`send_many`'s
        messages do."""
        if not commits:
            return []
        targets = sorted({c.target for c in commits})
        inbox = {t: 4 + i for i, t in enumerate(targets)}  # 1-based, after 3 keys
        keys = [
            self.keys.routes,
            self.keys.routes_changed,
            self.keys.checkpoints,
            *(self.keys.zone_inbox(t) for t in targets),
            *(self.keys.zone_closed(t) for t in targets),
        ]
        args: list[Any] = [INBOX_MAXLEN]
        for c in commits:
            args += [
                c.player_id,
                c.expected,
                f"{c.target}|{c.epoch}",
                c.state.SerializeToString(),
                c.message.SerializeToString(),
                f"|{c.traceparent}" if c.traceparent else "",
                inbox[c.target],
            ]
        results = await self._commit(keys=keys, args=args)
        return [int(r) for r in results]


class GhostFeed:
    """Subscription to the ghost channels of a set of zones (the neighbours): each
    batch goes to ``deliver(sender zone, payload)`` as its bytes are read. With
    ``on_map``, also to the world's zone-map notices: ``on_map()`` on each, and
    once each time the server has (re)subscribed the feed to them, for any
    notice sent before."""

    def __init__(
        self,
        redis: Client,
        keys: WorldKeys,
        deliver: Callable[[str, bytes], object],
        on_map: Callable[[], object] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.deliver = deliver
        self.on_map = on_map
        self.sub: Subscriber | None = None
        self.zones: set[str] = set()
        self._by_channel: dict[bytes, str] = {}
        self._map_channel = keys.zone_map_changed.encode()

    def _message(self, channel: bytes, data: bytes) -> None:
        zone = self._by_channel.get(channel)
        if zone is not None:
            self.deliver(zone, data)
        elif channel == self._map_channel and self.on_map is not None:
            self.on_map()

    def _subscribed(self, channel: bytes) -> None:
        if channel == self._map_channel and self.on_map is not None:
            self.on_map()  # a version announced before the subscription held

    async def follow(self, zones: set[str]) -> None:
        """Subscribe to exactly these zones' ghost channels (and the map notices);
        raise if the subscription has failed (then :meth:`close` it)."""
        if self.sub is None:
            if not zones and self.on_map is None:
                return
            self.sub = Subscriber(self.redis, self._message, subscribed=self._subscribed)
            await self.sub.open(self.keys.zone_map_changed)  # the world's slot
            if self.on_map is not None:
                self.sub.subscribe(self.keys.zone_map_changed)
        self.sub.check()
        if zones == self.zones:
            return  # the usual call: each tick, the neighbours unchanged
        gone, new = self.zones - zones, zones - self.zones
        self._by_channel = {self.keys.zone_ghosts(z).encode(): z for z in zones}
        if gone:
            self.sub.unsubscribe(*(self.keys.zone_ghosts(z) for z in gone))
        if new:
            self.sub.subscribe(*(self.keys.zone_ghosts(z) for z in new))
        self.zones = set(zones)

    async def close(self) -> None:
        """Drop the subscription (after an error too): the next :meth:`follow`
        subscribes anew, on a cluster at the slot's master then (a promoted one
        after a failover)."""
        if self.sub is not None:
            self.sub.close()
            self.sub = None
        self.zones = set()
        self._by_channel = {}


async def read_routes(redis: Client, world: str) -> dict[str, Route]:
    """The whole routing table of a world (for invariant scans)."""
    raw = await redis.hgetall(WorldKeys(world).routes)
    routes = {_text(k): parse_route(_text(v)) for k, v in raw.items()}
    return {k: r for k, r in routes.items() if r is not None}


async def read_commits(
    redis: Client, world: str, zone: str, page: int = 500
) -> set[tuple[str, int]]:
    """The (player, epoch) of every player COMMIT waiting in a zone's inbox (for
    invariant scans): queued for the zone and not yet handled by it. Read ``page``
    entries at a time, so a long backlog is many short replies."""
    stream, start, found = WorldKeys(world).zone_inbox(zone), "-", set[tuple[str, int]]()
    while entries := _entries([(None, await redis.xrange(stream, start, "+", count=page))]):
        for _id, msg in entries:
            if msg is not None and msg.HasField("commit") and msg.commit.entity.player_id:
                found.add((msg.commit.entity.player_id, msg.commit.epoch))
        if len(entries) < page:
            break
        start = "(" + entries[-1][0]
    return found


async def write_zone_map(redis: Client, zone_map: zone_pb2.ZoneMap) -> None:
    """Store a world's zone map and announce its version (tests, tools)."""
    keys = WorldKeys(zone_map.world)
    await redis.set(keys.zone_map, zone_map.SerializeToString())
    await redis.publish(keys.zone_map_changed, str(zone_map.version))


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``<milliseconds>-<sequence>``, "" for none) in stream order."""
    if not entry_id:
        return (0, 0)
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq or 0))


def entry_age_s(entry_id: str, now_s: float) -> float:
    """How long ago (wall clock, ``now_s`` in seconds) Redis appended a stream entry:
    its id is ``<milliseconds>-<sequence>`` from the Redis server's clock."""
    return max(0.0, now_s - entry_key(entry_id)[0] / 1000.0)


def _entries(reply: Any) -> list[tuple[str, zone_pb2.InboxMessage | None]]:
    out: list[tuple[str, zone_pb2.InboxMessage | None]] = []
    for _stream, entries in reply or []:
        for entry_id, fields in entries:
            raw = (fields or {}).get(b"m", (fields or {}).get("m"))
            msg: zone_pb2.InboxMessage | None = None
            if raw is not None:
                try:
                    msg = zone_pb2.InboxMessage.FromString(_raw(raw))
                except DecodeError:
                    msg = None
            out.append((_text(entry_id), msg))
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
