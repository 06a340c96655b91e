"""Relay metrics: plain counters on the packet path, exported by a collector.

Incrementing a Prometheus child for every packet costs more than the rest of the
path, so the packet path bumps attributes of :class:`Counters` and the collector
turns them into ``tessera_relay_*`` series when /metrics is scraped. Latency,
RTT and garbage-collection pauses use ordinary histograms (observed once per
batch, per RTT sample or per collection).
"""

from __future__ import annotations

import bisect
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import prometheus_client
from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tessera.wire.connection import Tally

RTT = Histogram(
    "tessera_relay_rtt_seconds",
    "Round-trip time samples of client connections.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
)
ADDED_LATENCY = Histogram(
    "tessera_relay_added_latency_seconds",
    "Time a message spends inside the relay: client packet in -> written to the zone "
    "link (path=up), zone snapshot batch in -> last datagram sent (path=down).",
    ["path"],
    buckets=(
        0.00005,
        0.0001,
        0.00025,
        0.0005,
        0.00075,
        0.001,
        0.0015,
        0.002,
        0.003,
        0.005,
        0.0075,
        0.01,
        0.025,
        0.05,
        0.1,
    ),
)
UP_LATENCY = ADDED_LATENCY.labels("up")
DOWN_LATENCY = ADDED_LATENCY.labels("down")
# Every SAMPLE_EVERY-th message of a batch is observed: a per-message distribution
# (early and late messages of a batch alike) at a fraction of the cost.
SAMPLE_EVERY = 8

