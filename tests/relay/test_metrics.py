"""The collector exports the relay's plain counters as Prometheus series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from tessera.relay.metrics import Counters, RelayCollector


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
