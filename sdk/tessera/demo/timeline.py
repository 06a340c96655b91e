"""What happened during a demo run, and the figures drawn from it (pure)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tessera.demo.monitor import RelaySample, ZoneSample


@dataclass
class Sample:
    """The world at one moment (``t`` seconds after the bots started)."""

    t: float
    phase: str
    zones: list[ZoneSample]
    bots_connected: int
    disconnects: int
    relay: RelaySample
    rtt_ms: float = 0.0

    @property
    def players(self) -> int:
        return sum(z.players for z in self.zones)


@dataclass
class Event:
    """A scaling decision (deduplicated: one per decision, not per action)."""

    t: float
    decision: str
    zone: str
    reason: str


@dataclass
class Scan:
    """One settled invariant scan."""

    t: float
    lost: list[str]
    duplicates: list[int]
    misrouted: list[str]
    # Zones that did not answer GetStatus in time (their players are not counted lost).
    unreachable: list[str] = field(default_factory=list)


@dataclass
class Timeline:
    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    scans: list[Scan] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def add_events(self, t: float, raw: list[dict[str, str]]) -> list[Event]:
        """Record new events; several actions of one decision share its reason."""
        new = []
        for r in raw:
            key = (r.get("decision", ""), r.get("reason", ""))
            if key in self._seen:
                continue
            self._seen.add(key)
            event = Event(t, key[0], r.get("zone", ""), key[1])
            self.events.append(event)
            new.append(event)
        return new

    def count(self, *decisions: str) -> int:
        return sum(1 for e in self.events if e.decision in decisions)

    @property
    def splits(self) -> int:
        return self.count("Split")

    @property
    def merges(self) -> int:
        return self.count("Merge")

    @property
    def drains_started(self) -> int:
        """Merges, deletions and instance ends: each sends a zone draining."""
        return self.count("Merge", "Delete", "InstanceEnd")

    @property
    def drains_finished(self) -> int:
        return self.count("Drained", "DrainTimeout")

    def rates(self) -> tuple[float, float]:
        """Relay packets/s and handoffs/s over the last two samples."""
        if len(self.samples) < 2:
            return 0.0, 0.0
        a, b = self.samples[-2], self.samples[-1]
        dt = max(1e-3, b.t - a.t)
        return (
            max(0, b.relay.packets - a.relay.packets) / dt,
            max(0, b.relay.reroutes - a.relay.reroutes) / dt,
        )

    def lost(self) -> set[str]:
        return {p for s in self.scans for p in s.lost}

    def duplicated(self) -> set[int]:
        return {e for s in self.scans for e in s.duplicates}


def tick_p99_per_zone(samples: list[Sample]) -> dict[str, float]:
    """The worst windowed tick p99 each zone reported while it simulated."""
    out: dict[str, float] = {}
    for s in samples:
        for z in s.zones:
            if z.state in ("ACTIVE", "DRAINING"):
                out[z.name] = round(max(out.get(z.name, 0.0), z.tick_p99_ms), 2)
    return dict(sorted(out.items()))


def tick_budget_per_zone(samples: list[Sample]) -> dict[str, float]:
    """Each simulating zone's tick budget, 1000 / tick_hz ms."""
    return {
        z.name: round(1000.0 / z.tick_hz, 2)
        for s in samples
        for z in s.zones
        if z.state in ("ACTIVE", "DRAINING")
    }


def over_budget(p99: dict[str, float], budget: dict[str, float]) -> list[str]:
    """Zones whose worst tick p99 exceeded their budget."""
    return [name for name, ms in p99.items() if ms > budget.get(name, float("inf"))]


def peak_npcs(samples: list[Sample]) -> int:
    """Most NPCs the open-world zones held at once."""
    return max(
        (sum(z.npcs for z in s.zones if z.state == "ACTIVE" and not z.instance) for s in samples),
        default=0,
    )


def bytes_per_player_s(samples: list[Sample]) -> float:
    """Relay traffic (both directions) per connected player-second."""
    total, player_s = 0, 0.0
    for a, b in itertools.pairwise(samples):
        total += max(0, b.relay.bytes - a.relay.bytes)
        player_s += (b.t - a.t) * (a.relay.sessions + b.relay.sessions) / 2
    return total / player_s if player_s else 0.0


