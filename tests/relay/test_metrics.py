"""The collector exports the relay's plain counters as Prometheus series."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from tessera.relay.metrics import Counters, GcPauses, RelayCollector


def test_collector_exports_counters() -> None:
    counters = Counters(packets_in=5, packets_out=3, bytes_in=500, bytes_out=300, reroutes=2)
    counters.drop("replay")
    counters.drop("replay")
    counters.handshakes["expired"] += 1
    counters.session_ends["IDLE_TIMEOUT"] += 3
    registry = CollectorRegistry()
    registry.register(RelayCollector(counters, lambda: {"udp": 4}, lambda: {"zone-a": 1}))
    text = generate_latest(registry).decode()
    for line in (
        'tessera_relay_sessions{transport="udp"} 4.0',
        'tessera_relay_sessions{transport="grpc"} 0.0',
        'tessera_relay_packets_total{direction="in"} 5.0',
        'tessera_relay_bytes_total{direction="out"} 300.0',
        'tessera_relay_drops_total{reason="replay"} 2.0',
        'tessera_relay_handshakes_total{result="expired"} 1.0',
        'tessera_relay_session_ends_total{reason="IDLE_TIMEOUT"} 3.0',
        "tessera_relay_reroutes_total 2.0",
        'tessera_relay_upstream_reconnects_total{zone="zone-a"} 1.0',
    ):
        assert line in text, line


def pauses(generation: int) -> tuple[float, float]:
    """(collections, seconds) of GC_PAUSE's series for ``generation`` so far."""
    labels = {"generation": str(generation)}
    count = REGISTRY.get_sample_value("tessera_relay_gc_pause_seconds_count", labels)
    total = REGISTRY.get_sample_value("tessera_relay_gc_pause_seconds_sum", labels)
    return count or 0.0, total or 0.0


def test_gc_pauses_are_observed_per_generation_while_installed() -> None:
    timer = GcPauses()
    timer.install()
    timer.install()  # once only
    try:
        assert gc.callbacks.count(timer) == 1
        before = [pauses(g) for g in range(3)]
        gc.collect(2)
        gc.collect(2)
        gc.collect(0)
        after = [pauses(g) for g in range(3)]
    finally:
        timer.remove()
    assert after[2][0] - before[2][0] == 2
    assert after[2][1] > before[2][1]
    assert after[0][0] - before[0][0] >= 1  # automatic ones may add to it
    assert timer not in gc.callbacks
    gc.collect(2)
    assert pauses(2) == after[2]  # removed: nothing observed
