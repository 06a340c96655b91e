"""The matchmaking store: the only code that touches Redis (zone heartbeats are read
with the shared reader, :func:`tessera.common.store.read_heartbeats`).

Keys (all under the ``{mm}`` hash tag, so every script is single-slot in Redis Cluster):

- ``tessera:{mm}:ticket:<id>`` HASH ``t`` Ticket (request part, protobuf), ``p`` player
  ids joined by U+001F, ``r`` their ratings (mu, comma-joined), ``s`` state (TicketState
  number), ``e`` expiry (ms), ``a`` Assignment (protobuf), ``o`` the creator's session
  id. Kept ``retention`` after it ends.
- ``tessera:{mm}:pool:<mode>`` ZSET searching ticket id -> expiry (ms).
- ``tessera:{mm}:player:<player>`` STRING the player's active ticket id.
- ``tessera:{mm}:ratings:<mode>`` HASH player -> ``mu:sigma:version``: a cache of the
  ratings in PostgreSQL (``records.py``, the system of record), filled on a miss when
  a ticket is created and written after every applied result; a value is never
  replaced by one of a lower version.
- ``tessera:{mm}:match:<match>`` SET the players assigned to the match (a day), to check
  reported results.
- ``tessera:{mm}:backfill:<id>`` HASH ``b`` Backfill (protobuf, without slots and tickets),
  ``slot:<team>`` open slots, ``tickets`` ids joined by ','; ``tessera:{mm}:backfills:<mode>``
  SET of open backfill ids.
- ``tessera:{mm}:instances:<world>`` STREAM the world's instance-zone lifecycle for the
  operator: ``kind`` (``create`` | ``end``), ``match``, ``zone``, ``at_ms`` and, for ``create``,
  ``mode`` (the match's game mode: its instance zone runs the World's module for it) and
  ``request`` (an Assignment with the destination and every player, no tokens).
- ``tessera:{mm}:instance:<match>`` STRING ``<world> <zone>`` of an instance match (a day), so a
  reported result can end its instance.
- ``tessera:{mm}:sent:<world>:<zone>`` ZSET players sent to an open-world zone by any replica:
  ``<running total, 15 digits>:<players>:<match>`` -> assigned ms (never decreasing), kept
  :data:`SENT_WINDOW_MS`; the claim script admits a match only if the zone has room.
- ``tessera:{mm}:replicas`` ZSET matching-loop replica id -> last seen (ms), to share work.
- ``tessera:{mm}:events`` pub/sub ``"<state> <id> <id> ..."`` on every ticket state change.

Every state change of a ticket is one Lua script, so a ticket is never half-written
and two replicas never assign the same ticket: :data:`CLAIM` takes all tickets of a
proposal or none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tessera.common.store import (
    Client,
    follow_slot,
    instances_stream,
    queue_script,
    read_heartbeats,
)
from tessera.matchmaking import rating
from tessera.matchmaking.destination import ZoneLoad, zone_loads
from tessera.matchmaking.matching import Candidate
from tessera.matchmaking.records import Participation, RatingRecords, Versioned
from tessera.matchmaking.ticket import candidate
from tessera.v1 import matchmaking_pb2 as pb

PREFIX = "tessera:{mm}:"
SEP = "\x1f"
# How long the players of a match are remembered, to check reported results.
MATCH_TTL_S = 86_400
# Players sent to a zone are remembered this long: longer than any heartbeat lives
# (3 x TESSERA_HEARTBEAT_S, at most 60 s) plus the arrival grace, so the bookings
# counted against every readable heartbeat are still there.
SENT_WINDOW_MS = 200_000
# Entries of a world's instance stream kept (approximately).
INSTANCES_MAXLEN = 10_000
SEARCHING = pb.TICKET_STATE_SEARCHING
ASSIGNED = pb.TICKET_STATE_ASSIGNED
CANCELLED = pb.TICKET_STATE_CANCELLED
EXPIRED = pb.TICKET_STATE_EXPIRED

# KEYS: ticket, pool, ratings, player keys...; ARGV: id, blob, players, expires, now,
# retention, prefix, owner's session id, traceparent of its creation.
# Returns {0}, {index of the busy player, its ticket id}, or {-1, players...} whose
# ratings are not cached (nothing written: fill the cache and call again).
CREATE = """
local now = tonumber(ARGV[5])
for i = 4, #KEYS do
  local owner = redis.call('GET', KEYS[i])
  if owner then
    local st = redis.call('HMGET', ARGV[7] .. 'ticket:' .. owner, 's', 'e')
    if st[1] == '1' and tonumber(st[2]) >= now then return {i - 3, owner} end
  end
