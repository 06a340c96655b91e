"""A game module inside the tick (docs/GAME.md): its action handlers, then its
systems, each call with its errors contained.

An exception in a system or handler is logged (at most once per ``LOG_EVERY_S``
per system), counted, and the events the call sent are dropped; the tick goes on.
After ``disable_after`` consecutive failures the system (or the action) is
disabled for the zone's lifetime. Actions are checked against their declaration
and each player's token bucket when they arrive, and run in the next tick.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from tessera.game.module import Action, Module, System
from tessera.game.view import Events, View
from tessera.zone.entities import GHOST, PLAYER, Entities
from tessera.zone.events import GAME, Event
from tessera.zone.inputs import refill

log = logging.getLogger("tessera.zone.game")

LOG_EVERY_S = 10.0
# Why an action was dropped (tessera_zone_game_actions_total{outcome}).
UNKNOWN_PLAYER, UNKNOWN_ACTION, ARGUMENTS, RATE, DISABLED = (
    "unknown_player",
    "unknown_action",
    "arguments",
    "rate",
    "disabled",
)
# Counted by the zone's links: an action for a player its relay does not serve here.
NOT_ATTACHED = "not_attached"
ACTION_REASONS = (UNKNOWN_PLAYER, UNKNOWN_ACTION, ARGUMENTS, RATE, DISABLED, NOT_ATTACHED)


@dataclass(frozen=True)
class Request:
    """An accepted action waiting for the next tick."""

    entity_id: int
    action: Action
    args: dict[str, float]


def arguments(action: Action, values: Sequence[float]) -> dict[str, float] | None:
    """The named arguments of ``values`` when they match the declaration, else None."""
    if len(values) != len(action.arguments):
        return None
    out = {}
    for arg, value in zip(action.arguments, values, strict=True):
        v = float(value)
        if not (math.isfinite(v) and arg.low <= v <= arg.high):
            return None
        if arg.integer and not v.is_integer():
            return None
        out[arg.name] = v
    return out


class Game:
    """One zone's running module: pending actions, buckets, failure tallies."""

    def __init__(self, module: Module, *, disable_after: int) -> None:
        self.module = module
        self.disable_after = disable_after
        self.actions = {a.id: a for a in module.actions}
        self.declared = frozenset(module.events)
        self.pending: list[Request] = []
        self.buckets: dict[
            int, dict[int, tuple[float, float]]
        ] = {}  # entity -> action -> (tokens, at)
        self.failures: Counter[str] = Counter()  # consecutive, by part ("system:x", "action:y")
        self.disabled: set[str] = set()
        self._logged: dict[str, float] = {}

    @property
    def active(self) -> bool:
        """Whether a tick has anything of the module to run."""
        return bool(self.module.systems) or bool(self.pending)

    def submit(
        self,
        ents: Entities,
        *,
        player_id: str,
        action_id: int,
        values: Sequence[float],
        now_s: float,
        counts: Counter[str],
    ) -> str | None:
        """Check one action of a present player and queue it; returns the drop reason
        (counted) or None."""
        reason = self._check(ents, player_id, action_id, values, now_s=now_s)
        counts["game_action:" + (reason or "accepted")] += 1
        return reason

    def _check(
        self,
        ents: Entities,
        player_id: str,
        action_id: int,
        values: Sequence[float],
        *,
        now_s: float,
    ) -> str | None:
        eid = ents.players.get(player_id)
        if eid is None:
            return UNKNOWN_PLAYER
        action = self.actions.get(action_id)
        if action is None:
            return UNKNOWN_ACTION
        if "action:" + action.name in self.disabled:
            return DISABLED
        args = arguments(action, values)
        if args is None:
            return ARGUMENTS
        mine = self.buckets.setdefault(eid, {})
        tokens, at = mine.get(action_id, (action.burst, now_s))
        left = float(
            refill(
                np.float64(tokens),
                np.float64(at),
                now_s,
                rate=action.rate_per_s,
                burst=action.burst,
            )
        )
        if left < 1.0:
            mine[action_id] = (left, now_s)
            return RATE
        mine[action_id] = (left - 1.0, now_s)
        self.pending.append(Request(eid, action, args))
        return None

    def forget(self, entity_id: int) -> None:
        """An entity left: its buckets go (its queued actions are skipped)."""
        self.buckets.pop(entity_id, None)

    def run(
        self, ents: Entities, view: View, dt: float, out: list[Event], counts: Counter[str]
    ) -> None:
        """This tick's actions, then the systems in declared order."""
        pending, self.pending = self.pending, []
        for req in pending:
            row = ents.index.get(req.entity_id)
            if row is not None:
                call = partial(_handle, req.action.handler, view, row, req.args)
                self._call("action:" + req.action.name, call, ents, out, counts)
        for system in self.module.systems:
            self._call("system:" + system.name, partial(_tick, system, view, dt), ents, out, counts)

    def _call(
        self,
        part: str,
        call: Callable[[Events], None],
        ents: Entities,
        out: list[Event],
        counts: Counter[str],
    ) -> None:
        if part in self.disabled:
            return
        sink = Events(self.declared, lambda row: player_of(ents, row))
        try:
            call(sink)
        except Exception:
            self._failed(part, counts)
            return
        self.failures.pop(part, None)
        out.extend(Event(p, GAME, other, amount, name) for p, name, amount, other in sink.sent)

    def _failed(self, part: str, counts: Counter[str]) -> None:
        label = f"{self.module.name}/{part}"
        counts["game_error:" + label] += 1
        self.failures[part] += 1
        now = time.monotonic()
        if now - self._logged.get(part, -math.inf) >= LOG_EVERY_S:
            self._logged[part] = now
            log.exception(
                "game %s failed", part, extra={"game_module": self.module.name, "part": part}
            )
        if self.failures[part] >= self.disable_after:
            self.disabled.add(part)
            counts["game_disabled:" + label] += 1
            log.error(
                "game %s disabled after %d consecutive failures",
                part,
                self.failures[part],
                extra={"game_module": self.module.name, "part": part},
            )


def _handle(
    handler: Callable[[View, int, Mapping[str, float], Events], None],
    view: View,
    row: int,
    args: Mapping[str, float],
    events: Events,
) -> None:
    handler(view, row, args, events)


def _tick(system: System, view: View, dt: float, events: Events) -> None:
    system.run(view, dt, events)


def player_of(ents: Entities, row: int) -> str:
    """The player id at ``row`` when it is a player this zone owns, else ""."""
    if not 0 <= row < ents.n or ents.kind[row] != PLAYER or ents.flags[row] & GHOST:
        return ""
    extra = ents.extra.get(int(ents.id[row]))
    return extra.player_id if extra is not None else ""
