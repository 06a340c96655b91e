"""Prometheus metrics of the zone (``tessera_zone_*``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from tessera.common.spool import SpoolMetrics
from tessera.zone.game import ACTION_REASONS
from tessera.zone.inputs import REASONS
from tessera.zone.simulation import Frame

PLAYERS = Gauge("tessera_zone_players", "Players owned by the zone")
ENTITIES = Gauge("tessera_zone_entities", "Entities (players and NPCs) owned by the zone")
TICK = Histogram(
    "tessera_zone_tick_duration_seconds",
    "Duration of one simulation tick",
    buckets=(0.001, 0.002, 0.004, 0.008, 0.012, 0.016, 0.025, 0.033, 0.05, 0.1, 0.25),
)
OVERLOADED = Gauge("tessera_zone_overloaded", "1 when the p99 tick exceeds the tick budget")
OVERLOAD_LEVEL = Gauge(
    "tessera_zone_overload_level",
    "Rung of the overload ladder (0 normal, 1 far tier halved, 2 mid too, 3 AOI cap 3/4)",
)
KERNELS_READY = Gauge(
    "tessera_zone_kernels_ready_seconds",
    "Start-up time spent loading (or compiling) the compiled tick kernels",
)
TICKS_SKIPPED = Counter("tessera_zone_ticks_skipped_total", "Tick slots skipped when late")
TICK_ERRORS = Counter("tessera_zone_tick_errors_total", "Ticks that raised")
AOI_PAIRS = Gauge("tessera_zone_aoi_pairs", "Viewer-entity pairs in this tick's snapshots")
AOI_CHANGES = Counter(
    "tessera_zone_aoi_changes_total", "Entities entering/leaving views", ["change"]
)
SNAPSHOT_BYTES = Counter("tessera_zone_snapshot_bytes_total", "Snapshot payload bytes produced")
SNAPSHOTS = Counter("tessera_zone_snapshots_total", "Snapshots produced", ["kind"])
INPUTS = Counter("tessera_zone_inputs_total", "Inputs accepted")
INPUTS_REJECTED = Counter("tessera_zone_inputs_rejected_total", "Inputs dropped", ["reason"])
for _reason in REASONS:  # every reason is exported from the start, at 0
    INPUTS_REJECTED.labels(_reason)
VIOLATIONS = Counter(
    "tessera_zone_violations_total",
    "Cheat-report tallies by reason, summed over players: speed_clamp (move intent "
    "scaled down to max speed), teleport (position step cut to max speed)",
    ["reason"],
)
# Simulation count -> reason; the per-player tallies are Extra.speed_clamps, .teleports.
VIOLATION_REASONS = {"speed_clamped": "speed_clamp", "teleport_rejected": "teleport"}
for _reason in VIOLATION_REASONS.values():
    VIOLATIONS.labels(_reason)
HITS = Counter("tessera_zone_hits_total", "Validated combat hits")
DEATHS = Counter("tessera_zone_deaths_total", "Entities killed")
CHECKPOINT = Histogram(
    "tessera_zone_checkpoint_duration_seconds",
    "Duration of one checkpoint round (all players, pipelined)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
CHECKPOINT_ERRORS = Counter("tessera_zone_checkpoint_errors_total", "Failed checkpoint rounds")
# The spools of tessera.zone.persistence (spool = player_data | events).
SPOOL_WRITTEN = Counter(
    "tessera_zone_spool_written_total", "Items written to PostgreSQL", ["spool"]
)
SPOOL_DROPPED = Counter(
    "tessera_zone_spool_dropped_total",
    "Items dropped because the spool was full (or a failed batch no longer fit)",
    ["spool"],
)
SPOOL_ERRORS = Counter("tessera_zone_spool_errors_total", "Failed batch writes", ["spool"])
SPOOL_BATCH = Histogram(
    "tessera_zone_spool_batch_seconds",
    "Duration of one batch write",
    ["spool"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)


def spool(name: str) -> SpoolMetrics:
    """The metric children of the zone's spool ``name``."""
    return SpoolMetrics(
        SPOOL_WRITTEN.labels(name),
        SPOOL_DROPPED.labels(name),
        SPOOL_ERRORS.labels(name),
        SPOOL_BATCH.labels(name),
    )


