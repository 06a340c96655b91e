"""What the planner decides: the actions a runtime carries out (start a zone, give
a standby bounds, re-bound, drain, delete), the :class:`Plan` that holds them, and
:func:`advance`, the layout the actions lead to."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from tessera.operator.planner.model import Desired, Memory, ZoneView
from tessera.wire.geometry import Rect


@dataclass(frozen=True)
class CreateZone:
    """Start a new zone with these bounds (None: a warm standby); ``instance``:
    the match id of an instance zone, ``mode`` its match's game mode."""

    zone: str
    bounds: Rect | None
    parent: str | None
    depth: int
    split_depth: int
    decision: str
    reason: str
    instance: str | None = None
    mode: str = ""


@dataclass(frozen=True)
class AssignStandby:
    """Give a running standby zone bounds: it becomes an active zone."""

    zone: str
    bounds: Rect
    parent: str | None
    depth: int
    split_depth: int
    decision: str
    reason: str


@dataclass(frozen=True)
class Rebound:
    """Give an active zone new bounds (smaller on split, larger on merge)."""

    zone: str
    bounds: Rect
    depth: int
    decision: str
    reason: str


@dataclass(frozen=True)
class Adopt:
    """Make ``parent`` the zone ``zone`` was split from (its old parent was replaced)."""

    zone: str
    parent: str
    decision: str
    reason: str


@dataclass(frozen=True)
class Drain:
    """Stop joins and hand every entity to ``target`` (None: the owner by position)."""

    zone: str
    target: str | None
    decision: str
    reason: str


@dataclass(frozen=True)
class Delete:
    """Remove a drained (or timed-out, or standby) zone."""

    zone: str
    forced: bool
    decision: str
    reason: str


Action = CreateZone | AssignStandby | Rebound | Adopt | Drain | Delete


@dataclass(frozen=True)
class Plan:
    """Actions in the order to carry them out, notes on what was held back, the
    memory for the next call, and the ids of the instance requests this plan has
    taken care of (acknowledge them once its actions are carried out and its
    memory kept; the others must be given again)."""

    actions: tuple[Action, ...]
    notes: tuple[str, ...]
    memory: Memory
    done: tuple[str, ...] = ()


def advance(
    zones: Sequence[ZoneView], actions: Iterable[Action], revision: str = ""
) -> list[ZoneView]:
    """The zones after carrying out ``actions`` (load and phases unchanged; new
    zones start Pending, running the template ``revision``)."""
    out = {z.name: z for z in zones}
    for a in actions:
        if isinstance(a, CreateZone):
            desired = Desired.ACTIVE if a.bounds is not None else Desired.STANDBY
            out[a.zone] = ZoneView(
                a.zone,
                desired,
                a.bounds,
                a.parent,
                a.depth,
                a.split_depth,
                instance=a.instance,
                revision=revision,
            )
        elif isinstance(a, AssignStandby):
            out[a.zone] = replace(
                out[a.zone],
                desired=Desired.ACTIVE,
                bounds=a.bounds,
                parent=a.parent,
                depth=a.depth,
                split_depth=a.split_depth,
            )
        elif isinstance(a, Rebound):
            out[a.zone] = replace(out[a.zone], bounds=a.bounds, depth=a.depth)
        elif isinstance(a, Adopt):
            out[a.zone] = replace(out[a.zone], parent=a.parent)
        elif isinstance(a, Drain):
            out[a.zone] = replace(out[a.zone], desired=Desired.DRAINING)
        else:
            out.pop(a.zone, None)
    return sorted(out.values(), key=lambda z: z.name)
