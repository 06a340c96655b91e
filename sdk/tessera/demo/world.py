"""The demo's World resource and timings, sized to the number of bots (pure).

Zones run at the zone's defaults (30 Hz, a snapshot every tick, the default
interest tiers and AOI cap); only what a 2 km world crossed within a few minutes
needs (players' top speed, faster heartbeats) is set, plus NPCs. The open world
plays the resources example module, arena instances the arena module (its time
limit sized to the run, so a match ends by the rules within it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The game modules the demo plays: the open world's and the arena mode's.
RESOURCES_MODULE = "tessera.examples.resources"
ARENA_MODULE = "tessera.examples.arena"
ARENA_MODE = "arena"
ARENA_WIN_KILLS = 3.0


@dataclass(frozen=True)
class DemoSettings:
    """Every knob of a demo run."""

    bots: int = 100  # what this 2-core machine carries at real settings: docs/DEMO.md
    duration_s: float = 150.0
    world_m: float = 2000.0
    max_speed: float = 50.0
    tick_hz: int = 30  # the zone's default; the budget is 1000 / tick_hz ms
    processes: int = 2
    input_hz: float = 30.0  # a real client sends one input per tick
    npcs_per_zone: int = 100

    @property
    def arena_time_limit_s(self) -> float:
        """An arena match's time limit: a quarter of the run, 10 to 90 s."""
        return min(90.0, max(10.0, round(0.25 * self.duration_s)))

    @property
    def tick_budget_ms(self) -> float:
        return 1000.0 / self.tick_hz

    @property
    def split_threshold(self) -> int:
        """A zone holding more than 60 % of the bots splits."""
        return max(3, math.ceil(0.6 * self.bots))

    @property
    def merge_threshold(self) -> int:
        """A sibling pair holding fewer than 55 % of the bots merges."""
        return max(1, min(self.split_threshold - 2, math.floor(0.55 * self.bots)))

    @property
    def target(self) -> int:
        return (self.split_threshold + self.merge_threshold) // 2

    @property
    def split_window_s(self) -> float:
        return max(2.0, round(0.02 * self.duration_s, 1))

    @property
    def merge_window_s(self) -> float:
        return max(3.0, round(0.04 * self.duration_s, 1))

    @property
    def cooldown_s(self) -> float:
        return max(5.0, round(0.06 * self.duration_s, 1))

    @property
    def bounds_text(self) -> str:
        return f"0,0,{self.world_m:g},{self.world_m:g}"


def world_resource(s: DemoSettings, name: str = "demo") -> dict[str, Any]:
    """The World the local runtime runs: one root zone, autoscaling on, one standby."""
    return {
        "apiVersion": "tessera.io/v1alpha1",
        "kind": "World",
        "metadata": {"name": name, "namespace": "local"},
        "spec": {
            "layout": "Managed",
            "bounds": {"minX": 0, "minZ": 0, "maxX": s.world_m, "maxZ": s.world_m},
            "game": {
                "module": RESOURCES_MODULE,
                "modes": {ARENA_MODE: {"module": ARENA_MODULE}},
            },
            "zoneTemplate": {
                "image": "local",
                "tickRate": s.tick_hz,
                "env": [
                    {"name": "TESSERA_MAX_SPEED_MPS", "value": f"{s.max_speed:g}"},
                    {"name": "TESSERA_HEARTBEAT_S", "value": "0.5"},
                    {"name": "TESSERA_CHECKPOINT_S", "value": "0.5"},
                    {"name": "TESSERA_MAP_POLL_S", "value": "0.1"},
                    {"name": "TESSERA_NPCS", "value": str(s.npcs_per_zone)},
                    {"name": "TESSERA_LOG_LEVEL", "value": "warning"},
                    # The arena module's parameters (read by arena instances only).
                    {"name": "TESSERA_ARENA_TIME_LIMIT_S", "value": f"{s.arena_time_limit_s:g}"},
                    {"name": "TESSERA_ARENA_WIN_KILLS", "value": f"{ARENA_WIN_KILLS:g}"},
                ],
            },
            "standby": 1,
            "drainTimeoutSeconds": 30,
            # Arena matches (see demo_modes) get instance zones that close soon
            # after their result, or when empty, handing anyone left back.
            "instances": {
                "maxInstances": 16,
                "startTimeoutSeconds": 30,
                "idleSeconds": 10,
                "endGraceSeconds": 2,
                "maxLifetimeSeconds": 300,
            },
            "autoscaling": {
                "enabled": True,
                "mode": "Density",
                "targetPlayersPerZone": s.target,
                "splitThreshold": s.split_threshold,
                "mergeThreshold": s.merge_threshold,
                "splitStabilizationSeconds": s.split_window_s,
                "mergeStabilizationSeconds": s.merge_window_s,
                "cooldownSeconds": s.cooldown_s,
                "minZones": 1,
                "maxZones": 8,
                "minZoneSize": 100,
                "maxDepth": 4,
            },
        },
    }


def demo_modes(world: str = "demo") -> list[dict[str, Any]]:
    """The matchmaker's modes in a demo: 1v1 duels in the open world (a zone with
    room) and 1v1 arena matches, each in an instance zone of its own."""
    return [
        {"name": "duel", "teams": 2, "team_size": 1, "world": world},
        {
            "name": ARENA_MODE,
            "teams": 2,
            "team_size": 1,
            "world": world,
            "destination": "instance",
        },
    ]
