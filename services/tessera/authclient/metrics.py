"""Prometheus metrics of the auth client, counted in every process that verifies tokens."""

from __future__ import annotations

from prometheus_client import Counter

VERIFICATIONS = Counter(
    "tessera_auth_verifications_total",
    "Access-token verifications by result (ok or the rejection reason).",
    ["result"],
)
