"""Shared helpers of the planner tests: a world spec, ready zones, and a simulation
that moves a population of player positions around the world; each step every zone
observes the players inside its bounds (count and samples), new zones become Ready
after one step and draining zones report Drained after two, the planner plans and
:func:`advance` applies the plan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from hypothesis import strategies as st

from tessera.operator.planner.actions import Action, Plan, advance
from tessera.operator.planner.geometry import partition_errors
from tessera.operator.planner.model import Desired, Memory, Phase, Policy, WorldSpec, ZoneView
from tessera.operator.planner.rules import plan
from tessera.wire.geometry import Rect

WORLD = Rect(0, 0, 1024, 1024)
Point = tuple[float, float]


def spec(**policy: object) -> WorldSpec:
    standby = policy.pop("standby", 0)
    replicas = policy.pop("replicas", None)
    base = Policy(split_window_s=10, merge_window_s=30, cooldown_s=20, min_zone_size=64)
    return WorldSpec(
        "earth",
        WORLD,
        replace(base, **policy),  # type: ignore[arg-type]
        standby=int(standby),  # type: ignore[call-overload]
        drain_timeout_s=60,
        replicas=replicas,  # type: ignore[arg-type]
    )


def ready(name: str, bounds: Rect, players: int = 0, **kw: object) -> ZoneView:
    return ZoneView(name, Desired.ACTIVE, bounds, phase=Phase.READY, players=players, **kw)  # type: ignore[arg-type]


def kinds(actions: Sequence[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def siblings(players_a: int, players_b: int) -> list[ZoneView]:
    return [
        ready("earth-0", Rect(0, 0, 512, 1024), players_a, depth=1),
        ready(
            "earth-1", Rect(512, 0, 1024, 1024), players_b, parent="earth-0", depth=1, split_depth=1
        ),
    ]


def observe(zones: Sequence[ZoneView], players: Sequence[Point]) -> list[ZoneView]:
    """Fill each active zone's load from the positions inside its bounds."""
    out = []
    for z in zones:
        if z.desired == Desired.ACTIVE and z.bounds is not None:
            b = z.bounds
            inside = [
                (x, y) for x, y in players if b.min_x <= x < b.max_x and b.min_z <= y < b.max_z
            ]
            out.append(
                replace(
                    z,
                    players=len(inside),
                    sample_x=tuple(x for x, _ in inside[:512]),
                    sample_z=tuple(y for _, y in inside[:512]),
                )
            )
        else:
            out.append(z)
    return out


class Sim:
    """Zones, memory and a clock, stepped by plans."""

    def __init__(self, world: WorldSpec) -> None:
        self.world = world
        self.zones: list[ZoneView] = []
        self.memory = Memory()
        self.now = 0.0
        self.draining_steps: dict[str, int] = {}
        self.history: list[tuple[float, Action]] = []

    def step(self, players: Sequence[Point], dt: float = 1.0) -> Plan:
        self.now += dt
        lifecycle = []
        for zone in self.zones:
            z = replace(zone, phase=Phase.READY) if zone.phase == Phase.PENDING else zone
            if z.desired == Desired.DRAINING:
                n = self.draining_steps.get(z.name, 0) + 1
                self.draining_steps[z.name] = n
                z = replace(z, phase=Phase.DRAINED if n >= 2 else Phase.DRAINING, players=0)
            lifecycle.append(z)
        self.zones = observe(lifecycle, players)
        result = plan(self.world, self.zones, self.now, self.memory)
        self.memory = result.memory
        self.zones = advance(self.zones, result.actions)
        self.history += [(self.now, a) for a in result.actions]
        return result

    def active(self) -> list[ZoneView]:
        return [z for z in self.zones if z.desired == Desired.ACTIVE]

    def check(self) -> None:
        active = self.active()
        assert partition_errors(WORLD, [z.bounds for z in active if z.bounds]) == []
        assert all(z.bounds is not None for z in active)
        policy = self.world.policy
        assert len(active) <= policy.max_zones
        assert len(active) >= min(policy.min_zones, 1)
        for z in active:
            assert z.bounds is not None
            assert z.bounds.width >= policy.min_zone_size
            assert z.bounds.height >= policy.min_zone_size
            assert z.depth <= policy.max_depth


def crowd(n: int, x: float, z: float, spread: float = 10.0) -> list[Point]:
    """``n`` players on a small deterministic grid around (x, z)."""
    side = max(1, int(n**0.5))
    return [
        (x + spread * ((i % side) / side - 0.5), z + spread * ((i // side) / side - 0.5))
        for i in range(n)
    ]


def population(groups: Sequence[tuple[int, float, float, float]]) -> list[Point]:
    points: list[Point] = []
    for n, x, z, spread in groups:
        points += [
            (min(max(px, 0.0), 1023.9), min(max(pz, 0.0), 1023.9))
            for px, pz in crowd(n, x, z, spread)
        ]
    return points


crowds = st.lists(
    st.tuples(
        st.integers(0, 900),  # players
        st.floats(0, 1023, allow_nan=False),
        st.floats(0, 1023, allow_nan=False),
        st.floats(1, 400, allow_nan=False),  # spread
    ),
    min_size=0,
    max_size=4,
)


policies = st.fixed_dictionaries(
    {
        "min_zones": st.integers(1, 4),
        "max_zones": st.integers(4, 24),
        "standby": st.integers(0, 2),
        "min_zone_size": st.sampled_from([16, 64, 100, 333]),
        "max_depth": st.integers(1, 8),
    }
)
