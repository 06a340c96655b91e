"""Prometheus metrics of the matchmaker."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TICKETS = Counter(
    "tessera_matchmaking_tickets_total",
    "Ticket state changes made by this replica, by mode and new state.",
    ["mode", "state"],
)
SEARCHING = Gauge(
    "tessera_matchmaking_tickets_searching",
    "Tickets searching in the pool at this replica's last tick, by mode.",
    ["mode"],
)
CREATE_BATCH = Histogram(
    "tessera_matchmaking_create_batch_tickets",
    "Tickets a CreateTickets stream wrote to Redis in one round trip.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
TIME_TO_MATCH = Histogram(
    "tessera_matchmaking_time_to_match_seconds",
    "Time from ticket creation to assignment.",
    ["mode"],
    buckets=(0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
RATING_GAP = Histogram(
    "tessera_matchmaking_rating_gap",
    "Rating gap (strongest minus weakest team's sum of mu) of matches made.",
    ["mode"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
MATCHES = Counter(
    "tessera_matchmaking_matches_total", "Matches committed, by mode and kind.", ["mode", "kind"]
)
CLAIMS_CONFLICTED = Counter(
    "tessera_matchmaking_claims_conflicted_total",
    "Proposals whose claim failed because a ticket was taken, cancelled or expired meanwhile.",
    ["mode"],
)
EXPIRED = Counter(
    "tessera_matchmaking_expired_tickets_total",
    "Tickets that expired without a heartbeat (reaped by this replica).",
    ["mode"],
)
NO_DESTINATION = Counter(
    "tessera_matchmaking_no_destination_total",
    "Proposals dropped because no zone had room for them.",
    ["mode"],
)
TOKEN_FAILURES = Counter(
    "tessera_matchmaking_connect_token_failures_total",
    "Connect tokens auth did not issue; their proposals wait for the next tick.",
)
TICK = Histogram(
    "tessera_matchmaking_tick_seconds",
    "Duration of one matching tick over all modes.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
FRONTEND_WORKER_RESTARTS = Counter(
    "tessera_matchmaking_frontend_worker_restarts_total",
    "Front-end worker processes started again after exiting on their own.",
)