DATA_STALE = Counter(
    "tessera_zone_player_data_stale_total",
    "Player-data writes refused because the stored row has a newer version",
)
HANDOFFS = Counter(
    "tessera_zone_handoffs_total",
    "Handoffs this zone started, by result (committed, forced, refused, timeout, cas_failed, ...)",
    ["result"],
)
HANDOFF_DURATION = Histogram(
    "tessera_zone_handoff_duration_seconds",
    "PREPARE sent to routing switched, for committed handoffs",
    buckets=(
        0.001,
        0.002,
        0.003,
        0.004,
        0.005,
        0.0075,
        0.01,
        0.015,
        0.02,
        0.03,
        0.05,
        0.075,
        0.1,
        0.15,
        0.25,
        0.5,
        1.0,
    ),
)
ARRIVAL = Histogram(
    "tessera_zone_arrival_seconds",
    "A player handed to this zone, by phase: inbox (its COMMIT appended to this zone's"
    " inbox until adopted, Redis's clock to the zone's), pending (its relay's Attach"
    " waited for the COMMIT), unattached (the adopted player waited for its relay's Attach),"
    " first_snapshot (its relay's Attach until its first snapshot is queued on the link),"
    " self_attached (attached by the zone to its relay's link, no Attach yet, until then)",
    ["phase"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0, 2.5),
)
HANDOFFS_PENDING = Gauge("tessera_zone_handoffs_pending", "Handoffs started, not yet finished")
HANDOFFS_RECEIVED = Counter("tessera_zone_handoffs_received_total", "Entities handed to this zone")
INBOX = Counter("tessera_zone_inbox_messages_total", "Inbox messages handled, by kind", ["kind"])
DRAINS = Counter("tessera_zone_drains_total", "Drains started")
DRAIN_REMAINING = Gauge("tessera_zone_drain_remaining", "Players still to hand away while draining")
RECOVERY = Histogram(
    "tessera_zone_recovery_duration_seconds",
    "Start-up restore of routed players from their checkpoints",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
GHOSTS = Gauge("tessera_zone_ghosts", "Ghosts (neighbours' entities) held by the zone")
GHOSTS_OUT = Counter("tessera_zone_ghosts_out_total", "Ghost rows published to neighbours")
GHOSTS_IN = Counter("tessera_zone_ghosts_in_total", "Ghost rows received and applied")
GHOST_BATCHES_REJECTED = Counter(
    "tessera_zone_ghost_batches_rejected_total", "Ghost batches that did not parse"
)
HITS_FORWARDED = Counter(
    "tessera_zone_hits_forwarded_total", "Hits on ghosts, by outcome", ["outcome"]
)
LINK_DROPS = Counter(
    "tessera_zone_link_dropped_total", "Messages not delivered to a slow relay link", ["what"]
)
LINK_ERRORS = Counter("tessera_zone_link_errors_total", "Bad link messages", ["reason"])
LINK_MESSAGES = Counter(
    "tessera_zone_link_messages_total", "Messages read from relay links", ["kind"]
)
HELD_INPUTS = Counter(
    "tessera_zone_held_input_batches_total",
    "Input batches a relay held for a tick: read before that tick ran (on_time) or after (late)",
    ["outcome"],
)

SYNTHETIC_SNAPSHOTS = Counter(
    "tessera_zone_synthetic_snapshots_total",
    "Snapshots encoded for synthetic players (counted, never sent)",
)
SYNTHETIC_BYTES = Counter(
    "tessera_zone_synthetic_snapshot_bytes_total",
    "Bytes of the snapshots encoded for synthetic players (counted, never sent)",
)
# The game module (docs/GAME.md, "Errors").
GAME_SYSTEM_ERRORS = Counter(
    "tessera_zone_game_system_errors_total",
    "Calls of a game module's system that raised",
    ["module", "system"],
)
GAME_ACTION_ERRORS = Counter(
    "tessera_zone_game_action_errors_total",
    "Calls of a game module's action handler that raised",
    ["module", "action"],
)
GAME_DISABLED = Gauge(
    "tessera_zone_game_disabled",
    "1 for a game system (kind=system) or action (kind=action) disabled after repeated failures",
    ["module", "kind", "name"],
)
GAME_ACTIONS = Counter(
    "tessera_zone_game_actions_total",
    "Game actions received, by outcome: accepted, or the reason they were dropped",
    ["outcome"],
)
for _outcome in ("accepted", *ACTION_REASONS):
    GAME_ACTIONS.labels(_outcome)
# An instance zone's match (docs/GAME.md, "Rules").
MATCHES_ENDED = Counter(
    "tessera_zone_matches_ended_total",
    "Matches this instance zone's rules ended, by reason: score or time",
    ["reason"],
)
MATCH_RESULTS = Counter(
    "tessera_zone_match_results_total",
    "Match result reports to matchmaking, by outcome: reported, duplicate (already"
    " recorded), retried (an attempt failed, tried again) or rejected (refused for good)",
    ["outcome"],
)
for _outcome in ("reported", "duplicate", "retried", "rejected"):
    MATCH_RESULTS.labels(_outcome)
REPLICATION_CLAMPED = Counter(
    "tessera_zone_replication_clamped_total",
    "Replicated component values that did not fit their bits (clamped, NaN sent as 0),"
    " counted once per entity and snapshot tick",
    ["component"],
)
_GAME_ERRORS = {"system": GAME_SYSTEM_ERRORS, "action": GAME_ACTION_ERRORS}

_COUNTS = {
    "hits": HITS,
    "deaths": DEATHS,
    "synthetic_snapshots": SYNTHETIC_SNAPSHOTS,
    "synthetic_bytes": SYNTHETIC_BYTES,
}


def observe(frame: Frame, counts: dict[str, int], *, players: int, entities: int) -> None:
    """Record one tick's frame and the simulation's accumulated counters (then cleared)."""
    PLAYERS.set(players)
    ENTITIES.set(entities)
    AOI_PAIRS.set(frame.aoi_pairs)
    OVERLOAD_LEVEL.set(frame.overload_level)
    batch = frame.batch
    SNAPSHOT_BYTES.inc(batch.bytes_total)
    full = int(batch.full.sum())
    SNAPSHOTS.labels("full").inc(full)
    SNAPSHOTS.labels("delta").inc(batch.full.size - full)
    AOI_CHANGES.labels("enter").inc(batch.entered)
    AOI_CHANGES.labels("leave").inc(batch.left)
    for key, value in counts.items():
        if key.startswith("drop:"):
            INPUTS_REJECTED.labels(key[5:]).inc(value)
        elif key == "accepted":
            INPUTS.inc(value)
        elif key in VIOLATION_REASONS:
            VIOLATIONS.labels(VIOLATION_REASONS[key]).inc(value)
        elif key in _COUNTS:
            _COUNTS[key].inc(value)
        elif key.startswith("game_match:"):
            MATCHES_ENDED.labels(key[11:]).inc(value)
        elif key.startswith("game_action:"):
            GAME_ACTIONS.labels(key[12:]).inc(value)
        elif key.startswith("replication_clamped:"):
            REPLICATION_CLAMPED.labels(key[20:]).inc(value)
        elif key.startswith(("game_error:", "game_disabled:")):
            what, label = key.split(":", 1)
            module, part = label.rsplit("/", 1)
            kind, name = part.split(":", 1)
            if what == "game_error":
                _GAME_ERRORS[kind].labels(module, name).inc(value)
            else:
                GAME_DISABLED.labels(module, kind, name).set(1)
