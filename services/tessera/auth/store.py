"""The only code of the auth service that touches Redis: what is hot and may be lost
(sessions, refresh tokens, revocations, rate-limit counters). Accounts and devices
live in PostgreSQL (``records.py``).

Keys, all under the service-wide hash tag ``{auth}`` so multi-key scripts run in
one Redis Cluster slot (prefix ``tessera:{auth}:`` left out below):

- ``account:<id>:sessions`` SET: the account's session ids (for RevokeSessions).
- ``session:<sid>`` HASH: ``account``, ``roles``, ``kind``, ``refresh`` (SHA-256
  of the live refresh token); TTL = refresh-token lifetime, renewed on rotation.
- ``refresh:<sha256>`` STRING: ``<sid> <account>`` of a refresh token, live or
  spent (the account names whose ban refuses a refresh of an ended session).
  A live one expires with the session; a spent one is kept for the reuse
  window (so its reuse is recognised), then forgotten.
- ``revoked`` ZSET: revoked session id -> Unix time until which its access
  tokens could still verify (entries older than that are pruned).
- ``revocations`` pub/sub: ``<sid> <until>`` published on every revocation.
  These two are read by every verifier; their names and format are defined in
  ``tessera.authclient.store``.
- ``failed:account:<username>``, ``failed:service:<client id>`` HASH: ``n``
  failed logins and ``at`` (Redis time, ms) of the last; TTL = the counting
  window from the last failure. The lock they earn is computed from them
  (``limits.py``), so no lock key can outlive or disagree with its count.
- ``failed:address:<ip>`` STRING counter of failed player logins from an
  address, TTL = the counting window from the last failure.
- ``registrations:<ip>`` STRING counter of accounts created from an address.

Secrets are never stored: refresh tokens as SHA-256 digests (256-bit random ids
whose digest is only a lookup key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from tessera.authclient.store import PREFIX, REVOCATIONS, REVOKED


def account_sessions_key(account_id: str) -> str:
    return f"{PREFIX}account:{account_id}:sessions"


def session_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def refresh_key(refresh_hash: str) -> str:
    return f"{PREFIX}refresh:{refresh_hash}"


# Revokes one session: delete it, drop it from its account, remember and announce it.
# KEYS: revoked zset; ARGV: prefix, sid, until, now, channel. Returns 1 if the session existed.
_REVOKE_BODY = """
local function revoke(prefix, sid, horizon, now, channel)
  local skey = prefix .. 'session:' .. sid
  local account = redis.call('HGET', skey, 'account')
  local existed = redis.call('DEL', skey)
  if account then
    redis.call('SREM', prefix .. 'account:' .. account .. ':sessions', sid)
  end
  redis.call('ZADD', prefix .. 'revoked', horizon, sid)
  redis.call('ZREMRANGEBYSCORE', prefix .. 'revoked', '-inf', now)
  redis.call('PUBLISH', channel, sid .. ' ' .. horizon)
  return existed
end
"""

_REVOKE = (
    _REVOKE_BODY
    + """
return revoke(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""
)

_REVOKE_ACCOUNT = (
    _REVOKE_BODY
    + """
local prefix = ARGV[1]
local sids = redis.call('SMEMBERS', KEYS[1])
local count = 0
for _, sid in ipairs(sids) do
  count = count + revoke(prefix, sid, ARGV[2], ARGV[3], ARGV[4])
end
redis.call('DEL', KEYS[1])
return count
"""
)

# Rotates a refresh token. KEYS[1] = refresh:<old hash>.
# ARGV: prefix, old hash, new hash, ttl, until, now, channel, reuse window.
# Returns {status, sid, account, roles, kind}; status OK, UNKNOWN, GONE (sid, account)
# or REUSED
# (a spent token came back: the whole session is revoked).
_ROTATE = (
    _REVOKE_BODY
    + """
local prefix = ARGV[1]
local value = redis.call('GET', KEYS[1])
if not value then return {'UNKNOWN'} end
local sid, owner = string.match(value, '^(%S+) (%S+)$')
if not sid then sid, owner = value, '' end
local skey = prefix .. 'session:' .. sid
local fields = redis.call('HMGET', skey, 'refresh', 'account', 'roles', 'kind')
if not fields[1] then return {'GONE', sid, owner} end
if fields[1] ~= ARGV[2] then
  revoke(prefix, sid, ARGV[5], ARGV[6], ARGV[7])
  return {'REUSED', sid, fields[2]}
end
redis.call('HSET', skey, 'refresh', ARGV[3])
redis.call('EXPIRE', skey, ARGV[4])
redis.call('EXPIRE', prefix .. 'account:' .. fields[2] .. ':sessions', ARGV[4])
redis.call('SET', prefix .. 'refresh:' .. ARGV[3], sid .. ' ' .. fields[2], 'EX', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[8], 'LT')
return {'OK', sid, fields[2], fields[3], fields[4]}
"""
)

# Times come from Redis (TIME), so every replica judges a lock by one clock.
# KEYS: failed:<scope>:<name>[, failed:address:<ip>]. Returns {n, last ms, now ms, address n}.
_STANDING = """
local now = redis.call('TIME')
local fields = redis.call('HMGET', KEYS[1], 'n', 'at')
local address = 0
if KEYS[2] then address = tonumber(redis.call('GET', KEYS[2]) or '0') end
return {tonumber(fields[1] or '0'), tonumber(fields[2] or '0'),
        now[1] * 1000 + math.floor(now[2] / 1000), address}
"""

# Counts one failure. KEYS as _STANDING; ARGV: window ms. Returns the counts after it.
_RECORD_FAILURE = """
local now = redis.call('TIME')
local at = now[1] * 1000 + math.floor(now[2] / 1000)
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[1], 'at', at)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local address = 0
if KEYS[2] then
  address = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return {n, at, at, address}
"""

# KEYS: registrations:<ip>. ARGV: limit, window s. Returns 0 if allowed, else ms to wait.
_COUNT_REGISTRATION = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then return math.max(redis.call('PTTL', KEYS[1]), 1) end
return 0
"""


@dataclass(frozen=True)
class Standing:
    """Failed logins of a username or service client (and of the caller's address)."""

    failures: int
    last_failure_ms: int
    now_ms: int
    address_failures: int = 0


def failures_key(scope: str, name: str) -> str:
    """``scope`` is ``account`` (a username), ``service`` (a client id) or ``address``."""
    return f"{PREFIX}failed:{scope}:{name}"


def _failure_keys(scope: str, name: str, address: str | None) -> list[str]:
    keys = [failures_key(scope, name)]
    if address is not None:
        keys.append(failures_key("address", address))
    return keys


@dataclass(frozen=True)
class Rotation:
    """The outcome of presenting a refresh token."""

    status: str  # OK, UNKNOWN, GONE or REUSED
    session_id: str = ""
    account_id: str = ""
    roles: tuple[str, ...] = ()
    kind: str = ""


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _roles(value: bytes | str | None) -> tuple[str, ...]:
    return tuple(r for r in _text(value).split(",") if r)


class AuthStore:
    """Sessions, refresh tokens, revocations and rate-limit counters."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._revoke = redis.register_script(_REVOKE)
        self._revoke_account = redis.register_script(_REVOKE_ACCOUNT)
        self._rotate = redis.register_script(_ROTATE)
        self._standing = redis.register_script(_STANDING)
        self._record_failure = redis.register_script(_RECORD_FAILURE)
        self._count_registration = redis.register_script(_COUNT_REGISTRATION)

    # sessions

    async def create_session(
        self,
        *,
        session_id: str,
        account_id: str,
        roles: tuple[str, ...],
        kind: str,
        refresh_hash: str,
        ttl_s: int,
    ) -> None:
        """Store a new session (and its first refresh token, if any) atomically."""
        fields: dict[Any, Any] = {
            "account": account_id,
            "roles": ",".join(roles),
            "kind": kind,
        }
        if refresh_hash:
            fields["refresh"] = refresh_hash
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(session_key(session_id), mapping=fields)
            pipe.expire(session_key(session_id), ttl_s)
            if refresh_hash:
                pipe.set(refresh_key(refresh_hash), f"{session_id} {account_id}", ex=ttl_s)
            pipe.sadd(account_sessions_key(account_id), session_id)
            pipe.expire(account_sessions_key(account_id), ttl_s, gt=True)
            pipe.expire(account_sessions_key(account_id), ttl_s, nx=True)
            await pipe.execute()

    async def rotate_refresh(
        self,
        old_hash: str,
        new_hash: str,
        *,
        ttl_s: int,
        revoke_until: float,
        now: float,
        reuse_window_s: int | None = None,
    ) -> Rotation:
        """Spend ``old_hash`` and make ``new_hash`` the session's live refresh token.

        The spent token is remembered for ``reuse_window_s`` (default: ``ttl_s``).
        """
        window = ttl_s if reuse_window_s is None else min(reuse_window_s, ttl_s)
        reply = await self._rotate(
            keys=[refresh_key(old_hash)],
            args=[PREFIX, old_hash, new_hash, ttl_s, revoke_until, now, REVOCATIONS, window],
        )
        values = [_text(v) for v in reply]
        status = values[0]
        if status == "OK":
            return Rotation(status, values[1], values[2], _roles(values[3]), values[4])
        return Rotation(
            status, values[1] if len(values) > 1 else "", values[2] if len(values) > 2 else ""
        )

    async def revoke_session(self, session_id: str, *, until: float, now: float) -> bool:
        """Revoke one session; True if it still existed."""
        existed = await self._revoke(
            keys=[REVOKED], args=[PREFIX, session_id, until, now, REVOCATIONS]
        )
        return bool(existed)

    async def revoke_account(self, account_id: str, *, until: float, now: float) -> int:
        """Revoke every session of an account; returns how many were live."""
        count = await self._revoke_account(
            keys=[account_sessions_key(account_id), REVOKED],
            args=[PREFIX, until, now, REVOCATIONS],
        )
        return int(count)

    # rate limits

    async def standing(self, scope: str, name: str, address: str | None = None) -> Standing:
        """The failed logins of ``name`` in ``scope`` (and of ``address``, when given)."""
        reply = await self._standing(keys=_failure_keys(scope, name, address))
        return Standing(*(int(v) for v in reply))

    async def record_failure(
        self, scope: str, name: str, address: str | None = None, *, window_s: float
    ) -> Standing:
        """Count a failed login of ``name`` (and from ``address``); the counts after it.
        Each count is forgotten ``window_s`` after its last failure."""
        reply = await self._record_failure(
            keys=_failure_keys(scope, name, address), args=[int(window_s * 1000)]
        )
        return Standing(*(int(v) for v in reply))

    async def clear_failures(self, scope: str, name: str) -> None:
        """Forget the failed logins of ``name`` (a successful login); the address's stay."""
        await self.redis.delete(failures_key(scope, name))

    async def count_registration(self, address: str, *, limit: int, window_s: int) -> float:
        """Count an account creation from ``address``; seconds to wait if over the limit."""
        ms = await self._count_registration(
            keys=[f"{PREFIX}registrations:{address}"], args=[limit, window_s]
        )
        return int(ms) / 1000.0
