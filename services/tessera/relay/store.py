"""The relay's only Redis access: routes, the zone map, zone heartbeats (through
the shared reader in tessera.common.store), the routes_changed and kicks
subscription, the
world's spent connect tokens and auth's revocation feed."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from tessera.authclient import store as auth_store
from tessera.common.store import (
    Client,
    WorldKeys,
    follow_slot,
    read_heartbeat,
    read_heartbeats,
)
from tessera.relay.routing import Route, parse_route, parse_route_change
from tessera.v1 import zone_pb2

log = logging.getLogger(__name__)


# KEYS: the player's resume key; ARGV: credential id. 1 if it was the current one (now used).
_SPEND_RESUME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


# KEYS: the player's resume key; ARGV: the session's current credential id, the new
# id, TTL ms. 1 if the session still holds the newest credential (or none is left).
_ROTATE_RESUME = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] or not current then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


# KEYS: the relay's players hash, the relays hash, the relay addresses hash; ARGV:
# relay id. The players (flat field/value list), with them and the relay removed.
_TAKE_RELAY = """
local players = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return players
"""


class RelayStore:
    """Reads of one world's routing state."""

    def __init__(self, redis: Client, world: str) -> None:
        self.redis = redis
        self.keys = WorldKeys(world)
        self._spend_resume = redis.register_script(_SPEND_RESUME)
        self._rotate_resume = redis.register_script(_ROTATE_RESUME)
        self._take_relay = redis.register_script(_TAKE_RELAY)

    async def route(self, player: str) -> Route | None:
        raw = await self.redis.hget(self.keys.routes, player)
        return _route_or_none(raw)

    async def routes(self, players: list[str]) -> dict[str, Route]:
        if not players:
            return {}
        values = await self.redis.hmget(self.keys.routes, players)
        found: dict[str, Route] = {}
        for player, raw in zip(players, values, strict=True):
            route = _route_or_none(raw)
            if route is not None:
                found[player] = route
        return found

    def spent_token_key(self, token_id: bytes) -> str:
        """STRING with a TTL: a connect token id spent by some relay of the world."""
        return self.keys.key("relay", "spent", token_id.hex())

    async def spend_token(self, token_id: bytes, ttl_s: float) -> bool:
        """Mark ``token_id`` spent for ``ttl_s`` (its remaining lifetime); False if
        some relay of the world spent it already (SET NX: atomic across replicas).
        The mark is this call's own nonce, so a retried SET whose first answer was
        lost finds its own mark and is not taken for a replay."""
        ttl_ms = max(1, int(ttl_s * 1000.0))
        mark = os.urandom(12)
        before = await self.redis.set(
            self.spent_token_key(token_id), mark, nx=True, px=ttl_ms, get=True
        )
        return before is None or before == mark

    async def unspend_token(self, token_id: bytes) -> None:
        """Make a token usable again (its session could not be opened)."""
        await self.redis.delete(self.spent_token_key(token_id))

    async def follow_revocations(
        self,
        *,
        revoke: Callable[[str, float], None],
        prune: Callable[[], None],
        ready: asyncio.Event,
    ) -> None:
        """Auth's revocation feed (:func:`tessera.authclient.store.follow_revocations`), forever."""
        await auth_store.follow_revocations(
            self.redis, revoke=revoke, prune=prune, ready=ready, clock=time.time
        )

    # -- resume credentials -------------------------------------------------

    def resume_key(self, player: str) -> str:
        """STRING with a TTL: the id of the player's newest resume credential."""
        return self.keys.key("relay", "resume", player)

    async def set_resume(self, player: str, credential_id: bytes, ttl_s: float) -> None:
        """Make ``credential_id`` the player's only usable credential (the previous
        one stops working)."""
        await self.redis.set(self.resume_key(player), credential_id, px=max(1, int(ttl_s * 1000)))

    async def rotate_resume(self, player: str, old: bytes, new: bytes, ttl_s: float) -> bool:
        """Replace the player's credential ``old`` with ``new``; False if another
        session of the player (a resume elsewhere, a new login) holds a newer one."""
        done = await self._rotate_resume(
            keys=[self.resume_key(player)], args=[old, new, max(1, int(ttl_s * 1000))]
        )
        return bool(done)

    async def resume_ids(self, players: list[str]) -> list[bytes | None]:
        """The id of each player's newest resume credential (None: none usable)."""
        if not players:
            return []
        values = await self.redis.mget([self.resume_key(p) for p in players])
        return [v if isinstance(v, bytes) else None for v in values]

    async def spend_resume(self, player: str, credential_id: bytes) -> bool:
        """Use ``credential_id`` if it is still the player's newest one (atomic
        compare-and-delete: once, on one relay)."""
        done = await self._spend_resume(keys=[self.resume_key(player)], args=[credential_id])
        return bool(done)

    async def restore_resume(self, player: str, credential_id: bytes, ttl_s: float) -> None:
        """Give back a spent credential whose resume could not open a session,
        unless a newer one exists already."""
        await self.redis.set(
            self.resume_key(player), credential_id, nx=True, px=max(1, int(ttl_s * 1000))
        )

    # -- relay presence (orphaned players of relays that are gone) ------------

    @property
    def relays_key(self) -> str:
        """HASH relay id -> Unix time of its last presence heartbeat."""
        return self.keys.key("relays")

    def relay_players_key(self, relay_id: str) -> str:
        """HASH player -> zone: the players the relay has a session for."""
        return self.keys.key("relay", relay_id, "players")

    @property
    def relay_addresses_key(self) -> str:
        """HASH relay id -> its public UDP address (where clients can move)."""
        return self.keys.key("relay", "addresses")

    async def relay_alive(
        self, relay_id: str, now: float, changes: dict[str, str], address: str = ""
    ) -> None:
        """Heartbeat ``relay_id`` (and its public address) and apply its session
        changes (player -> zone, or "" for a session that ended), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.relays_key, relay_id, repr(now))
        if address:
            pipe.hset(self.relay_addresses_key, relay_id, address)
        opened: dict[Any, Any] = {player: zone for player, zone in changes.items() if zone}
        ended = [player for player, zone in changes.items() if not zone]
        if opened:
            pipe.hset(self.relay_players_key(relay_id), mapping=opened)
        if ended:
            pipe.hdel(self.relay_players_key(relay_id), *ended)
        await pipe.execute()

    async def relay_addresses(self) -> dict[str, str]:
        raw: dict[Any, Any] = await self.redis.hgetall(self.relay_addresses_key)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def relays_seen(self) -> dict[str, float]:
        raw: dict[Any, Any] = await self.redis.hgetall(self.relays_key)
        return {_text(k): float(v) for k, v in raw.items()}

    async def claim_relay(self, relay_id: str, ttl_s: float) -> bool:
        """Become the one relay that releases ``relay_id``'s orphans (SET NX)."""
        key = self.keys.key("relay", relay_id, "reaper")
        return bool(await self.redis.set(key, b"1", nx=True, px=max(1, int(ttl_s * 1000))))

    async def take_relay_players(self, relay_id: str) -> dict[str, str]:
        """``relay_id``'s players, removing them and the relay (atomically, in one
        script: a cluster client's MULTI/EXEC is slow, see ``ZoneStore.send_many``)."""
        keys = [self.relay_players_key(relay_id), self.relays_key, self.relay_addresses_key]
        flat: list[Any] = await self._take_relay(keys=keys, args=[relay_id])
        return {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}

    async def zone_map(self) -> zone_pb2.ZoneMap | None:
        raw = await self.redis.get(self.keys.zone_map)
        return None if raw is None else zone_pb2.ZoneMap.FromString(_bytes(raw))

    async def zone_statuses(self) -> dict[str, zone_pb2.ZoneStatus]:
        """Heartbeats of the registered zones that are alive (key not expired), by name."""
        return await read_heartbeats(self.redis, self.keys.world)

    async def zone_status(self, zone: str) -> zone_pb2.ZoneStatus | None:
        """The zone's heartbeat; None when it has expired (the zone is not alive)."""
        return await read_heartbeat(self.redis, self.keys.world, zone)

    async def zone_address(self, zone: str) -> str | None:
        """The zone's address from its heartbeat, else from the zone map."""
        status = await self.zone_status(zone)
        if status is not None and status.address:
            return status.address
        zone_map = await self.zone_map()
        if zone_map is not None:
            for entry in zone_map.zones:
                if entry.zone == zone and entry.address:
                    return entry.address
        return None

    async def watch_routes(
        self,
        on_change: Callable[[str, Route | None, str], None],
        ready: asyncio.Event | None = None,
        *,
        on_kick: Callable[[str, str], object] | None = None,
    ) -> None:
        """Call ``on_change(player, route, traceparent)`` for every routes_changed
        notification (route None for a removal, traceparent '' when the change is
        not traced), and ``on_kick(player, reason)`` for every ``<player>|<reason>``
        on the world's ``kicks`` channel (the cheat policy's), forever,
        resubscribing after Redis errors."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await follow_slot(self.redis, self.keys.routes_changed)
                await pubsub.subscribe(self.keys.routes_changed)
                if on_kick is not None:
                    await pubsub.subscribe(self.keys.kicks)
                if ready is not None:
                    ready.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    if on_kick is not None and _text(message["channel"]) == self.keys.kicks:
                        player, _, reason = _text(message["data"]).partition("|")
                        on_kick(player, reason)
                        continue
                    try:
                        player, route, traceparent = parse_route_change(message["data"])
                    except ValueError:
                        log.warning("bad route change", extra={"data": repr(message["data"])})
                        continue
                    on_change(player, route, traceparent)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("route subscription lost; resubscribing", exc_info=True)
                await asyncio.sleep(0.5)
            finally:
                await pubsub.aclose()


def _route_or_none(raw: bytes | str | None) -> Route | None:
    if raw is None:
        return None
    try:
        return parse_route(raw)
    except ValueError:
        return None


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _bytes(raw: bytes | str) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw
