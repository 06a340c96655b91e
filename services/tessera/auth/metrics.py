"""Prometheus metrics of the auth service (verifications: ``tessera.authclient.metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LOGINS = Counter(
    "tessera_auth_logins_total",
    "Login attempts by kind (password, guest, service, register) and result.",
    ["kind", "result"],
)
TOKENS_ISSUED = Counter(
    "tessera_auth_tokens_issued_total",
    "Tokens issued by kind (access, refresh, connect).",
    ["kind"],
)
LOCKOUTS = Counter(
    "tessera_auth_lockouts_total",
    "Backoffs started by failed logins, by scope: account (username locked), service"
    " (client id's wrong secrets refused), address (logins from it slowed).",
    ["scope"],
)
THROTTLED_LOGINS = Counter(
    "tessera_auth_throttled_logins_total",
    "Password logins made to wait because their client address failed too often.",
)
REFRESHES = Counter(
    "tessera_auth_refreshes_total",
    "Refresh-token exchanges by result (ok, unknown, revoked, reused).",
    ["result"],
)
REVOCATIONS = Counter(
    "tessera_auth_revoked_sessions_total",
    "Sessions revoked, by cause (logout, admin, reuse, ban).",
    ["cause"],
)
PASSWORD_HASH_SECONDS = Histogram(
    "tessera_auth_password_hash_seconds",
    "Time spent in argon2id hashing or verification.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CHEAT_ACTIONS = Counter(
    "tessera_auth_cheat_actions_total",
    "Actions of the cheat policy by action (kick, ban) and outcome (ok; failed: no such"
    " account; error: raised, retried by a later pass).",
    ["action", "outcome"],
)
