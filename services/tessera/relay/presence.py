"""The relay's presence record and the release of orphaned players.

Every relay heartbeats itself and its players (player -> zone) to Redis. A relay
silent for longer than the grace period is taken over by one live relay, which
releases the zone entities of its players who did not come back (the zone's
``Leave`` naming the gone relay, refused for a player who joined again). A
restarted relay id takes over its previous run's record the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.exceptions import RedisError

from tessera.relay.metrics import Counters
from tessera.relay.placement import Placement
from tessera.relay.session import SessionTable
from tessera.relay.store import RelayStore

log = logging.getLogger(__name__)


class Presence:
    """This relay's presence record, and the orphans of relays that are gone."""

    def __init__(
        self,
        *,
        relay_id: str,
        public_address: str,
        grace_s: float,
        store: RelayStore,
        placement: Placement,
        sessions: SessionTable,
        counters: Counters,
    ) -> None:
        self.relay_id = relay_id
        self.public_address = public_address
        self.grace_s = grace_s
        self.store = store
        self.placement = placement
        self.sessions = sessions
        self.counters = counters
        # Session changes not yet in the record: player -> zone ("" = ended).
        self.changes: dict[str, str] = {}
        # Players of this relay id's previous run -> when to release them (Unix time);
        # None until that run's record has been taken over.
        self.leftovers: dict[str, float] | None = None

    async def keep(self, interval_s: float = 1.0) -> None:
        """Forever: heartbeat this relay and its players to Redis, and release the
        zone entities of players whose relay is gone (see :meth:`update`)."""
        while True:
            try:
                await self.update(time.time())
            except Exception:
                log.exception("presence update failed")
            await asyncio.sleep(interval_s)

    async def update(self, now: float) -> None:
        """One presence pass at ``now`` (Unix time): take over the record of this
        relay id's previous run (its players are released after the grace period
        unless they are back), heartbeat with the session changes, then release
        the players of every relay silent for longer than the grace period (one
        relay claims each). A released player's zone saves and drops the entity
        (``Leave`` naming the gone relay, refused if they joined again elsewhere)."""
        grace = self.grace_s
        own = self.relay_id
        if self.leftovers is None:
            previous = await self.store.take_relay_players(own)
            self.leftovers = {player: now + grace for player in previous}
        changes, self.changes = self.changes, {}
        try:
            await self.store.relay_alive(own, now, changes, self.public_address)
        except BaseException:
            self.changes = {**changes, **self.changes}
            raise
        for relay_id, seen in (await self.store.relays_seen()).items():
            if relay_id == own or now - seen <= grace:
                continue
            if not await self.store.claim_relay(relay_id, grace):
                continue
            players = await self.store.take_relay_players(relay_id)
            log.warning(
                "relay gone: releasing its players",
                extra={"relay": relay_id, "players": len(players), "silent_s": round(now - seen)},
            )
            await self._release_orphans(list(players), relay_id)
        due = [player for player, at in self.leftovers.items() if at <= now]
        for player in due:
            del self.leftovers[player]
        if due:
            await self._release_orphans(due, own)

    async def _release_orphans(self, players: list[str], relay_id: str) -> None:
        orphans = [p for p in players if p not in self.sessions.by_player]
        released = await asyncio.gather(
            *(self.placement.release_orphan(player, relay_id) for player in orphans)
        )
        self.counters.orphans_released += sum(released)

    async def keep_for_others(self, stopped: list[str], now: float) -> None:
        """At a stop: write the last changes but keep the players stopped here in the
        record, so if they do not connect again elsewhere within the grace period,
        another relay releases them."""
        for player in stopped:
            self.changes.pop(player, None)
        if self.changes:
            with contextlib.suppress(RedisError, OSError):
                await self.store.relay_alive(self.relay_id, now, self.changes)
            self.changes = {}