# How many snapshots each SnapshotBatch from a zone carried: chunks of the zone's
# TESSERA_LINK_CHUNK while it paces a link, whole ticks (or several) while it is behind.
LINK_BATCH = Histogram(
    "tessera_relay_link_batch_snapshots",
    "Snapshots per SnapshotBatch received on a zone link.",
    buckets=(1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
)


# Inputs held for the zone's next tick (docs/RELAY.md, "Input batches"): how long.
INPUT_HOLD = Histogram(
    "tessera_relay_input_hold_seconds",
    "Time a client's input or ack was held for the zone's next tick before its "
    "batch was due to be written (the up path's added latency counts from then).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
)


def observe_sampled(
    histogram: Histogram, starts: list[float], end: float, due: float = 0.0
) -> None:
    """Observe ``end - max(start, due)`` (at least 0) for every SAMPLE_EVERY-th start."""
    for start in starts[::SAMPLE_EVERY]:
        histogram.observe(max(0.0, end - max(start, due)))


# Restarts of worker processes by their parent (docs/RELAY.md, "Worker processes").
WORKER_RESTARTS = prometheus_client.Counter(
    "tessera_relay_worker_restarts_total",
    "Relay worker processes started again by their parent after exiting on their own.",
)

# Garbage-collection pauses: the loop stops for each collection, so a long one
# delays every packet queued behind it.
GC_PAUSE = Histogram(
    "tessera_relay_gc_pause_seconds",
    "Duration of each garbage collection of the relay process, by generation.",
    ["generation"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
)


class GcPauses:
    """A ``gc.callbacks`` entry observing each collection's duration in GC_PAUSE."""

    def __init__(self) -> None:
        self.started = 0.0
        self.generations = [GC_PAUSE.labels(str(g)) for g in range(3)]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.generations[info["generation"]].observe(time.perf_counter() - self.started)

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


# Upper bounds (bytes) of the datagram size histogram; the protocol's limit is 1200.
DATAGRAM_BUCKETS = (64, 128, 256, 512, 768, 1024, 1200)


@dataclass
class Counters:
    """Relay-wide totals (also served by GetStatus). ``tally`` is shared by every
    UDP connection: retransmissions, and fragment / reliable drops into ``drops``."""

    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    reroutes: int = 0
    transfers: int = 0
    # Resumes that took over a session this relay still held (no zone call).
    takeovers: int = 0
    # Sessions told another zone's game schema after a move (ServerMessage.game).
    game_schemas: int = 0
    # Links opened to a zone before any player was routed there (Gateway.warm).
    warm_links: int = 0
    zone_silences: int = 0
    # Sessions told to MOVE because their client went unheard (gateway.UNHEARD_S).
    unheard_moves: int = 0
    orphans_released: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    handshakes: Counter[str] = field(default_factory=Counter)
    session_ends: Counter[str] = field(default_factory=Counter)
    resumes: Counter[str] = field(default_factory=Counter)
    reliable_overflows: int = 0
    # Messages put on clients' reliable channels (first transmissions).
    reliable_messages: int = 0
    fragmented: int = 0
    # Datagrams sent per DATAGRAM_BUCKETS bucket (the last: larger than 1200).
    datagram_sizes: list[int] = field(default_factory=lambda: [0] * (len(DATAGRAM_BUCKETS) + 1))
    largest_datagram: int = 0
    datagram_bytes: int = 0
    tally: Tally = field(init=False)

    def __post_init__(self) -> None:
        self.tally = Tally(drops=self.drops)

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def sent(self, size: int) -> None:
        """Count one datagram sent to a client."""
        self.packets_out += 1
        self.bytes_out += size
        self.datagram_bytes += size
        self.datagram_sizes[bisect.bisect_left(DATAGRAM_BUCKETS, size)] += 1
        self.largest_datagram = max(self.largest_datagram, size)


class RelayCollector(Collector):
    """Exports :class:`Counters`, session counts and upstream reconnects."""

    def __init__(
        self,
        counters: Counters,
        sessions: Callable[[], dict[str, int]],
        reconnects: Callable[[], dict[str, int]],
    ) -> None:
        self.counters = counters
        self.sessions = sessions
        self.reconnects = reconnects

    def collect(self) -> Iterator[Metric]:
        c = self.counters
        sessions = GaugeMetricFamily(
            "tessera_relay_sessions", "Open client sessions.", labels=["transport"]
        )
        counts = self.sessions()
        for transport in ("udp", "grpc"):
            sessions.add_metric([transport], counts.get(transport, 0))
        yield sessions
        packets = CounterMetricFamily(
            "tessera_relay_packets", "Client packets by direction.", labels=["direction"]
        )
        packets.add_metric(["in"], c.packets_in)
        packets.add_metric(["out"], c.packets_out)
        yield packets
        octets = CounterMetricFamily(
            "tessera_relay_bytes", "Client bytes by direction.", labels=["direction"]
        )
        octets.add_metric(["in"], c.bytes_in)
        octets.add_metric(["out"], c.bytes_out)
        yield octets
        drops = CounterMetricFamily(
            "tessera_relay_drops", "Dropped client packets by reason.", labels=["reason"]
        )
        for reason, n in sorted(c.drops.items()):
            drops.add_metric([reason], n)
        yield drops
        handshakes = CounterMetricFamily(
            "tessera_relay_handshakes", "Session handshakes by result.", labels=["result"]
        )
        for result, n in sorted(c.handshakes.items()):
            handshakes.add_metric([result], n)
        yield handshakes
        ends = CounterMetricFamily(
            "tessera_relay_session_ends",
            "Client sessions ended, by the reason the client was told (IDLE_TIMEOUT, "
            "KICKED, CLIENT_DISCONNECT, REPLACED, ZONE_UNAVAILABLE, RELAY_SHUTDOWN, ...).",
            labels=["reason"],
        )
        for reason, n in sorted(c.session_ends.items()):
            ends.add_metric([reason], n)
        yield ends
        resumes = CounterMetricFamily(
            "tessera_relay_resumes",
            "Session resumes (RESUME with a resume credential) by result.",
            labels=["result"],
        )
        for result, n in sorted(c.resumes.items()):
            resumes.add_metric([result], n)
        yield resumes
        yield self._datagrams()
        yield GaugeMetricFamily(
            "tessera_relay_datagram_bytes_max",
            "The largest datagram sent to a client since the relay started.",
            value=c.largest_datagram,
        )
        yield CounterMetricFamily(
            "tessera_relay_unheard_moves",
            "UDP sessions told to MOVE because the relay had not heard their client "
            "for 3 s while sending to it (another worker process now gets its packets).",
            value=c.unheard_moves,
        )
        yield CounterMetricFamily(
            "tessera_relay_reliable_messages",
            "Messages sent to clients on the reliable channel (first transmissions).",
            value=c.reliable_messages,
        )
        yield CounterMetricFamily(
            "tessera_relay_retransmissions",
            "Reliable messages sent again because no ack came within their RTO.",
            value=c.tally.retransmissions,
        )
        yield CounterMetricFamily(
            "tessera_relay_reliable_overflows",
            "Sessions ended with RELIABLE_OVERFLOW: their reliable send window was full.",
            value=c.reliable_overflows,
        )
        yield CounterMetricFamily(
            "tessera_relay_fragmented_messages",
            "Messages (snapshots) too large for one datagram, sent as fragments.",
            value=c.fragmented,
        )
        yield CounterMetricFamily(
            "tessera_relay_reroutes", "Players switched to another zone.", value=c.reroutes
        )
        yield CounterMetricFamily(
            "tessera_relay_transfers",
            "Players moved into the zone their connect token names (Leave, then Join).",
            value=c.transfers,
        )
        yield CounterMetricFamily(
            "tessera_relay_resume_takeovers",
            "Resumes that took over a session this relay still held (no zone call).",
            value=c.takeovers,
        )
        yield CounterMetricFamily(
            "tessera_relay_game_schemas",
            "Sessions told the game schema of the zone they moved to, which differed "
            "from the one their client had (an instance zone's module).",
            value=c.game_schemas,
        )
        yield CounterMetricFamily(
            "tessera_relay_warm_links",
            "Zone links opened before any player was routed to the zone (warm links).",
            value=c.warm_links,
        )
        yield CounterMetricFamily(
            "tessera_relay_upstream_silences",
            "ZoneLinks stalled because their zone sent nothing for the silence limit "
            "while players were attached (a frozen or overloaded zone).",
            value=c.zone_silences,
        )
        yield CounterMetricFamily(
            "tessera_relay_orphans_released",
            "Zone entities released because their relay was gone for the grace period "
            "and the player did not come back.",
            value=c.orphans_released,
        )
        reconnects = CounterMetricFamily(
            "tessera_relay_upstream_reconnects", "ZoneLink reconnects by zone.", labels=["zone"]
        )
        for zone, n in sorted(self.reconnects().items()):
            reconnects.add_metric([zone], n)
        yield reconnects

    def _datagrams(self) -> Metric:
        c = self.counters
        histogram = HistogramMetricFamily(
            "tessera_relay_datagram_bytes", "Sizes of the datagrams sent to clients."
        )
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*map(str, DATAGRAM_BUCKETS), "+Inf"), c.datagram_sizes, strict=True):
            running += n
            buckets.append((bound, running))
        histogram.add_metric([], buckets, sum_value=c.datagram_bytes)
        return histogram


def register(collector: RelayCollector) -> None:
    REGISTRY.register(collector)