def key_moments(tl: Timeline, most: int = 8, apart_s: float = 5.0) -> list[int]:
    """Sample indices worth a picture, at least ``apart_s`` apart: each split and
    merge once it has settled (4 s later), the end, the swarm fully connected,
    the peak; in that order of priority, at most ``most``."""
    if not tl.samples:
        return []
    times = np.asarray([s.t for s in tl.samples])
    peak = max(tl.samples, key=lambda s: s.players)
    connected = max(tl.samples, key=lambda s: s.bots_connected)
    wanted = [e.t + 4.0 for e in tl.events if e.decision in ("Split", "Merge")]
    wanted += [tl.samples[-1].t, connected.t, peak.t]
    chosen: list[float] = []
    for want in wanted:
        t = float(min(want, times[-1]))
        if len(chosen) < most and all(abs(t - c) >= apart_s for c in chosen):
            chosen.append(t)
    return sorted({int(np.argmin(np.abs(times - t))) for t in chosen})


def summary(
    tl: Timeline,
    load: dict[str, Any],
    *,
    duration_s: float,
    bots: int,
    arena: dict[str, Any] | None = None,
    probe: dict[str, Any] | None = None,
    grpc_tls: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The run's figures (also the JSON output). ``load`` is the bots' own
    report, ``probe`` the probe client's: kept apart, each labelled as such;
    ``grpc_tls`` the address of each service that served gRPC over TLS."""
    last = tl.samples[-1] if tl.samples else None
    handoffs = last.relay.reroutes if last else 0
    p99 = tick_p99_per_zone(tl.samples)
    budget = tick_budget_per_zone(tl.samples)
    return {
        "bots": bots,
        "duration_s": duration_s,
        "peak_players": max((s.relay.sessions for s in tl.samples), default=0),
        "peak_zones": max(
            (sum(1 for z in s.zones if z.state == "ACTIVE" and not z.instance) for s in tl.samples),
            default=0,
        ),
        "peak_instances": max(
            (sum(1 for z in s.zones if z.instance) for s in tl.samples), default=0
        ),
        "splits": tl.splits,
        "merges": tl.merges,
        "drains_started": tl.drains_started,
        "drains_finished": tl.drains_finished,
        "handoffs": handoffs,
        "disconnects": int(load.get("disconnects", 0)),
        "connect_failures": int(load.get("connect_failures", 0)),
        "lost_entities": len(tl.lost()),
        "duplicated_entities": len(tl.duplicated()),
        "misrouted_players": len({p for s in tl.scans for p in s.misrouted}),
        "invariant_scans": len(tl.scans),
        "zones_unreachable_in_scans": sorted({z for sc in tl.scans for z in sc.unreachable}),
        "tick_p99_ms_per_zone": p99,
        "tick_budget_ms_per_zone": budget,
        "zones_over_budget": over_budget(p99, budget),
        "peak_npcs": peak_npcs(tl.samples),
        "combat_events": dict(load.get("events", {})),
        # The open world's resources module: its collected events to the bots.
        "resources_collected": int(load.get("events", {}).get("GAME:collected", 0)),
        "bytes_per_player_s": round(bytes_per_player_s(tl.samples), 1),
        "arena": arena or {},
        "load": load,
        "probe": probe or {},
        "grpc_tls": grpc_tls or {},
        "events": [e.__dict__ for e in tl.events],
    }


def failed(figures: dict[str, Any]) -> list[str]:
    """Why the run failed (empty: it passed)."""
    out = []
    for key in ("disconnects", "connect_failures", "lost_entities", "duplicated_entities"):
        if figures.get(key, 0):
            out.append(f"{key}={figures[key]}")
    arena = figures.get("arena") or {}
    for key in ("disconnects", "failed", "entities_changed"):
        if arena.get(key, 0):
            out.append(f"arena {key}={arena[key]}")
    for key in ("reported_by_zone", "rated"):
        if arena.get(key, 0) != arena.get("matches", 0):
            out.append(f"arena {key}={arena.get(key, 0)} of {arena.get('matches', 0)} matches")
    for zone in figures.get("zones_over_budget", []):
        out.append(
            f"{zone} tick p99 {figures['tick_p99_ms_per_zone'][zone]:.1f} ms "
            f"> budget {figures['tick_budget_ms_per_zone'][zone]:.1f} ms"
        )
    probe = figures.get("probe") or {}
    if not probe.get("prediction_samples"):
        out.append("probe: no figures (" + (probe.get("error") or "it never played") + ")")
    if probe.get("disconnected"):
        out.append(f"probe disconnected ({probe['disconnected']})")
    return out


def arena_line(arena: dict[str, Any]) -> str:
    """How the arena matches ended: by whom, by which rule, the last score."""
    return (
        f"{arena.get('reported_by_zone', 0)} reported by the arena zone itself "
        f"({arena.get('ended_by_score', 0)} on kills, {arena.get('ended_by_time', 0)} at "
        f"time-up; last score {arena.get('last_score') or '-'}), "
        f"{arena.get('rated', 0)} rated by matchmaking"
    )


def summary_text(figures: dict[str, Any]) -> str:
    """The summary as readable text."""
    budget = figures.get("tick_budget_ms_per_zone", {})
    p99 = figures["tick_p99_ms_per_zone"]
    zones = ", ".join(f"{k} {v:.1f}/{budget.get(k, 0.0):.0f} ms" for k, v in p99.items())
    load = figures["load"]
    arena = figures.get("arena") or {}
    probe = figures.get("probe") or {}
    combat = ", ".join(f"{k}={v}" for k, v in sorted(figures.get("combat_events", {}).items()))
    tls = ", ".join(figures.get("grpc_tls", {}))  # the services that served TLS
    f = figures
    lines = [
        f"bots                 {f['bots']} for {f['duration_s']:.0f} s",
        f"peak players         {f['peak_players']} (peak zones {f['peak_zones']})",
        f"splits / merges      {f['splits']} / {f['merges']}",
        f"drains               {f['drains_started']} started, {f['drains_finished']} finished",
        f"handoffs             {f['handoffs']}",
        f"arena matches        {arena.get('matches', 0)} played in instance zones "
        f"(peak {f['peak_instances']} at once; {arena.get('failed', 0)} failed, "
        f"{arena.get('disconnects', 0)} disconnects)",
        f"  ended by the zone  {arena_line(arena)}",
        f"disconnects          {f['disconnects']} (connect failures {f['connect_failures']})",
        f"lost / duplicated    {f['lost_entities']} / {f['duplicated_entities']} entities "
        f"({f['invariant_scans']} invariant scans"
        + (
            f"; unreachable in a scan: {', '.join(f['zones_unreachable_in_scans'])}"
            if f.get("zones_unreachable_in_scans")
            else ""
        )
        + ")",
        f"tick p99 per zone    {zones or '-'} (p99/budget; "
        f"over budget: {', '.join(f.get('zones_over_budget', [])) or 'none'})",
        f"NPCs                 {f.get('peak_npcs', 0)} at the peak in open-world zones",
        f"resources collected  {f.get('resources_collected', 0)} by bots at the open world's "
        "resource nodes (tessera.examples.resources)",
        f"bytes per player     {f['bytes_per_player_s']:.0f} B/s at the relay",
        f"gRPC over TLS        {tls + ' (zones in plaintext)' if tls else 'off (--plaintext)'}",
        "probe (one player in a process of its own, predicting, every snapshot decoded):",
        f"  rtt                p50 {probe.get('rtt_ms_p50', 0.0):.1f} ms, "
        f"p95 {probe.get('rtt_ms_p95', 0.0):.1f} ms ({probe.get('rtt_samples', 0)} pings)",
        f"  prediction error   p50 {probe.get('prediction_error_m_p50', 0.0):.3f} m, "
        f"p95 {probe.get('prediction_error_m_p95', 0.0):.3f} m "
        f"({probe.get('prediction_samples', 0)} reconciliations)",
        f"bot-side ({f['bots']} bots sharing {load.get('workers', 0)} processes):",
        f"  rtt                p50 {load.get('rtt_ms_p50', 0.0):.1f} ms, "
        f"p99 {load.get('rtt_ms_p99', 0.0):.1f} ms (smoothed per bot)",
        f"  bytes per bot      {load.get('bytes_per_s_per_bot', 0.0):.0f} B/s",
        f"  combat events      {combat or '-'}",
    ]
    return "\n".join(lines)
