"""Prometheus metrics of the operator (both runtimes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import Counter, Gauge, Histogram

from tessera.operator.planner.actions import Action, Delete, Drain, Rebound

ZONES = Gauge(
    "tessera_operator_zones",
    "Zones by world and phase.",
    ["world", "phase"],
)
SPLITS = Counter("tessera_operator_splits_total", "Zone splits carried out.", ["world"])
MERGES = Counter("tessera_operator_merges_total", "Zone merges carried out.", ["world"])
DECISIONS = Counter(
    "tessera_operator_decisions_total", "Planner actions carried out, by decision.", ["decision"]
)
PLANNER_SECONDS = Histogram(
    "tessera_operator_planner_duration_seconds",
    "Time spent in one planner call.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
DRAIN_SECONDS = Histogram(
    "tessera_operator_drain_duration_seconds",
    "From the drain order to the zone's removal.",
    ["forced"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
ZONES_OUTDATED = Gauge(
    "tessera_operator_zones_outdated",
    "Zones with bounds that run an old zone template (a rollout's remaining work), by world.",
    ["world"],
)
ZONE_RESTARTS = Counter(
    "tessera_operator_zone_restarts_total",
    "Zone processes the local runtime started again after they died.",
)
RECOMMENDED_ZONES = Gauge(
    "tessera_operator_recommended_zones",
    "Zones the open world's players need at targetPlayersPerZone (status.recommendedZones).",
    ["world"],
)
INSTANCES = Gauge(
    "tessera_operator_instances",
    "Instance zones by world (draining ones included).",
    ["world"],
)
INSTANCE_REQUESTS_WAITING = Gauge(
    "tessera_operator_instance_requests_waiting",
    "Instance create requests held back by maxInstances, by world.",
    ["world"],
)
INSTANCE_REQUESTS_DROPPED = Counter(
    "tessera_operator_instance_requests_dropped_total",
    "Instance stream entries acknowledged unused because they were malformed.",
)
RECONCILE_ERRORS = Counter(
    "tessera_operator_reconcile_errors_total",
    "Reconcile passes or steps that failed, by stage.",
    ["stage"],
)


def count(
    world: str, actions: Sequence[Action], drain_since: Mapping[str, float], now: float
) -> None:
    """Count carried-out actions: decisions, splits, merges, drain durations."""
    for action in actions:
        DECISIONS.labels(action.decision).inc()
        if isinstance(action, Delete) and action.zone in drain_since:
            DRAIN_SECONDS.labels(str(action.forced).lower()).observe(
                max(0.0, now - drain_since[action.zone])
            )
        if isinstance(action, Rebound) and action.decision == "Split":
            SPLITS.labels(world).inc()
        if isinstance(action, Drain) and action.decision == "Merge":
            MERGES.labels(world).inc()
