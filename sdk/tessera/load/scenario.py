"""Scenarios: a script of phases every bot follows, read from YAML.

Positions are fractions of the world rectangle, so one file fits any world.
Each phase takes a share of the run; its ``pattern`` says where each bot walks:

- ``spread``: to the bot's own home point (uniform over the world), then mill
  around it within ``radius``;
- ``hotspot``: to ``center``, milling within ``radius``;
- ``border``: back and forth across the vertical line ``x`` (``radius`` either side);
- ``wander``: a random walk.

``logout`` (a fraction of all bots) makes the highest-numbered bots leave at the
phase start; ``churn`` (fraction of bots per second) makes bots log out and
connect again with a new session during the phase.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tessera.client.bot import Pattern, hotspot, random_walk, waypoints
from tessera.wire.geometry import Rect

PATTERNS = ("spread", "hotspot", "border", "wander")


class ScenarioError(ValueError):
    """A scenario file that does not describe a valid scenario."""


def parse_rect(text: str) -> Rect:
    """A world rectangle from ``minX,minZ,maxX,maxZ``."""
    try:
        a, b, c, d = (float(v) for v in text.split(","))
    except ValueError:
        raise ScenarioError(f"bounds {text!r}: expected minX,minZ,maxX,maxZ") from None
    if not (a < c and b < d):
        raise ScenarioError(f"bounds {text!r}: empty rectangle")
    return Rect(a, b, c, d)


@dataclass(frozen=True)
class Phase:
    """One step of a scenario."""

    name: str
    share: float
    pattern: str
    center: tuple[float, float] = (0.5, 0.5)
    radius: float = 0.05
    x: float = 0.5
    logout: float = 0.0
    churn: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """Phases, in order, with their shares normalised to sum to 1."""

    name: str
    phases: tuple[Phase, ...]
    description: str = ""

    def phase_index(self, fraction: float) -> int:
        """The phase running at ``fraction`` (0..1) of the run."""
        end = 0.0
        for i, phase in enumerate(self.phases):
            end += phase.share
            if fraction < end:
                return i
        return len(self.phases) - 1

    def starts(self) -> list[float]:
        """Each phase's start as a fraction of the run."""
        out, at = [], 0.0
        for phase in self.phases:
            out.append(at)
            at += phase.share
        return out

    def logged_out(self, fraction: float, bots: int, bot: int) -> bool:
        """Whether bot number ``bot`` of ``bots`` has logged out at ``fraction``."""
        leaving = 0.0
        for start, phase in zip(self.starts(), self.phases, strict=True):
            if start <= fraction:
                leaving = max(leaving, phase.logout)
        return bot >= bots - round(leaving * bots)


def _fraction(value: Any, what: str) -> float:
    if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ScenarioError(f"{what} must be a number in [0, 1], got {value!r}")
    return float(value)


def parse(obj: Any) -> Scenario:
    """A scenario from its YAML object; :class:`ScenarioError` names the bad field."""
    if not isinstance(obj, dict):
        raise ScenarioError("a scenario is a mapping with `name` and `phases`")
    raw_phases = obj.get("phases")
    if not isinstance(raw_phases, list) or not raw_phases:
        raise ScenarioError("`phases` must be a non-empty list")
    phases = []
    for i, raw in enumerate(raw_phases):
        where = f"phases[{i}]"
        if not isinstance(raw, dict):
            raise ScenarioError(f"{where} must be a mapping")
        unknown = set(raw) - {
            "name",
            "share",
            "pattern",
            "center",
            "radius",
            "x",
            "logout",
            "churn",
        }
        if unknown:
            raise ScenarioError(f"{where}: unknown fields {sorted(unknown)}")
        pattern = raw.get("pattern")
        if pattern not in PATTERNS:
            raise ScenarioError(f"{where}.pattern must be one of {PATTERNS}, got {pattern!r}")
        share = raw.get("share", 1.0)
        if not isinstance(share, int | float) or share <= 0:
            raise ScenarioError(f"{where}.share must be a positive number")
        center = raw.get("center", [0.5, 0.5])
        if not isinstance(center, list) or len(center) != 2:
            raise ScenarioError(f"{where}.center must be [x, z] fractions")
        phases.append(
            Phase(
                name=str(raw.get("name", pattern)),
                share=float(share),
                pattern=pattern,
                center=(
                    _fraction(center[0], where + ".center"),
                    _fraction(center[1], where + ".center"),
                ),
                radius=_fraction(raw.get("radius", 0.05), where + ".radius"),
                x=_fraction(raw.get("x", 0.5), where + ".x"),
                logout=_fraction(raw.get("logout", 0.0), where + ".logout"),
                churn=_fraction(raw.get("churn", 0.0), where + ".churn"),
            )
        )
    total = sum(p.share for p in phases)
    phases = [Phase(**{**p.__dict__, "share": p.share / total}) for p in phases]
    return Scenario(
        str(obj.get("name", "scenario")), tuple(phases), str(obj.get("description", ""))
    )


def load(path: Path) -> Scenario:
    """A scenario from a YAML file."""
    try:
        obj = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ScenarioError(f"{path}: {err}") from None
    return parse(obj)


def builtin(name: str) -> Path:
    """The path of a scenario shipped with the tool (``spread``, ``hotspot``, ...)."""
    return Path(__file__).parent / "scenarios" / f"{name}.yaml"


def resolve(name_or_path: str) -> Path:
    """A scenario file: an existing path, or the name of a built-in scenario."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = builtin(name_or_path)
    if shipped.exists():
        return shipped
    raise ScenarioError(f"no scenario file {name_or_path!r} (built-in: {sorted(names())})")


def names() -> list[str]:
    """Built-in scenario names."""
    return sorted(p.stem for p in (Path(__file__).parent / "scenarios").glob("*.yaml"))


def home(world: Rect, seed: int, bot: int) -> tuple[float, float]:
    """The bot's home point: uniform over the world (a 5 % margin), fixed per bot."""
    rng = random.Random(seed * 1_000_003 + bot)
    return world.at(rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95))


def pattern_for(phase: Phase, world: Rect, seed: int, bot: int) -> Pattern:
    """The movement pattern of bot ``bot`` during ``phase``."""
    radius_m = max(1.0, phase.radius * min(world.width, world.height))
    if phase.pattern == "spread":
        return hotspot(home(world, seed, bot), radius_m)
    if phase.pattern == "hotspot":
        return hotspot(world.at(*phase.center), radius_m)
    if phase.pattern == "border":
        x, _ = world.at(phase.x, 0.0)
        _, z = home(world, seed, bot)
        return waypoints([(x - radius_m, z), (x + radius_m, z)])
    return random_walk


def churn_due(rate_per_s: float, bots: int, dt_s: float, rng: random.Random) -> int:
    """How many bots to cycle in a step of ``dt_s`` at ``rate_per_s`` (fraction of
    bots per second); the fractional part is drawn at random."""
    expected = rate_per_s * bots * dt_s
    whole = math.floor(expected)
    return whole + (1 if rng.random() < expected - whole else 0)
