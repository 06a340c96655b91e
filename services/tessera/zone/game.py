"""A game module inside the tick (docs/GAME.md): its action handlers, then its
systems, and in an instance zone its match rules after combat, each call with its
errors contained.

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

from tessera.game.module import Action, Module, System
from tessera.game.rules import EVENTS, RULES_SYSTEM, Match, Member, Outcome, judge
from tessera.game.view import Events, View
from tessera.zone import kernels
from tessera.zone.entities import GHOST, PLAYER, Entities
from tessera.zone.events import DIED, GAME, Event

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
# The match rules are contained, counted and disabled as a system of this name.
RULES = "system:" + RULES_SYSTEM


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
    """One zone's running module: pending actions, buckets, failure tallies, and
    the match of an instance zone (``match_id``) whose module has rules."""

    def __init__(self, module: Module, *, disable_after: int, match_id: str = "") -> None:
        self.module = module
        self.disable_after = disable_after
        self.actions = {a.id: a for a in module.actions}
        self.match_id = match_id
        self.match = Match(module.rules) if module.rules and match_id else None
        self.declared = frozenset(module.events) | (frozenset(EVENTS) if self.match else set())
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
        # floats: a module may give ints, and each argument type is another compile
        left = kernels.refill(
            float(tokens), float(at), float(now_s), float(action.rate_per_s), float(action.burst)
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

    @property
    def outcome(self) -> Outcome | None:
        """How the match ended, once it has (None before, and outside instances)."""
        return self.match.outcome if self.match is not None else None

    def judge(self, ents: Entities, view: View, out: list[Event], counts: Counter[str]) -> None:
        """The match rules over this tick (its combat included): notices go to ``out``."""
        if self.match is not None and self.match.outcome is None:
            self._call(RULES, partial(self._judge, ents, view, list(out)), ents, out, counts)
            if self.outcome is not None:
                counts["game_match:" + self.outcome.reason] += 1

    def _judge(self, ents: Entities, view: View, told: list[Event], sink: Events) -> None:
        assert self.match is not None  # judge() checked
        present = {}
        for player, eid in ents.players.items():
            extra = ents.extra[eid]
            if extra.match_id == self.match_id:
                present[player] = Member(int(ents.team[ents.index[eid]]), extra.role)
        rules = self.match.rules
        notices = judge(
            self.match,
            now_s=view.now_s,
            present=present,
            kills=kills(ents, told, self.match_id),
            scored=rules.score(view) if rules.score is not None else None,
        )
        for n in notices:
            sink.send(ents.index[ents.players[n.player]], n.name, amount=n.amount, other=n.other)

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


def kills(ents: Entities, told: list[Event], match_id: str) -> dict[int, int]:
    """Kills per team in this tick's deaths: a match player killing another team's."""
    out: Counter[int] = Counter()
    for e in told:
        if e.kind != DIED:
            continue
        killer, victim = ents.index.get(e.other), ents.players.get(e.player_id)
        if killer is None or victim is None:
            continue
        extra = ents.extra.get(int(ents.id[killer]))
        team, victim_team = int(ents.team[killer]), int(ents.team[ents.index[victim]])
        if extra is not None and extra.match_id == match_id and team != victim_team:
            out[team] += 1
    return dict(out)


def player_of(ents: Entities, row: int) -> str:
    """The player id at ``row`` when it is a player this zone owns, else ""."""
    if not 0 <= row < ents.n or ents.kind[row] != PLAYER or ents.flags[row] & GHOST:
        return ""
    extra = ents.extra.get(int(ents.id[row]))
    return extra.player_id if extra is not None else ""
