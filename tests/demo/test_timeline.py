"""The run's figures from samples, events and scans (pure)."""

from __future__ import annotations

from tessera.demo.monitor import RelaySample, ZoneSample
from tessera.demo.timeline import (
    Sample,
    Scan,
    Timeline,
    bytes_per_player_s,
    failed,
    key_moments,
    over_budget,
    peak_npcs,
    summary,
    summary_text,
    tick_budget_per_zone,
    tick_p99_per_zone,
)

PROBE = {
    "rtt_ms_p50": 2.5,
    "rtt_ms_p95": 4.0,
    "rtt_samples": 20,
    "prediction_error_m_p50": 0.01,
    "prediction_error_m_p95": 0.2,
    "prediction_samples": 300,
    "disconnected": "",
}


def zone(
    name: str, players: int, p99: float = 2.0, state: str = "ACTIVE", *, hz: int = 30, npcs: int = 0
) -> ZoneSample:
    return ZoneSample(
        name, state, (0, 0, 10, 10), players, p99, 0, "127.0.0.1:1", npcs=npcs, tick_hz=hz
    )


def sample(t: float, zones: list[ZoneSample], sessions: int, *counters: int) -> Sample:
    """A sample; ``counters`` are the relay's packets, bytes and reroutes."""
    packets, bytes_, reroutes = (*counters, 0, 0, 0)[:3]
    return Sample(t, "spread", zones, sessions, 0, RelaySample(sessions, packets, bytes_, reroutes))


def test_events_are_deduplicated_per_decision() -> None:
    tl = Timeline()
    split = {"decision": "Split", "zone": "a", "reason": "split a at x=5"}
    new = tl.add_events(
        1.0, [split, {**split, "zone": "b"}, {"decision": "Initial", "zone": "a", "reason": "init"}]
    )
    assert [e.decision for e in new] == ["Split", "Initial"]
    tl.add_events(
        2.0,
        [
            split,
            {"decision": "Merge", "zone": "b", "reason": "merge b"},
            {"decision": "Merge", "zone": "a", "reason": "merge b"},
            {"decision": "Drained", "zone": "b", "reason": "b drained"},
        ],
    )
    assert (tl.splits, tl.merges, tl.drains_started, tl.drains_finished) == (1, 1, 1, 1)


def test_rates_and_bytes_per_player() -> None:
    tl = Timeline()
    assert tl.rates() == (0.0, 0.0)
    tl.samples = [sample(0, [], 10, 0, 0, 0), sample(2, [], 10, 1000, 20_000, 6)]
    assert tl.rates() == (500.0, 3.0)
    assert bytes_per_player_s(tl.samples) == 1000.0  # 20 kB over 10 players x 2 s
    assert bytes_per_player_s([]) == 0.0


def test_tick_p99_is_the_worst_while_simulating() -> None:
    samples = [
        sample(0, [zone("a", 1, 3.0), zone("s", 0, 50.0, "STANDBY")], 1),
        sample(1, [zone("a", 1, 5.0), zone("b", 1, 1.25)], 2),
        sample(2, [zone("a", 1, 4.0)], 1),
    ]
    assert tick_p99_per_zone(samples) == {"a": 5.0, "b": 1.25}


def test_key_moments_cover_events_peak_and_end() -> None:
    tl = Timeline()
    tl.samples = [sample(t, [zone("a", min(t, 10))], min(t, 10)) for t in range(60)]
    tl.add_events(20.0, [{"decision": "Split", "zone": "a", "reason": "s"}])
    tl.add_events(40.0, [{"decision": "Merge", "zone": "a", "reason": "m"}])
    picks = key_moments(tl)
    assert picks == sorted(picks) and picks[-1] == 59
    assert 24 in picks and 44 in picks and 10 in picks
    for i in range(10):
        tl.add_events(float(i * 5), [{"decision": "Split", "zone": "a", "reason": f"x{i}"}])
    assert len(key_moments(tl, most=6)) <= 6
    assert len(key_moments(tl)) <= 8
    assert key_moments(Timeline()) == []


def test_summary_and_failure() -> None:
    tl = Timeline()
    tl.samples = [
        sample(0, [zone("a", 3)], 3, 0, 0, 0),
        sample(1, [zone("a", 2), zone("b", 2)], 4, 10, 400, 2),
    ]
    tl.add_events(0.5, [{"decision": "Split", "zone": "a", "reason": "s"}])
    tl.scans = [Scan(1.0, [], [], []), Scan(2.0, ["p1"], [7], [], ["b"])]
    load = {"disconnects": 0, "connect_failures": 0, "bytes_per_s_per_bot": 120.0}
    f = summary(tl, load, duration_s=10, bots=4, probe=PROBE)
    assert (f["peak_players"], f["peak_zones"], f["splits"], f["handoffs"]) == (4, 2, 1, 2)
    assert (f["lost_entities"], f["duplicated_entities"], f["invariant_scans"]) == (1, 1, 2)
    assert failed(f) == ["lost_entities=1", "duplicated_entities=1"]
    assert "splits / merges      1 / 0" in summary_text(f)
    assert f["zones_unreachable_in_scans"] == ["b"]
    assert "(2 invariant scans; unreachable in a scan: b)" in summary_text(f)
    tl.scans = []
    assert failed(summary(tl, {**load, "disconnects": 2}, duration_s=10, bots=4, probe=PROBE)) == [
        "disconnects=2"
    ]