end
local players = {}
for player in string.gmatch(ARGV[3], '[^\\31]+') do players[#players + 1] = player end
local mus = {}
local missing = {-1}
for i, r in ipairs(redis.call('HMGET', KEYS[3], unpack(players))) do
  if r then mus[i] = string.match(r, '^[^:]+') else missing[#missing + 1] = players[i] end
end
if #missing > 1 then return missing end
local expires = tonumber(ARGV[4])
local retention = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 't', ARGV[2], 'p', ARGV[3], 'r', table.concat(mus, ','),
           's', 1, 'e', ARGV[4], 'o', ARGV[8], 'tp', ARGV[9])
redis.call('PEXPIREAT', KEYS[1], expires + retention)
redis.call('ZADD', KEYS[2], expires, ARGV[1])
for i = 4, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'PXAT', expires + retention)
end
return {0}
"""

# Caches ratings, each only over an older version (or none). KEYS: ratings;
# ARGV: player, value (``mu:sigma:version``), ... A value without a version is older.
CACHE = """
for i = 1, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  local version = current and tonumber(string.match(current, '^[^:]+:[^:]+:(%d+)$')) or -1
  if not current or version < tonumber(string.match(ARGV[i + 1], '(%d+)$')) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
"""

# KEYS: ticket, pool; ARGV: id, now, ttl, retention, prefix
HEARTBEAT = """
local st = redis.call('HMGET', KEYS[1], 's', 'e', 'p')
if not st[1] then return -1 end
if st[1] ~= '1' or tonumber(st[2]) < tonumber(ARGV[2]) then return -2 end
local expires = tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'e', expires)
redis.call('ZADD', KEYS[2], 'XX', expires, ARGV[1])
redis.call('PEXPIREAT', KEYS[1], expires + tonumber(ARGV[4]))
for player in string.gmatch(st[3], '[^\\31]+') do
  redis.call('PEXPIREAT', ARGV[5] .. 'player:' .. player, expires + tonumber(ARGV[4]))
