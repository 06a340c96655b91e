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
  attempts since the last success (each counted before its check) and ``at``
  (Redis time, ms) of the last; TTL = the counting window from the last. The
  lock they earn is computed from them (``limits.py``), so no lock key can
  outlive or disagree with its count.
- ``failed:address:<ip>`` STRING counter of failed player logins from an
  address, TTL = the counting window from the last failure.
- ``registrations:<ip>`` STRING counter of accounts created from an address.
- ``cheat:acted:<world>`` HASH player -> the cheat policy's action on the player
  (``kick``, ``ban``); HSETNX makes the policy act once per player and world.

It also reads the anti-cheat tallies zones publish under a world's hash tag
(``tessera:{<world>}:cheat:…``) and publishes the policy's kicks on the
world's ``kicks`` channel (``tessera.common.store.WorldKeys``).

Secrets are never stored: refresh tokens as SHA-256 digests (256-bit random ids
whose digest is only a lookup key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera.auth.cheating import Suspect
from tessera.auth.limits import Backoff
from tessera.authclient.store import PREFIX, REVOCATIONS, REVOKED
from tessera.common.store import Client, WorldKeys
from tessera.wire.names import CHEAT_REASONS


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
# Refuses or counts one login attempt of a name, atomically, before its
# credentials are checked: concurrent guesses cannot all slip in before the
# first failure is written. A lock lasts schedule[n - threshold] ms (the last
# entry for any later n) from the last counted attempt.
# KEYS: failed:<scope>:<name>[, failed:address:<ip>].
# ARGV: window ms, threshold, schedule ms... Returns {ms locked (0: counted), n, address n}.
_ATTEMPT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local fields = redis.call('HMGET', KEYS[1], 'n', 'at')
local n = tonumber(fields[1] or '0')
local threshold = tonumber(ARGV[2])
if n >= threshold then
  local wait = tonumber(ARGV[math.min(n - threshold + 3, #ARGV)])
  local left = wait - (now - tonumber(fields[2] or '0'))
  if left > 0 then return {left, n, 0} end
end
n = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[1], 'at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local address = 0
if KEYS[2] then address = tonumber(redis.call('GET', KEYS[2]) or '0') end
return {0, n, address}
"""

# Takes back one counted attempt whose check never happened. KEYS: failed:<scope>:<name>.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'n') then redis.call('HINCRBY', KEYS[1], 'n', -1) end
"""

# KEYS: registrations:<ip>. ARGV: limit, window s. Returns 0 if allowed, else ms to wait.
_COUNT_REGISTRATION = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then return math.max(redis.call('PTTL', KEYS[1]), 1) end
return 0
"""


# Stores a new session. KEYS: session, account's sessions[, refresh:<hash>].
# ARGV: ttl s, session id, the refresh key's value, then the session's fields and
# values. The account's set lives as long as its longest session.
_CREATE_SESSION = """
local ttl = ARGV[1]
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ttl)
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[3], 'EX', ttl) end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ttl, 'GT')
redis.call('EXPIRE', KEYS[2], ttl, 'NX')
"""

# Counts a failed login from an address. KEYS: failed:address:<ip>. ARGV: window
# ms. Returns the count.
_ADDRESS_FAILED = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
"""


@dataclass(frozen=True)
class Attempt:
    """A login attempt as the failure counts saw it: refused while ``locked_s`` > 0,
    else counted as the name's ``failures``-th (until a success clears it);
    ``address_failures`` are the failed logins from the caller's address."""

    locked_s: float
    failures: int
    address_failures: int


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

    def __init__(self, redis: Client) -> None:
        self.redis = redis
        self._revoke = redis.register_script(_REVOKE)
        self._revoke_account = redis.register_script(_REVOKE_ACCOUNT)
        self._rotate = redis.register_script(_ROTATE)
        self._attempt = redis.register_script(_ATTEMPT)
        self._release = redis.register_script(_RELEASE)
        self._count_registration = redis.register_script(_COUNT_REGISTRATION)
        # Scripts rather than MULTI/EXEC: a cluster client's transaction is slow
        # (tessera.zone.store.ZoneStore.send_many).
        self._create_session = redis.register_script(_CREATE_SESSION)
        self._address_failed = redis.register_script(_ADDRESS_FAILED)

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
        keys = [session_key(session_id), account_sessions_key(account_id)]
        if refresh_hash:
            keys.append(refresh_key(refresh_hash))
        args: list[Any] = [ttl_s, session_id, f"{session_id} {account_id}"]
        for field, value in fields.items():
            args += [field, value]
        await self._create_session(keys=keys, args=args)

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

    async def attempt(
        self,
        scope: str,
        name: str,
        policy: Backoff,
        *,
        window_s: float,
        address: str | None = None,
    ) -> Attempt:
        """Refuse (locked by ``policy``) or count a login attempt of ``name`` in ``scope``.
        A count is forgotten ``window_s`` after its last attempt."""
        reply = await self._attempt(
            keys=_failure_keys(scope, name, address),
            args=[round(window_s * 1000), policy.threshold, *policy.schedule_ms()],
        )
        locked_ms, failures, address_failures = (int(v) for v in reply)
        return Attempt(locked_ms / 1000.0, failures, address_failures)

    async def release_attempt(self, scope: str, name: str) -> None:
        """Take back an attempt counted by :meth:`attempt` whose credentials could not
        be checked (a database outage): only checked failures lock."""
        await self._release(keys=[failures_key(scope, name)])

    async def address_failed(self, address: str, *, window_s: float) -> int:
        """Count a failed login from ``address``; its count after. Forgotten
        ``window_s`` after the last failure; a success does not clear it."""
        count = await self._address_failed(
            keys=[failures_key("address", address)], args=[round(window_s * 1000)]
        )
        return int(count)

    async def clear_failures(self, scope: str, name: str) -> None:
        """Forget the failed logins of ``name`` (a successful login); the address's stay."""
        await self.redis.delete(failures_key(scope, name))

    async def count_registration(self, address: str, *, limit: int, window_s: int) -> float:
        """Count an account creation from ``address``; seconds to wait if over the limit."""
        ms = await self._count_registration(
            keys=[f"{PREFIX}registrations:{address}"], args=[limit, window_s]
        )
        return int(ms) / 1000.0

    # cheat reports

    async def suspects(self, world: str) -> list[Suspect]:
        """Every player of ``world`` whose zone published a non-zero tally (one round trip)."""
        keys = WorldKeys(world)
        async with self.redis.pipeline(transaction=False) as pipe:
            for reason in CHEAT_REASONS:
                pipe.zrange(keys.cheat_tallies(reason), 0, -1, withscores=True)
            pipe.hgetall(keys.cheat_zones)
            pipe.hgetall(keys.cheat_since)
            pipe.hgetall(_acted_key(world))
            *tallies, zones, since, acted = await pipe.execute()
        by_player: dict[str, dict[str, int]] = {}
        for reason, entries in zip(CHEAT_REASONS, tallies, strict=True):
            for player, count in entries:
                by_player.setdefault(_text(player), {})[reason] = int(count)
        zone_of, since_of, acted_on = _texts(zones), _texts(since), _texts(acted)
        return [
            Suspect(
                player=player,
                tallies={r: counts.get(r, 0) for r in CHEAT_REASONS},
                zone=zone_of.get(player, ""),
                since_ms=int(since_of.get(player, "0") or 0),
                action=acted_on.get(player, ""),
            )
            for player, counts in by_player.items()
        ]

    async def claim_cheat_action(self, world: str, player: str, action: str) -> bool:
        """Record that the cheat policy acts on ``player``; False if it did before."""
        return bool(await self.redis.hsetnx(_acted_key(world), player, action))

    async def release_cheat_action(self, world: str, player: str) -> None:
        """Forget the claim on ``player`` (its action failed): a later pass retries it."""
        await self.redis.hdel(_acted_key(world), player)

    async def publish_kick(self, world: str, player: str, reason: str) -> int:
        """Ask whichever relay of ``world`` holds ``player`` to end its session; how
        many relays listened."""
        return int(await self.redis.publish(WorldKeys(world).kicks, f"{player}|{reason}"))


def _acted_key(world: str) -> str:
    return f"{PREFIX}cheat:acted:{world}"


def _texts(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}
