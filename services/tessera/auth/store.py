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
- ``fails:account:<username>``, ``fails:address:<ip>`` STRING counters of failed
  logins, TTL = the counting window.
- ``lock:account:<username>``, ``lock:address:<ip>`` STRING, present (with TTL)
  while locked out.
- ``registrations:<ip>`` STRING counter of accounts created from an address.

Secrets are never stored: refresh tokens as SHA-256 digests (256-bit random ids
whose digest is only a lookup key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera.authclient.store import PREFIX, REVOCATIONS, REVOKED
from tessera.common.store import Client


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

# KEYS: lock:account, lock:address. Returns the longer remaining lockout (ms), 0 if none.
_LOCKED_FOR = """
local a = redis.call('PTTL', KEYS[1])
local b = redis.call('PTTL', KEYS[2])
return math.max(a, b, 0)
"""

# KEYS: fails:account, fails:address, lock:account, lock:address.
# ARGV: account limit, address limit, window s, lockout s. Returns {account locked, address locked}.
_RECORD_FAILURE = """
local locked = {0, 0}
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2])}
for i = 1, 2 do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end
  if n >= limits[i] then
    redis.call('SET', KEYS[i + 2], '1', 'EX', ARGV[4])
    redis.call('DEL', KEYS[i])
    locked[i] = 1
  end
end
return locked
"""

# KEYS: registrations:<ip>. ARGV: limit, window s. Returns 0 if allowed, else ms to wait.
_COUNT_REGISTRATION = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then return math.max(redis.call('PTTL', KEYS[1]), 1) end
return 0
"""


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

    def __init__(self, redis: Client) -> None:
        self.redis = redis
        self._revoke = redis.register_script(_REVOKE)
        self._revoke_account = redis.register_script(_REVOKE_ACCOUNT)
        self._rotate = redis.register_script(_ROTATE)
        self._locked_for = redis.register_script(_LOCKED_FOR)
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

    async def locked_for(self, username: str, address: str) -> float:
        """Seconds left on a lockout of the username or the address (0 if none)."""
        ms = await self._locked_for(
            keys=[
                f"{PREFIX}lock:account:{username}",
                f"{PREFIX}lock:address:{address}",
            ]
        )
        return int(ms) / 1000.0

    async def record_failure(
        self,
        username: str,
        address: str,
        *,
        account_limit: int,
        address_limit: int,
        window_s: int,
        lockout_s: int,
    ) -> tuple[bool, bool]:
        """Count a failed login; returns (username locked now, address locked now)."""
        locked = await self._record_failure(
            keys=[
                f"{PREFIX}fails:account:{username}",
                f"{PREFIX}fails:address:{address}",
                f"{PREFIX}lock:account:{username}",
                f"{PREFIX}lock:address:{address}",
            ],
            args=[account_limit, address_limit, window_s, lockout_s],
        )
        return bool(locked[0]), bool(locked[1])

    async def clear_failures(self, username: str) -> None:
        await self.redis.delete(f"{PREFIX}fails:account:{username}")

    async def count_registration(self, address: str, *, limit: int, window_s: int) -> float:
        """Count an account creation from ``address``; seconds to wait if over the limit."""
        ms = await self._count_registration(
            keys=[f"{PREFIX}registrations:{address}"], args=[limit, window_s]
        )
        return int(ms) / 1000.0
