"""Game modes: team shape, roles, skill-window curve, regions and destination.

A mode is plain data. The set of modes comes from ``TESSERA_MM_MODES`` (a JSON
list, see docs/MATCHMAKING.md) or :data:`DEFAULT_MODES`; :func:`parse_modes`
validates it and names the offending entry when it is wrong.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tessera.wire.names import check_name

OPEN_WORLD = "open-world"
INSTANCE = "instance"


@dataclass(frozen=True)
class Curve:
    """A piecewise-linear function of waiting time (seconds), flat past its ends."""

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a curve needs at least one point")
        xs = [x for x, _ in self.points]
        if any(b <= a for a, b in itertools.pairwise(xs)):
            raise ValueError("curve points must have strictly increasing wait times")
        if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in self.points):
            raise ValueError("curve points must be finite")

    def __call__(self, wait_s: float) -> float:
        xs = [x for x, _ in self.points]
        i = bisect.bisect_right(xs, wait_s)
        if i == 0:
            return self.points[0][1]
        if i == len(self.points):
            return self.points[-1][1]
        (x0, y0), (x1, y1) = self.points[i - 1], self.points[i]
        return y0 + (y1 - y0) * (wait_s - x0) / (x1 - x0)


@dataclass(frozen=True)
class Mode:
    """How one game mode is matched and where its matches go."""

    name: str
    teams: int = 2
    team_size: int = 1
    # A match may start with fewer players (down to min_team_size per team) once
    # its oldest ticket has waited partial_after_s.
    min_team_size: int | None = None
    partial_after_s: float = 30.0
    max_party: int = 1
    # Per-team role counts, e.g. {"tank": 1, "healer": 1, "dps": 3}; empty = any.
    roles: Mapping[str, int] = field(default_factory=dict)
    # Acceptable |rating - anchor rating| (openskill mu units) by waiting time.
    skill_window: Curve = Curve(((0.0, 2.0), (10.0, 6.0), (30.0, 25.0)))
    # Regions: a ticket searches its lowest-latency region, and after
    # region_widen_after_s every region it accepts below max_latency_ms.
    region_widen_after_s: float = 10.0
    max_latency_ms: float = 150.0
    # String attributes that must be equal within a match (e.g. "map").
    match_attributes: tuple[str, ...] = ()
    # Number attributes that may differ by at most this much within a match
    # (e.g. {"level": 5}); a ticket without the attribute counts as 0.
    number_spreads: Mapping[str, float] = field(default_factory=dict)
    destination: str = OPEN_WORLD
    world: str = "main"
    zone_capacity: int = 200
    match_function: str = "teams"

    @property
    def players_per_match(self) -> int:
        return self.teams * self.team_size

    @property
    def min_players(self) -> int:
        return self.teams * (self.team_size if self.min_team_size is None else self.min_team_size)


DEFAULT_MODES: tuple[Mode, ...] = (
    Mode(name="duel", teams=2, team_size=1, max_party=1),
    Mode(name="5v5", teams=2, team_size=5, max_party=5),
    Mode(
        name="5v5-roles",
        teams=2,
        team_size=5,
        max_party=5,
        roles={"tank": 1, "healer": 1, "dps": 3},
    ),
    Mode(
        name="open-world",
        teams=1,
        team_size=4,
        min_team_size=1,
        partial_after_s=0.0,
        max_party=4,
        skill_window=Curve(((0.0, 1000.0),)),
    ),
)


def parse_modes(text: str) -> tuple[Mode, ...]:
    """Modes from their JSON form; raise ValueError naming the bad mode and key."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError("expected a non-empty JSON list of modes")
    modes = [mode_from_dict(item, index) for index, item in enumerate(raw)]
    names = [m.name for m in modes]
    if len(set(names)) != len(names):
        raise ValueError("mode names must be unique")
    return tuple(modes)


_KEYS = {
    "name",
    "teams",
    "team_size",
    "min_team_size",
    "partial_after_s",
    "max_party",
    "roles",
    "skill_window",
    "region_widen_after_s",
    "max_latency_ms",
    "match_attributes",
    "number_spreads",
    "destination",
    "world",
    "zone_capacity",
    "match_function",
}


def mode_from_dict(item: Any, index: int = 0) -> Mode:
    """One mode from a JSON object; raise ValueError naming the mode and the key."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ValueError(f"mode #{index}: expected an object with a string 'name'")
    name = item["name"]
    unknown = set(item) - _KEYS
    if unknown:
        raise ValueError(f"mode {name!r}: unknown keys {sorted(unknown)}")
    try:
        kwargs = dict(item)
        if "skill_window" in kwargs:
            kwargs["skill_window"] = Curve(
                tuple((float(x), float(y)) for x, y in kwargs["skill_window"])
            )
        if "match_attributes" in kwargs:
            kwargs["match_attributes"] = tuple(str(a) for a in kwargs["match_attributes"])
        if "number_spreads" in kwargs:
            kwargs["number_spreads"] = {
                str(k): float(v) for k, v in dict(kwargs["number_spreads"]).items()
            }
        if "roles" in kwargs:
            kwargs["roles"] = {str(k): int(v) for k, v in dict(kwargs["roles"]).items()}
        mode = Mode(**kwargs)
        check_mode(mode)
    except (TypeError, ValueError) as err:
        raise ValueError(f"mode {name!r}: {err}") from None
    return mode


def check_mode(mode: Mode) -> None:
    """Raise ValueError if the mode's numbers cannot produce a match."""
    if not mode.name or len(mode.name) > 64 or not mode.name.isprintable():
        raise ValueError("name must be 1-64 printable characters")
    if mode.teams < 1 or mode.team_size < 1:
        raise ValueError("teams and team_size must be >= 1")
    if mode.min_team_size is not None and not 1 <= mode.min_team_size <= mode.team_size:
        raise ValueError("min_team_size must be from 1 to team_size")
    if not 1 <= mode.max_party <= mode.team_size:
        raise ValueError("max_party must be from 1 to team_size")
    if mode.roles and (sum(mode.roles.values()) != mode.team_size or min(mode.roles.values()) < 1):
        raise ValueError("role counts must be >= 1 and add up to team_size")
    if mode.roles and mode.min_team_size not in (None, mode.team_size):
        raise ValueError("role-composed modes need full teams (no min_team_size)")
    if mode.destination not in (OPEN_WORLD, INSTANCE):
        raise ValueError(f"destination must be {OPEN_WORLD!r} or {INSTANCE!r}")
    check_name("world", mode.world)
    if mode.zone_capacity < 1:
        raise ValueError("zone_capacity must be >= 1")
    for value in (
        mode.partial_after_s,
        mode.region_widen_after_s,
        mode.max_latency_ms,
        *mode.number_spreads.values(),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError("times, latencies and spreads must be finite and >= 0")
