"""What the planner reads and remembers: the World's spec and policies, each
zone as observed, the matchmaker's instance requests, and the planner memory a
runtime keeps between calls. Plain frozen data, no behaviour beyond (de)serializing
the memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from tessera.wire.geometry import Rect


class Desired(StrEnum):
    """What the operator wants a zone to do (ZoneServer ``spec.desiredState``)."""

    ACTIVE = "Active"
    DRAINING = "Draining"
    STANDBY = "Standby"


class Phase(StrEnum):
    """What a zone is observed doing (ZoneServer ``status.phase``)."""

    PENDING = "Pending"
    STARTING = "Starting"
    READY = "Ready"
    DRAINING = "Draining"
    DRAINED = "Drained"
    FAILED = "Failed"


@dataclass(frozen=True)
class Policy:
    """Autoscaling policy (World ``spec.autoscaling``); defaults match the CRD."""

    enabled: bool = True
    mode: str = "Density"
    target_players: int = 200
    split_threshold: int = 300
    merge_threshold: int = 100
    split_window_s: float = 10.0
    merge_window_s: float = 60.0
    cooldown_s: float = 30.0
    min_zones: int = 1
    max_zones: int = 64
    min_zone_size: float = 100.0
    max_depth: int = 8


@dataclass(frozen=True)
class InstancePolicy:
    """Instance zone limits and timers (World ``spec.instances``); defaults match the CRD."""

    max_instances: int = 100
    start_timeout_s: float = 120.0
    idle_s: float = 30.0
    end_grace_s: float = 10.0
    max_lifetime_s: float = 3600.0


@dataclass(frozen=True)
class Rollout:
    """How zones are replaced when the zone template changes (World
    ``spec.rollout``); defaults match the CRD."""

    # Replacement zones started ahead of the handovers (extra zone pods at once,
    # draining zones included).
    max_surge: int = 1
    # Zones handing their players over at once (any draining open-world zone counts).
    max_unavailable: int = 1
    # Holds template replacements (zones on draining nodes are still replaced).
    paused: bool = False


@dataclass(frozen=True)
class WorldSpec:
    """What the planner needs of a World; defaults match the CRD."""

    name: str
    bounds: Rect
    policy: Policy = field(default_factory=Policy)
    layout: str = "Managed"
    standby: int = 0
    drain_timeout_s: float = 60.0
    replicas: int | None = None
    instances: InstancePolicy = field(default_factory=InstancePolicy)
    # The zone template's revision ("": unknown, nothing is out of date).
    revision: str = ""
    rollout: Rollout = field(default_factory=Rollout)


@dataclass(frozen=True)
class ZoneView:
    """One zone as observed: its spec (desired state, bounds, lineage) and its load."""

    name: str
    desired: Desired = Desired.ACTIVE
    bounds: Rect | None = None
    parent: str | None = None
    depth: int = 0
    split_depth: int = 0
    phase: Phase = Phase.PENDING
    players: int = 0
    # Player positions the heartbeat samples. The runtimes hand over the
    # heartbeat's own repeated fields (read only), not a copy: up to 512 floats
    # each, read only when the zone splits. Left out of equality, which would
    # otherwise depend on the sequence type holding them.
    sample_x: Sequence[float] = field(default=(), compare=False)
    sample_z: Sequence[float] = field(default=(), compare=False)
    managed: bool = True
    deleting: bool = False
    # The match id of an instance zone (None: an open-world zone).
    instance: str | None = None
    # When the zone was created (seconds since the epoch), if known.
    created: float | None = None
    # The revision of the zone template it runs.
    revision: str = ""
    # Its node is being drained (cordoned) or its pod is about to be evicted.
    evicting: bool = False
    # The zone's overload ladder rung (ZoneStatus.overload_level).
    overload_level: int = 0


@dataclass(frozen=True)
class InstanceRequest:
    """One entry of the matchmaker's instance stream of this world: ``create`` an
    instance zone for a match, or ``end`` it (the match result was reported)."""

    id: str
    kind: str
    match: str
    zone: str
    at: float
    players: tuple[str, ...] = ()
    # The match's game mode ("": not given, the instance runs the world's module).
    mode: str = ""


@dataclass(frozen=True)
class Memory:
    """What the planner remembers between calls (kept by the runtime, e.g. in the
    World's status, so a restarted or newly elected operator continues)."""

    next_id: int = 0
    over_since: Mapping[str, float] = field(default_factory=dict)
    under_since: Mapping[str, float] = field(default_factory=dict)
    cooldown_until: Mapping[str, float] = field(default_factory=dict)
    drain_since: Mapping[str, float] = field(default_factory=dict)
    # Instance zones: first seen with players, empty since, end requested at.
    joined: Mapping[str, float] = field(default_factory=dict)
    idle_since: Mapping[str, float] = field(default_factory=dict)
    end_at: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "nextId": self.next_id,
            "overSince": dict(self.over_since),
            "underSince": dict(self.under_since),
            "cooldownUntil": dict(self.cooldown_until),
            "drainSince": dict(self.drain_since),
            "instanceJoined": dict(self.joined),
            "instanceIdleSince": dict(self.idle_since),
            "instanceEndAt": dict(self.end_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> Memory:
        data = data or {}

        def floats(key: str) -> dict[str, float]:
            raw = data.get(key)
            if not isinstance(raw, Mapping):
                return {}
            return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)}

        next_id = data.get("nextId", 0)
        return cls(
            next_id=next_id if isinstance(next_id, int) else 0,
            over_since=floats("overSince"),
            under_since=floats("underSince"),
            cooldown_until=floats("cooldownUntil"),
            drain_since=floats("drainSince"),
            joined=floats("instanceJoined"),
            idle_since=floats("instanceIdleSince"),
            end_at=floats("instanceEndAt"),
        )