end
return expires
"""

# Ends searching tickets: a cancel (one id) or the reaper (expired ids of a pool).
# KEYS: pool; ARGV: state, now, retention, prefix, channel, limit, ids...
# With no ids, the pool's tickets whose expiry has passed are ended as EXPIRED.
END = """
local ids = {}
for i = 7, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[6]))
end
local ended = {}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. 'ticket:' .. id
  local st = redis.call('HMGET', key, 's', 'p')
  if st[1] == '1' then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HSET', key, 's', ARGV[1])
    redis.call('PEXPIRE', key, tonumber(ARGV[3]))
    for player in string.gmatch(st[2], '[^\\31]+') do
      local pkey = ARGV[4] .. 'player:' .. player
      if redis.call('GET', pkey) == id then redis.call('DEL', pkey) end
    end
    ended[#ended + 1] = id
  elseif not st[1] then
    redis.call('ZREM', KEYS[1], id)
  end
end
if #ended > 0 then redis.call('PUBLISH', ARGV[5], ARGV[1] .. ' ' .. table.concat(ended, ' ')) end
return ended
"""

# Claims proposals, each all-or-nothing. KEYS: pool; ARGV: now, retention, prefix, channel,
# mode, match record TTL (s), count, sent window start (ms), sent window (ms), instance
# stream length, then per proposal: match id, backfill id, instance world, instance zone,
# instance request, booked world, booked zone, booked players, zone players at its
# heartbeat, heartbeat ms, capacity ('' = no check), ticket count, (ticket id,
# assignment)..., slot count, (team, slots)...
# Returns per proposal 1, or the id of the first ticket that was no longer searching
# (``backfill:<id>`` for a full backfill, ``zone:<zone>`` for a zone without room).
CLAIM = """
local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local prefix = ARGV[3]
local i = 11
local results = {}
local assigned = {}
for p = 1, tonumber(ARGV[7]) do
  local match_id, backfill = ARGV[i], ARGV[i + 1]
  local iworld, izone, request = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local bworld, bzone, booked = ARGV[i + 5], ARGV[i + 6], tonumber(ARGV[i + 7])
  local zplayers, beat, capacity = tonumber(ARGV[i + 8]), ARGV[i + 9], ARGV[i + 10]
  local nt = tonumber(ARGV[i + 11])
  i = i + 12
  local tickets = {}
  local bad = nil
  for t = 1, nt do
    local id = ARGV[i]
    tickets[t] = {id, ARGV[i + 1]}
    i = i + 2
    if not bad then
      local score = redis.call('ZSCORE', KEYS[1], id)
      if (not score) or tonumber(score) < now then bad = id end
    end
  end
  local slots = {}
  for s = 1, tonumber(ARGV[i]) do
    slots[s] = {ARGV[i + 1 + 2 * (s - 1)], tonumber(ARGV[i + 2 + 2 * (s - 1)])}
  end
  i = i + 1 + 2 * #slots
  local bkey = prefix .. 'backfill:' .. backfill
  if not bad and backfill ~= '' then
    if redis.call('EXISTS', bkey) == 0 then bad = 'backfill:' .. backfill end
    for _, slot in ipairs(slots) do
      if tonumber(redis.call('HGET', bkey, 'slot:' .. slot[1]) or '0') < slot[2] then
        bad = 'backfill:' .. backfill
      end
    end
  end
  local skey, total, top = nil, 0, now
  if bworld ~= '' then
    skey = prefix .. 'sent:' .. bworld .. ':' .. bzone
    redis.call('ZREMRANGEBYSCORE', skey, '-inf', '(' .. ARGV[8])
    local last = redis.call('ZRANGE', skey, -1, -1, 'WITHSCORES')
    if #last > 0 then
      total = tonumber(string.match(last[1], '^(%d+):'))
      top = math.max(now, tonumber(last[2]))
    end
    if not bad and capacity ~= '' then
      local since = 0
      local first = redis.call('ZRANGEBYSCORE', skey, beat, '+inf', 'LIMIT', 0, 1)
      if #first > 0 then
        local cum, n = string.match(first[1], '^(%d+):(%d+):')
        since = total - tonumber(cum) + tonumber(n)
      end
      if zplayers + since + booked > tonumber(capacity) then bad = 'zone:' .. bzone end
    end
  end
  if bad then
    results[p] = bad
  else
    local ids = {}
    local mkey = prefix .. 'match:' .. match_id
    for _, ticket in ipairs(tickets) do
      local id = ticket[1]
      local key = prefix .. 'ticket:' .. id
      redis.call('ZREM', KEYS[1], id)
      local players = redis.call('HGET', key, 'p')
      redis.call('HSET', key, 's', 2, 'a', ticket[2])
      redis.call('PEXPIRE', key, retention)
      for player in string.gmatch(players, '[^\\31]+') do
        local pkey = prefix .. 'player:' .. player
        if redis.call('GET', pkey) == id then redis.call('DEL', pkey) end
        redis.call('SADD', mkey, player)
      end
      assigned[#assigned + 1] = id
      ids[#ids + 1] = id
    end
    if backfill ~= '' then
      local open = 0
      for _, slot in ipairs(slots) do
        redis.call('HINCRBY', bkey, 'slot:' .. slot[1], -slot[2])
      end
      local have = redis.call('HGET', bkey, 'tickets') or ''
      if have ~= '' then have = have .. ',' end
      redis.call('HSET', bkey, 'tickets', have .. table.concat(ids, ','))
      local fields = redis.call('HGETALL', bkey)
      for f = 1, #fields, 2 do
        if string.sub(fields[f], 1, 5) == 'slot:' then open = open + tonumber(fields[f + 1]) end
      end
      if open <= 0 then redis.call('SREM', prefix .. 'backfills:' .. ARGV[5], backfill) end
    end
    redis.call('EXPIRE', mkey, ARGV[6])
    if skey then
      redis.call('ZADD', skey, top, string.format('%015d:%d:%s', total + booked, booked, match_id))
      redis.call('PEXPIRE', skey, ARGV[9])
    end
    if izone ~= '' then
      redis.call('SET', prefix .. 'instance:' .. match_id, iworld .. ' ' .. izone, 'EX', ARGV[6])
      redis.call('XADD', prefix .. 'instances:' .. iworld, 'MAXLEN', '~', ARGV[10], '*',
                 'kind', 'create', 'match', match_id, 'zone', izone, 'mode', ARGV[5],
                 'request', request, 'at_ms', ARGV[1])
    end
    results[p] = 1
  end
end
if #assigned > 0 then redis.call('PUBLISH', ARGV[4], '2 ' .. table.concat(assigned, ' ')) end
return results
"""


# Reads what a matcher needs of many tickets in one command. ARGV: prefix, ids...
# Returns, per id, {request blob, ratings, state, owner's session} (nils if vanished).
READ = """
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HMGET', KEYS[i], 't', 'r', 's', 'o', 'tp')
end
return out
"""

# Scripts, not MULTI/EXEC, for what must be atomic: a cluster client runs each
# command queued in a transaction on a thread of its own (ZoneStore.send_many).

# Marks a replica alive. KEYS: replicas zset; ARGV: id, now ms, oldest ms kept.
# Returns the members seen since.
REPLICAS = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# Stores a backfill. KEYS: backfill hash, the mode's backfill set; ARGV: id, ttl s,
# then fields and values.
BACKFILL = """
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
"""

# Per zone's sent ZSET (KEYS), with ARGV its heartbeat's time: the newest entry
# and the oldest at or after that time (empty lists when none), in one snapshot.
SENT = """
local out = {}
for i = 1, #KEYS do
  out[i] = {redis.call('ZRANGE', KEYS[i], -1, -1),
            redis.call('ZRANGEBYSCORE', KEYS[i], ARGV[i], '+inf', 'LIMIT', 0, 1)}
end
return out
"""


class PlayerBusy(Exception):
    """A player of a new ticket already has an active one."""

    def __init__(self, player: str, ticket_id: str) -> None:
        super().__init__(f"player {player!r} already has an active ticket {ticket_id!r}")
        self.player = player
        self.ticket_id = ticket_id


@dataclass(frozen=True)
class Instance:
    """A new match's instance zone, to be created by the operator."""

    world: str
    zone: str
    # Assignment with the destination and every player, no tokens.
    request: bytes


@dataclass(frozen=True)
class Booking:
    """Players a match sends to an open-world zone, recorded for every replica. With
    a ``capacity`` the claim fails unless they fit: the zone's players at its last
    heartbeat, plus every replica's players booked from ``heartbeat_ms`` on (the
    heartbeat's time less the arrival grace), plus these."""

    world: str
    zone: str
    players: int
    capacity: int | None = None
    heartbeat_players: int = 0
    heartbeat_ms: float = 0.0


@dataclass(frozen=True)
class Claim:
    """A proposal ready to commit: every ticket with its final assignment."""

    match_id: str
    tickets: Sequence[tuple[str, bytes]]
    backfill_id: str = ""
    slots: Mapping[int, int] = field(default_factory=dict)
    instance: Instance | None = None
    booking: Booking | None = None


@dataclass
class Snapshot:
    """A replica's cache of the searching tickets of one mode (tickets never change
    while they search, so each is read from Redis once)."""

    mode: str
    tickets: dict[str, Candidate] = field(default_factory=dict)


class Store:
    """Ticket, rating, backfill and zone-registry access for the matchmaker (ratings
    are read from and written to ``records``, cached in Redis)."""

    def __init__(
        self,
        redis: Client,
        records: RatingRecords,
        *,
        ticket_ttl_s: float = 30.0,
        retention_s: float = 600.0,
    ):
        self.redis = redis
        self.records = records
        self.ttl_ms = int(ticket_ttl_s * 1000)
        self.retention_ms = int(retention_s * 1000)
        self._create = redis.register_script(CREATE)
        self._heartbeat = redis.register_script(HEARTBEAT)
        self._end = redis.register_script(END)
        self._claim = redis.register_script(CLAIM)
        self._read = redis.register_script(READ)
        self._cache = redis.register_script(CACHE)
        self._replicas = redis.register_script(REPLICAS)
        self._backfill = redis.register_script(BACKFILL)
        self._sent = redis.register_script(SENT)

    @staticmethod
    def ticket_key(ticket_id: str) -> str:
        return f"{PREFIX}ticket:{ticket_id}"

    @staticmethod
    def pool_key(mode: str) -> str:
        return f"{PREFIX}pool:{mode}"

    @staticmethod
    def player_key(player: str) -> str:
        return f"{PREFIX}player:{player}"

    @staticmethod
    def ratings_key(mode: str) -> str:
        return f"{PREFIX}ratings:{mode}"

    @staticmethod
    def backfill_key(backfill_id: str) -> str:
        return f"{PREFIX}backfill:{backfill_id}"

    @staticmethod
    def backfills_key(mode: str) -> str:
        return f"{PREFIX}backfills:{mode}"

    @staticmethod
    def instance_key(match_id: str) -> str:
        return f"{PREFIX}instance:{match_id}"

    @staticmethod
    def sent_key(world: str, zone: str) -> str:
        return f"{PREFIX}sent:{world}:{zone}"

    events_channel = PREFIX + "events"
    replicas_key = PREFIX + "replicas"

    async def replicas(self, replica_id: str, now_ms: float, ttl_ms: float) -> list[str]:
        """Mark this replica alive; the ids of all replicas seen within ``ttl_ms``, sorted."""
        members = await self._replicas(
            keys=[self.replicas_key], args=[replica_id, now_ms, now_ms - ttl_ms]
        )
        return sorted(_text(m) for m in members)

    async def leave(self, replica_id: str) -> None:
        """Stop counting this replica (its share passes to the others at once)."""
        await self.redis.zrem(self.replicas_key, replica_id)

    async def create(
        self, ticket: pb.Ticket, now_ms: float, session_id: str = "", traceparent: str = ""
    ) -> pb.Ticket:
        """Store a new searching ticket created in the owner's session ``session_id``
        (and the trace of its creation); raise PlayerBusy if a player has one already.

        One EVALSHA round trip (a pipeline would add a SCRIPT EXISTS round trip per
        call); ``ticket`` itself becomes the stored ticket and is returned.
        """
        expires = int(now_ms) + self.ttl_ms
        keys, args = self._create_call(ticket, expires, now_ms, session_id, traceparent)
        result = await self._create(keys=keys, args=args)
        # Uncached ratings: fill the cache and try again (a flush may race the fill).
        for _ in range(3):
            if not _uncached(result):
                return _created(ticket, result, expires)
            await self._fill_cache(ticket.mode, _uncached(result))
            result = await self._create(keys=keys, args=args)
        raise RuntimeError(f"ratings of mode {ticket.mode!r} could not be cached in Redis")

    async def create_many(
        self, tickets: Sequence[pb.Ticket], now_ms: float, sessions: Sequence[str] = ()
    ) -> list[pb.Ticket | PlayerBusy]:
        """Store new searching tickets in one round trip (each one atomically), with
        their players' current ratings; a ticket with a busy player is not stored."""
        expires = int(now_ms) + self.ttl_ms
        calls = [
            self._create_call(t, expires, now_ms, sessions[i] if i < len(sessions) else "", "")
            for i, t in enumerate(tickets)
        ]
        results = await self._create_all(calls)
        # Tickets whose players' ratings were not cached: fill the cache, run again.
        again = [i for i, result in enumerate(results) if _uncached(result)]
        if again:
            missing: dict[str, set[str]] = {}
            for i in again:
                missing.setdefault(tickets[i].mode, set()).update(_uncached(results[i]))
            for mode, players in missing.items():
                await self._fill_cache(mode, sorted(players))
            retried = await self._create_all([calls[i] for i in again])
            for i, result in zip(again, retried, strict=True):
                results[i] = result
        out: list[pb.Ticket | PlayerBusy] = []
        for i, (ticket, result) in enumerate(zip(tickets, results, strict=True)):
            created = pb.Ticket()
            created.CopyFrom(ticket)
            try:
                if _uncached(result):  # the cache was flushed again meanwhile
                    session = sessions[i] if i < len(sessions) else ""
                    out.append(await self.create(created, now_ms, session))
                else:
                    out.append(_created(created, result, expires))
            except PlayerBusy as busy:
                out.append(busy)
        return out

    async def _create_all(self, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run :data:`CREATE` once per (keys, args) in one pipelined round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await queue_script(pipe, self._create, keys, args)
            return list(await pipe.execute())

    async def _fill_cache(self, mode: str, players: Sequence[str]) -> None:
        """Cache the players' ratings from the records (the default for new players)."""
        await self._cache_ratings(mode, await self.records.ratings(mode, players))

    async def _cache_ratings(self, mode: str, ratings: Mapping[str, Versioned]) -> None:
        if ratings:
            args = [item for p, v in ratings.items() for item in (p, _cached(v))]
            await self._cache(keys=[self.ratings_key(mode)], args=args)

    def _create_call(
        self, ticket: pb.Ticket, expires: int, now_ms: float, session_id: str, traceparent: str
    ) -> tuple[list[str], list[Any]]:
        """Keys and arguments of the :data:`CREATE` script for one ticket."""
        players = [p.player_id for p in ticket.players]
        keys = [
            self.ticket_key(ticket.id),
            self.pool_key(ticket.mode),
            self.ratings_key(ticket.mode),
            *(self.player_key(p) for p in players),
        ]
        args: list[Any] = [
            ticket.id,
            ticket.SerializeToString(),
            SEP.join(players),
            expires,
            int(now_ms),
            self.retention_ms,
            PREFIX,
            session_id,
            traceparent,
        ]
        return keys, args

    async def get(self, ticket_id: str, now_ms: float) -> pb.Ticket | None:
        """The ticket with its current state (EXPIRED once past its expiry), or None."""
        raw = await self.redis.hmget(self.ticket_key(ticket_id), ["t", "s", "e", "a"])
        return _ticket(raw, now_ms)

    async def get_many(self, ticket_ids: Sequence[str], now_ms: float) -> list[pb.Ticket | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for ticket_id in ticket_ids:
                pipe.hmget(self.ticket_key(ticket_id), ["t", "s", "e", "a"])
            rows = await pipe.execute()
        return [_ticket(raw, now_ms) for raw in rows]

    async def heartbeat(self, ticket: pb.Ticket, now_ms: float) -> pb.Ticket | None:
        """Extend a searching ticket's life; the ticket as it is now (None if gone)."""
        await self._heartbeat(
            keys=[self.ticket_key(ticket.id), self.pool_key(ticket.mode)],
            args=[ticket.id, int(now_ms), self.ttl_ms, self.retention_ms, PREFIX],
        )
        return await self.get(ticket.id, now_ms)

    async def cancel(self, ticket: pb.Ticket, now_ms: float) -> pb.Ticket | None:
        """Cancel a searching ticket (no effect on an ended one); the ticket as it is now."""
        await self._end(
            keys=[self.pool_key(ticket.mode)],
            args=[
                CANCELLED,
                int(now_ms),
                self.retention_ms,
                PREFIX,
                self.events_channel,
                0,
                ticket.id,
            ],
        )
        return await self.get(ticket.id, now_ms)

    async def expire(self, mode: str, now_ms: float, limit: int = 1000) -> int:
        """Mark up to ``limit`` tickets of the mode's pool past their expiry EXPIRED."""
        ended = await self._end(
            keys=[self.pool_key(mode)],
            args=[EXPIRED, int(now_ms), self.retention_ms, PREFIX, self.events_channel, limit],
        )
        return len(ended)

    async def searching(
        self, snapshot: Snapshot, now_ms: float, limit: int = 20_000
    ) -> list[Candidate]:
        """The mode's searching, unexpired tickets (at most ``limit``, soonest to expire
        first); only tickets not seen before are read in full."""
        raw: Any = await self.redis.zrangebyscore(
            self.pool_key(snapshot.mode), int(now_ms), "+inf", start=0, num=limit
        )
        ids = [i.decode() for i in raw]
        known = snapshot.tickets
        fresh = [i for i in ids if i not in known]
        for start in range(0, len(fresh), 5000):
            chunk = fresh[start : start + 5000]
            rows = await self._read(keys=[self.ticket_key(i) for i in chunk])
            for ticket_id, (blob, mus, state, session, tp) in zip(chunk, rows, strict=True):
                if blob is None or state is None or int(state) != SEARCHING:
                    continue
                ticket = pb.Ticket.FromString(blob)
                ratings = tuple(float(m) for m in mus.split(b","))
                known[ticket_id] = candidate(
                    ticket, ratings, _text(session or b""), _text(tp or b"")
                )
        alive = set(ids)
        for ticket_id in [i for i in known if i not in alive]:
            del known[ticket_id]
        return [known[i] for i in ids if i in known]

    async def claim(self, mode: str, claims: Sequence[Claim], now_ms: float) -> list[str | None]:
        """Commit proposals of one mode, each all-or-nothing: None for a claimed one,
        else the id of the ticket (or ``backfill:<id>``) that was no longer available,
        or ``zone:<zone>`` when its booked zone had no room left."""
        if not claims:
            return []
        args: list[Any] = [
            int(now_ms),
            self.retention_ms,
            PREFIX,
            self.events_channel,
            mode,
            MATCH_TTL_S,
            len(claims),
            int(now_ms) - SENT_WINDOW_MS,
            SENT_WINDOW_MS,
            INSTANCES_MAXLEN,
        ]
        for c in claims:
            i, b = c.instance, c.booking
            args += [c.match_id, c.backfill_id]
            args += [i.world, i.zone, i.request] if i else ["", "", b""]
            if b is None:
                args += ["", "", 0, 0, 0, ""]
            else:
                capacity = "" if b.capacity is None else b.capacity
                args += [b.world, b.zone, b.players, b.heartbeat_players]
                args += [repr(b.heartbeat_ms), capacity]
            args.append(len(c.tickets))
            for ticket_id, assignment in c.tickets:
                args += [ticket_id, assignment]
            args.append(len(c.slots))
            for team, n in c.slots.items():
                args += [team, n]
        results = await self._claim(keys=[self.pool_key(mode)], args=args)
        return [None if r == 1 else _text(r) for r in results]

    async def ratings(self, mode: str, players: Sequence[str]) -> list[rating.Rating]:
        """The players' ratings from the system of record."""
        found = await self.records.ratings(mode, players)
        return [found[p].rating for p in players]

    async def outsiders(self, match_id: str, players: Sequence[str]) -> list[str]:
        """Reported players this service did not assign to the match; empty when it has
        no record of the match (made elsewhere, or over a day ago)."""
        key = f"{PREFIX}match:{match_id}"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(key)
            pipe.smismember(key, list(players))
            exists, member = await pipe.execute()
        if not exists:
            return []
        return [p for p, known in zip(players, member, strict=True) if not known]

    async def apply_result(
        self,
        match_id: str,
        mode: str,
        teams: Sequence[Sequence[str]],
        ranks: Sequence[int],
        *,
        now_ms: float,
        roles: Sequence[Sequence[str]] = (),
        started_ms: int = 0,
    ) -> bool:
        """Rate a match once per match id (in the records, with each player's match
        history); False if it had been applied already. The first time, the new
        ratings are cached and a match played in an instance zone gets its ``end``
        entry on the world's instance stream. A one-team result (a cooperative mode)
        changes no rating."""
        new = await self.records.apply_result(
            match_id, mode, teams, ranks, now_ms=now_ms, roles=roles, started_ms=started_ms
        )
        if new is None:
            return False
        await self._cache_ratings(mode, new)
        instance = await self.redis.get(self.instance_key(match_id))
        if instance:
            world, _, zone = _text(instance).partition(" ")
            end = {"kind": "end", "match": match_id, "zone": zone, "at_ms": int(now_ms)}
            await self.redis.xadd(
                instances_stream(world),
                end,  # type: ignore[arg-type]
                maxlen=INSTANCES_MAXLEN,
                approximate=True,
            )
        return True

    async def history(self, player: str, *, before_id: int, limit: int) -> list[Participation]:
        """A page of the player's match history, newest first (from the records)."""
        return await self.records.history(player, before_id=before_id, limit=limit)

    async def create_backfill(self, backfill: pb.Backfill, *, ttl_s: int = 3600) -> None:
        base = pb.Backfill()
        base.CopyFrom(backfill)
        base.ClearField("open_slots")
        base.ClearField("ticket_ids")
        mapping: dict[Any, Any] = {"b": base.SerializeToString(), "tickets": ""}
        mapping.update({f"slot:{team}": n for team, n in backfill.open_slots.items()})
        args: list[Any] = [backfill.id, ttl_s]
        for name, value in mapping.items():
            args += [name, value]
        keys = [self.backfill_key(backfill.id), self.backfills_key(backfill.mode)]
        await self._backfill(keys=keys, args=args)

    async def get_backfill(self, backfill_id: str) -> pb.Backfill | None:
        return _backfill(await self.redis.hgetall(self.backfill_key(backfill_id)))

    async def open_backfills(self, mode: str) -> list[pb.Backfill]:
        """Backfills of the mode that still have open slots (vanished ones are dropped)."""
        ids = [_text(i) for i in await self.redis.smembers(self.backfills_key(mode))]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for backfill_id in ids:
                pipe.hgetall(self.backfill_key(backfill_id))
            rows = await pipe.execute()
        out = []
        for backfill_id, row in zip(ids, rows, strict=True):
            backfill = _backfill(row)
            if backfill is None:
                await self.redis.srem(self.backfills_key(mode), backfill_id)
                continue
            out.append(backfill)
        return out

    async def zone_loads(self, world: str) -> list[ZoneLoad]:
        """Heartbeats of the world's registered open-world zones, each with the players
        any replica sent there after it."""
        loads = zone_loads(await read_heartbeats(self.redis, world))
        if not loads:
            return []
        rows = await self._sent(
            keys=[self.sent_key(world, load.zone) for load in loads],
            args=[repr(load.counted_from_ms) for load in loads],
        )
        return [
            replace(load, sent=sent_since(last, first))
            for load, (last, first) in zip(loads, rows, strict=True)
        ]

    async def events(self) -> AsyncIterator[tuple[int, list[str]]]:
        """Ticket state changes published by any replica: (state, ticket ids)."""
        await follow_slot(self.redis, self.events_channel)
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.events_channel)
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                data: bytes = message["data"]
                state, *ids = data.decode().split(" ")
                yield int(state), ids
        finally:
            await pubsub.aclose()


def _uncached(result: Sequence[Any]) -> list[str]:
    """The players whose ratings a :data:`CREATE` call found uncached (none if it ran)."""
    return [_text(p) for p in result[1:]] if int(result[0]) == -1 else []


def _cached(versioned: Versioned) -> str:
    """A rating as the cache holds it: ``mu:sigma:version``."""
    mu, sigma = versioned.rating
    return f"{mu!r}:{sigma!r}:{versioned.version}"


def _created(ticket: pb.Ticket, result: Sequence[Any], expires: int) -> pb.Ticket:
    """``ticket`` marked searching until ``expires``, or PlayerBusy from the script's result."""
    if int(result[0]) != 0:
        player = ticket.players[int(result[0]) - 1].player_id
        raise PlayerBusy(player, _text(result[1]))
    ticket.state = SEARCHING
    ticket.expires_at_ms = float(expires)
    return ticket


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ticket(raw: Sequence[Any], now_ms: float) -> pb.Ticket | None:
    blob, state, expires, assignment = raw
    if blob is None or state is None or expires is None:
        return None
    ticket = pb.Ticket.FromString(blob)
    ticket.state = int(state)  # type: ignore[assignment]
    ticket.expires_at_ms = float(expires)
    if ticket.state == SEARCHING and ticket.expires_at_ms < now_ms:
        ticket.state = EXPIRED
    if assignment:
        ticket.assignment.ParseFromString(assignment)
    return ticket


def _backfill(row: Mapping[Any, Any]) -> pb.Backfill | None:
    if b"b" not in row:
        return None
    backfill = pb.Backfill.FromString(row[b"b"])
    for key, value in row.items():
        if key.startswith(b"slot:"):
            backfill.open_slots[int(key[5:])] = max(0, int(value))
    tickets = row.get(b"tickets", b"")
    backfill.ticket_ids.extend(t for t in _text(tickets).split(",") if t)
    return backfill


def sent_since(last: Sequence[bytes], first: Sequence[bytes]) -> int:
    """Players in a zone's sent ZSET from ``first`` (the oldest entry at or after a
    heartbeat, or none) to ``last`` (the newest entry, or none): running totals."""
    if not last or not first:
        return 0
    total = int(_text(last[0]).split(":", 1)[0])
    cum, n, _ = _text(first[0]).split(":", 2)
    return total - int(cum) + int(n)
