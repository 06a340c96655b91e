"""Prometheus metrics of the console."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FRAME_SECONDS = Histogram(
    "tessera_console_frame_seconds",
    "Time to read the world and build one frame (shared by every viewer)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
FRAME_BYTES = Histogram(
    "tessera_console_frame_bytes",
    "Size of one Server-Sent Event frame, by kind (full, delta)",
    ["kind"],
    buckets=(100, 1_000, 10_000, 50_000, 100_000, 500_000, 1_000_000),
)
VIEWERS = Gauge("tessera_console_viewers", "Open live streams")
ADMIN_ACTIONS = Counter(
    "tessera_console_admin_actions_total",
    "Admin actions, by action and outcome (ok, refused, failed)",
    ["action", "outcome"],
)
