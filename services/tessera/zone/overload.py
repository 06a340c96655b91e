"""Graceful overload: a ladder of cheaper snapshot settings while ticks run over budget.

Every tick's thread CPU time is compared with the tick budget (one period by
default). At the end of each window of ``window`` ticks the level moves one
rung: up when the window's 90th-percentile tick exceeds the budget, down when
it is back under ``down`` times the budget, otherwise it stays. The rungs, each
keeping the ones below it:

1. far tier refreshed half as often (``far_every`` doubled);
2. mid tier refreshed half as often (``mid_every`` doubled);
3. AOI cap at three quarters (the least important entities of full views drop out).

Ticks are never skipped by this: the simulation runs every tick and every
attached player gets every snapshot; only how fresh distant entities are and how
many a view holds change. Pure: the caller passes the CPU time in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from tessera.zone.interest import Tiers

LEVELS = ("normal", "far tier halved", "mid tier halved", "AOI cap 3/4")
TOP = len(LEVELS) - 1


@dataclass(frozen=True)
class Ladder:
    """When the level moves: per window of ticks, against the tick budget."""

    budget_s: float
    window: int = 30
    up_quantile: float = 90.0
    down: float = 0.7


def next_level(level: int, cpu_s: Sequence[float], ladder: Ladder) -> int:
    """The level after one window of tick CPU times: one rung up when the window's
    ``up_quantile`` exceeds the budget, one down when it is under ``down`` x budget."""
    if not cpu_s:
        return level
    q = float(np.percentile(np.asarray(cpu_s, np.float64), ladder.up_quantile))
    if q > ladder.budget_s:
        return min(level + 1, TOP)
    if q < ladder.down * ladder.budget_s:
        return max(level - 1, 0)
    return level


def degrade(tiers: Tiers, level: int) -> Tiers:
    """The AOI tiers in effect at ``level``."""
    if level >= 1:
        tiers = replace(tiers, far_every=tiers.far_every * 2)
    if level >= 2:
        tiers = replace(tiers, mid_every=tiers.mid_every * 2)
    if level >= 3:
        tiers = replace(tiers, cap=max(1, tiers.cap * 3 // 4))
    return tiers


class Governor:
    """Collects tick CPU times and moves the level at the end of each window."""

    def __init__(self, ladder: Ladder) -> None:
        self.ladder = ladder
        self.level = 0
        self._window: list[float] = []

    def add(self, cpu_s: float) -> int:
        """Record one tick; the level for the next tick."""
        self._window.append(cpu_s)
        if len(self._window) >= self.ladder.window:
            self.level = next_level(self.level, self._window, self.ladder)
            self._window = []
        return self.level