def test_tick_budget_per_zone_follows_its_rate() -> None:
    samples = [
        sample(
            0, [zone("a", 1, 30.0), zone("b", 1, 40.0, hz=20), zone("s", 0, 90.0, "STANDBY")], 2
        ),
        sample(1, [zone("a", 1, 34.0), zone("c", 1, 16.0, hz=60)], 2),
    ]
    p99, budget = tick_p99_per_zone(samples), tick_budget_per_zone(samples)
    assert budget == {"a": 33.33, "b": 50.0, "c": 16.67}
    assert over_budget(p99, budget) == ["a"]
    tl = Timeline()
    tl.samples = samples
    f = summary(tl, {}, duration_s=10, bots=2, probe=PROBE)
    assert f["zones_over_budget"] == ["a"]
    assert failed(f) == ["a tick p99 34.0 ms > budget 33.3 ms"]
    assert "a 34.0/33 ms, b 40.0/50 ms, c 16.0/17 ms (p99/budget; over budget: a)" in (
        summary_text(f)
    )


def test_npcs_counted_in_open_world_zones_only() -> None:
    inst = ZoneSample("inst-1", "ACTIVE", None, 2, 1.0, 0, "x", instance="m1", npcs=50)
    samples = [
        sample(0, [zone("a", 1, npcs=100), inst], 3),
        sample(1, [zone("a", 1, npcs=60), zone("b", 1, npcs=100)], 2),
        sample(2, [zone("a", 1, npcs=160), zone("b", 0, npcs=0, state="DRAINING")], 2),
    ]
    assert peak_npcs(samples) == 160
    assert peak_npcs([]) == 0


def test_probe_figures_apart_from_the_bots() -> None:
    tl = Timeline()
    tl.samples = [sample(0, [zone("a", 3)], 3)]
    events = {"DIED": 3, "GAME:collected": 7}
    load = {"rtt_ms_p50": 900.0, "rtt_ms_p99": 2000.0, "workers": 2, "events": events}
    f = summary(tl, load, duration_s=10, bots=3, probe=PROBE)
    assert f["probe"] == PROBE and f["combat_events"] == events
    assert f["resources_collected"] == 7
    text = summary_text(f)
    assert "resources collected  7 by bots at the open world's resource nodes" in text
    probe_part, bot_part = text.split("bot-side")
    assert "p50 2.5 ms, p95 4.0 ms (20 pings)" in probe_part
    assert "p50 0.010 m, p95 0.200 m (300 reconciliations)" in probe_part
    assert "900.0 ms" in bot_part and "DIED=3" in bot_part and "900.0" not in probe_part
    assert failed(summary(tl, load, duration_s=10, bots=3)) == [
        "probe: no figures (it never played)"
    ]
    broken = {**PROBE, "disconnected": "TIMEOUT"}
    assert failed(summary(tl, load, duration_s=10, bots=3, probe=broken)) == [
        "probe disconnected (TIMEOUT)"
    ]


def test_instance_zones_and_arena_matches_in_the_summary() -> None:
    tl = Timeline()
    inst = ZoneSample("inst-1", "ACTIVE", (0, 0, 10, 10), 2, 1.0, 0, "x", instance="m1")
    tl.samples = [sample(0, [zone("a", 3), inst], 5, 0, 0, 0)]
    load = {"disconnects": 0, "connect_failures": 0}
    arena = {
        "matches": 3,
        "failed": 1,
        "disconnects": 0,
        "entities_changed": 0,
        "reported_by_zone": 3,
        "rated": 3,
        "ended_by_score": 2,
        "ended_by_time": 1,
        "last_score": "3-1",
    }
    f = summary(tl, load, duration_s=10, bots=4, arena=arena, probe=PROBE)
    assert (f["peak_zones"], f["peak_instances"]) == (1, 1)
    assert failed(f) == ["arena failed=1"]
    text = summary_text(f)
    assert "arena matches        3 played in instance zones (peak 1 at once; 1 failed" in text
    assert (
        "  ended by the zone  3 reported by the arena zone itself (2 on kills, 1 at time-up; "
        "last score 3-1), 3 rated by matchmaking"
    ) in text
    # A match whose result the zone did not report, or matchmaking did not rate, fails.
    unreported = summary(
        tl,
        load,
        duration_s=10,
        bots=4,
        arena={**arena, "failed": 0, "reported_by_zone": 2},
        probe=PROBE,
    )
    assert failed(unreported) == ["arena reported_by_zone=2 of 3 matches"]


def test_summary_says_which_services_served_tls() -> None:
    tl = Timeline()
    tl.samples = [sample(0, [zone("a", 3)], 3)]
    servers = {"auth": "127.0.0.1:1", "relay": "127.0.0.1:2"}
    f = summary(tl, {}, duration_s=10, bots=3, probe=PROBE, grpc_tls=servers)
    assert f["grpc_tls"] == servers
    assert "gRPC over TLS        auth, relay (zones in plaintext)" in summary_text(f)
    plain = summary(tl, {}, duration_s=10, bots=3, probe=PROBE)
    assert plain["grpc_tls"] == {}
    assert "gRPC over TLS        off (--plaintext)" in summary_text(plain)
