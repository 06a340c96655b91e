"""What a game module declares: components, systems, actions and events.

A studio's package exposes one :class:`Module` as its ``GAME`` attribute; the
zone imports it by name at start-up (:func:`load`). Every declaration is checked
when it is made, so a module that declares nonsense fails to import and the zone
never reports ready (docs/GAME.md).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tessera.game.errors import ModuleError
from tessera.game.rules import RULES_SYSTEM, Rules
from tessera.wire.snapshot import COMPONENTS_MAX, DTYPES, TIERS, Replicated

if TYPE_CHECKING:
    from tessera.game.view import Events, View

NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Component values travel as doubles (handoff, checkpoint, player data): every
# value of the DTYPES is exact in a double.
DEFAULT = "tessera.game.default"  # the module a world without spec.game.module runs


def _name(what: str, name: str) -> None:
    if not NAME.fullmatch(name):
        raise ModuleError(f"{what} name {name!r}: want {NAME.pattern}")


def _unique(what: str, names: list[str]) -> None:
    seen = {n for n in names if names.count(n) > 1}
    if seen:
        raise ModuleError(f"duplicate {what} {sorted(seen)}")


@dataclass(frozen=True)
class Replication:
    """How a component reaches clients: every snapshot carries its value for the
    entities at one of ``tiers`` from the client, as ``round(value / step)`` in
    ``bits`` bits (docs/protocol/snapshot.md, "Replicated components")."""

    step: float  # quantization step, in the component's unit
    bits: int  # 1..32 bits per quantized value
    tiers: tuple[str, ...] = TIERS  # the interest tiers that carry it

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step) and self.step > 0):
            raise ModuleError(f"replication step {self.step!r}: want a finite number > 0")
        if not 1 <= self.bits <= 32:
            raise ModuleError(f"replication bits {self.bits!r}: want 1..32")
        if not self.tiers or set(self.tiers) - set(TIERS):
            raise ModuleError(f"replication tiers {self.tiers!r}: want some of {TIERS}")


@dataclass(frozen=True)
class Component:
    """An extra per-entity column: one value of ``dtype`` per entity, ``default``
    for new entities; ``persist`` stores a player's value with their player data."""

    name: str
    dtype: str
    default: float = 0
    persist: bool = False
    replicate: Replication | None = None

    def __post_init__(self) -> None:
        _name("component", self.name)
        if self.dtype not in DTYPES:
            raise ModuleError(f"component {self.name}: dtype {self.dtype!r}, want {sorted(DTYPES)}")
        if not self.fits(self.default):
            raise ModuleError(
                f"component {self.name}: default {self.default!r} is not a {self.dtype}"
            )

    def fits(self, value: float) -> bool:
        """Whether ``value`` is a finite value this component can hold exactly."""
        if not math.isfinite(value):
            return False
        kind = np.dtype(self.dtype)
        if kind.kind in "biu":
            info = np.iinfo(np.int8 if kind.kind == "b" else kind)
            lo, hi = (0, 1) if kind.kind == "b" else (info.min, info.max)
            return float(value).is_integer() and lo <= value <= hi
        return kind == np.float64 or abs(value) <= float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class System:
    """A function run every tick over the zone's arrays, in declared order after the
    inputs and before movement: ``run(view, dt, events)``."""

    name: str
    run: Callable[[View, float, Events], None]

    def __post_init__(self) -> None:
        _name("system", self.name)
        if not callable(self.run):
            raise ModuleError(f"system {self.name}: run is not callable")


@dataclass(frozen=True)
class Argument:
    """A number an action carries, accepted within ``low..high`` (and whole when
    ``integer``)."""

    name: str
    low: float
    high: float
    integer: bool = False

    def __post_init__(self) -> None:
        _name("argument", self.name)
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ModuleError(f"argument {self.name}: want finite low <= high")


@dataclass(frozen=True)
class Action:
    """A game-defined player action: ``id`` on the wire, checked ``arguments``, and
    a ``handler(view, row, args, events)`` run in the tick's input phase. Each player
    may send ``rate_per_s`` of each action, saving up at most ``burst``."""

    id: int
    name: str
    handler: Callable[[View, int, Mapping[str, float], Events], None]
    arguments: tuple[Argument, ...] = ()
    rate_per_s: float = 5.0
    burst: float = 5.0

    def __post_init__(self) -> None:
        _name("action", self.name)
        if not 1 <= self.id <= 65535:
            raise ModuleError(f"action {self.name}: id {self.id!r}, want 1..65535")
        if not callable(self.handler):
            raise ModuleError(f"action {self.name}: handler is not callable")
        _unique(f"argument of action {self.name}", [a.name for a in self.arguments])
        if not (0 < self.rate_per_s <= 1000 and 1 <= self.burst <= 1000):
            raise ModuleError(
                f"action {self.name}: want 0 < rate_per_s <= 1000, 1 <= burst <= 1000"
            )


@dataclass(frozen=True)
class Module:
    """A game: its components, systems (in run order), actions, the names of the
    events it sends to players, and the ``rules`` of its matches in instance zones."""

    name: str
    components: tuple[Component, ...] = ()
    systems: tuple[System, ...] = ()
    actions: tuple[Action, ...] = ()
    events: tuple[str, ...] = ()
    rules: Rules | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or len(self.name) > 100:
            raise ModuleError(f"module name {self.name!r}: want 1..100 characters, no '/'")
        for what, items in (
            ("components", self.components),
            ("systems", self.systems),
            ("actions", self.actions),
        ):
            kind = {"components": Component, "systems": System, "actions": Action}[what]
            if not all(isinstance(i, kind) for i in items):
                raise ModuleError(f"module {self.name}: {what} must be {kind.__name__} values")
        for event in self.events:
            _name("event", event)
        _unique("components", [c.name for c in self.components])
        _unique("systems", [s.name for s in self.systems])
        _unique("action names", [a.name for a in self.actions])
        _unique("action ids", [str(a.id) for a in self.actions])
        _unique("events", list(self.events))
        if len(self.replicated) > COMPONENTS_MAX:
            raise ModuleError(
                f"module {self.name}: {len(self.replicated)} replicated components, "
                f"at most {COMPONENTS_MAX}"
            )
        if self.rules is not None and not isinstance(self.rules, Rules):
            raise ModuleError(f"module {self.name}: rules must be a Rules value")
        if self.rules is not None and RULES_SYSTEM in {s.name for s in self.systems}:
            raise ModuleError(f"module {self.name}: system name {RULES_SYSTEM!r} is the rules'")

    @property
    def replicated(self) -> tuple[Replicated, ...]:
        """The components snapshots carry, in declared order (their wire columns)."""
        return tuple(
            Replicated(c.name, c.dtype, c.replicate.step, c.replicate.bits, c.replicate.tiers)
            for c in self.components
            if c.replicate is not None
        )


def load(path: str) -> Module:
    """Import the module named ``path`` (the default module when empty) and return
    its ``GAME``; any failure is a :class:`ModuleError` naming the module."""
    path = path or DEFAULT
    try:
        found = importlib.import_module(path)
    except ModuleError as err:
        raise ModuleError(f"game module {path!r} declares something invalid: {err}") from err
    except Exception as err:
        raise ModuleError(f"game module {path!r} failed to import: {err!r}") from err
    game = getattr(found, "GAME", None)
    if not isinstance(game, Module):
        raise ModuleError(f"game module {path!r} has no GAME = tessera.game.Module(...)")
    return game
