"""The ``tessera.v1.Auth`` gRPC servicer.

A thin shell: input rules live in :mod:`accounts`, token rules in :mod:`tokens`,
:mod:`sessions` and :mod:`tessera.wire.connect_token`, Redis in :mod:`store`. Password hashing runs
in a bounded thread pool (argon2 releases the GIL) so it never blocks the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

import grpc

from tessera.auth import accounts, cheating, metrics, playerdata, profiles, sessions
from tessera.auth.accounts import InputError
from tessera.auth.config import AuthConfig
from tessera.auth.keys import KeyRing, KeyRingError, SigningKey
from tessera.auth.passwords import PasswordHasher
from tessera.auth.records import Account, AccountRecords, AccountView, BanRecord, BanRecords
from tessera.auth.store import AuthStore
from tessera.authclient import access
from tessera.authclient.access import OPEN, current_claims
from tessera.authclient.keys import public_key_entry
from tessera.common import errors, tracing
from tessera.common import playerdata as player_records
from tessera.common.audit import AuditLog, AuditRecord
from tessera.common.database import Pool
from tessera.v1 import auth_pb2, auth_pb2_grpc
from tessera.wire import access_token, connect_token
from tessera.wire.access_token import Claims

log = logging.getLogger(__name__)

SERVICE = "tessera.v1.Auth"
# Who may call each RPC (tessera.authclient.access); docs/AUTH.md lists it.
RULES = access.table(
    auth_pb2.DESCRIPTOR.services_by_name["Auth"],
    {
        "Register": OPEN,
        "Login": OPEN,
        "GuestLogin": OPEN,
        "ServiceLogin": OPEN,
        "Refresh": OPEN,
        "GetPublicKeys": OPEN,
        "Logout": access.ROLES,
        "RevokeSessions": access.roles("admin"),
        "BanAccount": access.roles("admin"),
        "LiftBan": access.roles("admin"),
        "ListBans": access.roles("admin"),
        "ListSuspects": access.roles("admin"),
        "IssueConnectToken": access.roles("player", "service"),
        "IssueConnectTokens": access.roles("service", "admin"),
        "GetPlayerData": access.roles("service", "admin"),
        "PutPlayerData": access.roles("service", "admin"),
        "GetAccount": access.roles("player", "admin"),
        "UpdateAccount": access.roles("player", "admin"),
        "LinkDevice": access.roles("player"),
        "UnlinkDevice": access.roles("player"),
    },
)
INVALID_CREDENTIALS = "invalid username or password"
# The actor of the cheat policy's audit records and bans.
CHEAT_POLICY = "policy:cheat"
# Callers that may name a connect token's destination world and zone.
DESTINATION_ROLES = frozenset({"service", "admin"})
# Connect-token requests per IssueConnectTokens call: ~20 ms of signing on a quiet core.
MAX_CONNECT_BATCH = 512

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


class KeySource:
    """The key ring in use: generated once, or re-read from the key directory."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self.ring = self._load()

    def _load(self) -> KeyRing:
        if self.config.key_dir is None:
            return KeyRing.generate(overlap_s=self.config.key_overlap_s)
        return KeyRing.from_directory(self.config.key_dir, overlap_s=self.config.key_overlap_s)

    def reload(self) -> None:
        """Re-read the directory (a Kubernetes Secret update); keep the old ring on error."""
        if self.config.key_dir is None:
            return
        try:
            ring = self._load()
        except (KeyRingError, OSError) as err:
            log.error("key reload failed; keeping the previous keys", extra={"error": str(err)})
            return
        if [k.kid for k in ring.keys] != [k.kid for k in self.ring.keys]:
            log.info("signing keys reloaded", extra={"kids": [k.kid for k in ring.keys]})
        self.ring = ring


class AuthServicer(auth_pb2_grpc.AuthServicer):
    """Accounts, sessions and tokens."""

    def __init__(
        self,
        config: AuthConfig,
        auth_store: AuthStore,
        records: AccountRecords,
        keys: KeySource,
        *,
        database: Pool,
        bans: BanRecords,
        audit: AuditLog,
        hash_workers: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = auth_store
        self.accounts = records
        self.database = database
        self.bans = bans
        self.audit = audit
        self.keys = keys
        self.clock = clock
        self.hasher = PasswordHasher(config.argon2)
        self.pool = ThreadPoolExecutor(max_workers=hash_workers, thread_name_prefix="argon2")

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            metrics.PASSWORD_HASH_SECONDS.observe(time.perf_counter() - started)

    # sessions

    async def _new_session(
        self, account_id: str, roles: tuple[str, ...], kind: str, *, refresh: bool = True
    ) -> auth_pb2.Session:
        now = self.clock()
        session_id = sessions.new_session_id()
        refresh_token = sessions.new_refresh_token() if refresh else ""
        ttl = self.config.refresh_ttl_s if refresh else self.config.access_ttl_s
        await self.store.create_session(
            session_id=session_id,
            account_id=account_id,
            roles=roles,
            kind=kind,
            refresh_hash=sessions.digest(refresh_token) if refresh else "",
            ttl_s=ttl,
        )
        return self._session_message(account_id, session_id, roles, refresh_token, now)

    def _session_message(
        self,
        account_id: str,
        session_id: str,
        roles: tuple[str, ...],
        refresh_token: str,
        now: float,
    ) -> auth_pb2.Session:
        key = self.keys.ring.current(now)
        claims = sessions.access_claims(
            account_id=account_id,
            session_id=session_id,
            roles=roles,
            kid=key.kid,
            issuer=self.config.issuer,
            audience=self.config.audience,
            now=now,
            ttl_s=self.config.access_ttl_s,
        )
        metrics.TOKENS_ISSUED.labels("access").inc()
        if refresh_token:
            metrics.TOKENS_ISSUED.labels("refresh").inc()
        return auth_pb2.Session(
            account_id=account_id,
            session_id=session_id,
            access_token=access_token.encode(claims, key.private_key),
            access_expires_at=claims.exp,
            refresh_token=refresh_token,
            refresh_expires_at=int(now) + self.config.refresh_ttl_s if refresh_token else 0,
            roles=list(roles),
        )

    def _horizon(self, now: float) -> float:
        # Connect tokens of the session must stay refused too (the relay keeps a
        # revocation until its horizon), so the horizon covers the longer lifetime.
        ttl = max(self.config.access_ttl_s, self.config.connect_ttl_s)
        return sessions.revocation_horizon(now, access_ttl_s=ttl, leeway_s=self.config.leeway_s)

    # rate limits

    async def _check_account(self, context: Context, username: str, address: str) -> int:
        """Refuse a locked username, else count the attempt (its number is returned)
        and make a login from a failing address wait."""
        attempt = await self.store.attempt(
            "account",
            username,
            self.config.account_backoff,
            window_s=self.config.login_fail_window_s,
            address=address,
        )
        await _refuse_locked(context, "password", attempt.locked_s, "too many failed logins")
        delay = self.config.address_backoff.wait_s(attempt.address_failures)
        if delay > 0:
            metrics.THROTTLED_LOGINS.inc()
            await asyncio.sleep(delay)
        return attempt.failures

    async def _failed_login(
        self, context: Context, username: str, address: str, failures: int
    ) -> NoReturn:
        lock = self.config.account_backoff.wait_s(failures)
        if lock > 0:
            metrics.LOCKOUTS.labels("account").inc()
            self._audit_limit(
                "login_lockout",
                username,
                address,
                f"{failures} failed logins: username locked for {lock:g} s",
            )
        slowing = self.config.address_backoff
        from_address = await self.store.address_failed(
            address, window_s=self.config.login_fail_window_s
        )
        if slowing.starts(from_address) and slowing.wait_s(from_address) > 0:
            metrics.LOCKOUTS.labels("address").inc()
            self._audit_limit(
                "login_throttle",
                address,
                address,
                f"{from_address} failed logins: logins from this address wait"
                f" {slowing.base_s:g}-{slowing.cap_s:g} s",
            )
        metrics.LOGINS.labels("password", "invalid").inc()
        await errors.abort(
            context,
            grpc.StatusCode.UNAUTHENTICATED,
            INVALID_CREDENTIALS,
            reason="INVALID_CREDENTIALS",
        )

    async def _failed_service_login(
        self, context: Context, client_id: str, address: str
    ) -> NoReturn:
        """Count a wrong client secret; while the client id is locked, answer
        RESOURCE_EXHAUSTED instead (a right secret is never refused)."""
        policy = self.config.service_backoff
        attempt = await self.store.attempt(
            "service", client_id, policy, window_s=self.config.login_fail_window_s
        )
        await _refuse_locked(
            context, "service", attempt.locked_s, "too many failed logins of this client"
        )
        lock = policy.wait_s(attempt.failures)
        if lock > 0:
            metrics.LOCKOUTS.labels("service").inc()
            self._audit_limit(
                "login_lockout",
                f"service:{client_id}",
                address,
                f"{attempt.failures} failed logins: wrong secrets refused for {lock:g} s",
            )
        metrics.LOGINS.labels("service", "invalid").inc()
        await errors.abort(
            context,
            grpc.StatusCode.UNAUTHENTICATED,
            "invalid client credentials",
            reason="INVALID_CREDENTIALS",
        )

    async def _count_registration(self, context: Context, kind: str, address: str) -> None:
        wait = await self.store.count_registration(
            address,
            limit=self.config.registrations_per_address,
            window_s=self.config.registration_window_s,
        )
        if wait > 0:
            metrics.LOGINS.labels(kind, "rate_limited").inc()
            await errors.abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many new accounts from this address; retry in {int(wait) + 1} s",
                reason="REGISTRATION_RATE_LIMITED",
                retry_after_s=wait,
            )

    # RPCs

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.Session:
        try:
            username = accounts.normalize_username(request.username)
            accounts.check_new_password(
                request.password,
                username=username,
                min_length=self.config.password_min_length,
            )
        except InputError as err:
            await _invalid(context, err)
        address = sessions.client_address(context.peer())
        await self._count_registration(context, "register", address)
        if await self.accounts.username_taken(username):
            await _taken(context)
        account = Account(
            account_id=sessions.new_account_id(),
            username=username,
            password_hash=await self._in_pool(self.hasher.hash, request.password),
            roles=("player",),
            kind="password",
        )
        if not await self.accounts.create_account(account, now=self.clock()):
            await _taken(context)
        metrics.LOGINS.labels("register", "ok").inc()
        log.info("account registered", extra={"account": account.account_id})
        roles = sessions.roles_for(account.account_id, self.config.admin_accounts)
        return await self._new_session(account.account_id, roles, "password")

    async def Login(self, request: auth_pb2.LoginRequest, context: Context) -> auth_pb2.Session:
        try:
            username = accounts.normalize_username(request.username)
            accounts.check_password_size(request.password)
        except InputError as err:
            await _invalid(context, err)
        address = sessions.client_address(context.peer())
        attempts = await self._check_account(context, username, address)
        try:
            account = await self.accounts.account_by_username(username)
            if account is None:
                ok = await self._in_pool(self.hasher.dummy_verify, request.password)
            else:
                ok = await self._in_pool(
                    self.hasher.verify, account.password_hash, request.password
                )
        except Exception:
            await self.store.release_attempt("account", username)
            raise
        if not ok or account is None:
            await self._failed_login(context, username, address, attempts)
        await self.store.clear_failures("account", username)
        await self._refuse_banned(context, "password", account.account_id)
        if self.hasher.needs_rehash(account.password_hash):
            new_hash = await self._in_pool(self.hasher.hash, request.password)
            await self.accounts.set_password(account.account_id, new_hash, now=self.clock())
        metrics.LOGINS.labels("password", "ok").inc()
        roles = sessions.roles_for(account.account_id, self.config.admin_accounts)
        return await self._new_session(account.account_id, roles, "password")

    async def GuestLogin(
        self, request: auth_pb2.GuestLoginRequest, context: Context
    ) -> auth_pb2.Session:
        try:
            device_id = accounts.check_device_id(request.device_id)
        except InputError as err:
            await _invalid(context, err)
        device_hash = sessions.digest(device_id)
        account_id = await self.accounts.device_account(device_hash)
        if account_id is None:
            address = sessions.client_address(context.peer())
            await self._count_registration(context, "guest", address)
            account_id, _created = await self.accounts.guest_account(
                device_hash, sessions.new_account_id(), ("player",), now=self.clock()
            )
        await self._refuse_banned(context, "guest", account_id)
        metrics.LOGINS.labels("guest", "ok").inc()
        roles = sessions.roles_for(account_id, self.config.admin_accounts)
        return await self._new_session(account_id, roles, "guest")

    async def ServiceLogin(
        self, request: auth_pb2.ServiceLoginRequest, context: Context
    ) -> auth_pb2.Session:
        try:
            client_id = accounts.check_secret_size(request.client_id, "client_id")
            secret = accounts.check_secret_size(request.client_secret, "client_secret")
        except InputError as err:
            await _invalid(context, err)
        expected = self.config.service_clients.get(client_id)
        # Compare fixed-size digests in constant time, also for an unknown client id.
        given_digest = hashlib.sha256(secret.encode()).digest()
        expected_digest = hashlib.sha256((expected or os.urandom(16).hex()).encode()).digest()
        if not hmac.compare_digest(given_digest, expected_digest) or expected is None:
            address = sessions.client_address(context.peer())
            await self._failed_service_login(context, client_id, address)
        await self.store.clear_failures("service", client_id)
        metrics.LOGINS.labels("service", "ok").inc()
        return await self._new_session(
            f"service:{client_id}", ("service",), "service", refresh=False
        )

    async def Refresh(self, request: auth_pb2.RefreshRequest, context: Context) -> auth_pb2.Session:
        try:
            presented = accounts.check_secret_size(request.refresh_token, "refresh_token")
        except InputError as err:
            await _invalid(context, err)
        now = self.clock()
        new_token = sessions.new_refresh_token()
        rotation = await self.store.rotate_refresh(
            sessions.digest(presented),
            sessions.digest(new_token),
            ttl_s=self.config.refresh_ttl_s,
            revoke_until=self._horizon(now),
            now=now,
            reuse_window_s=self.config.reuse_window_s,
        )
        metrics.REFRESHES.labels(rotation.status.lower()).inc()
        if rotation.status == "REUSED":
            metrics.REVOCATIONS.labels("reuse").inc()
            log.warning(
                "refresh token reused; session revoked",
                extra={"session": rotation.session_id, "account": rotation.account_id},
            )
            await errors.abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "refresh token was already used; the session has been revoked",
                reason="REFRESH_TOKEN_REUSED",
            )
        if rotation.status in ("OK", "GONE") and rotation.account_id:
            ban = await self.bans.in_force(rotation.account_id, now=now)
            if ban is not None:
                # A session that outlived its ban's revocation (a race) ends here.
                await self.store.revoke_session(
                    rotation.session_id, until=self._horizon(now), now=now
                )
                await _banned(context, "refresh", ban)
        if rotation.status == "GONE":
            await errors.abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "the session has ended (logged out, revoked or expired)",
                reason="SESSION_REVOKED",
            )
        if rotation.status != "OK":
            await errors.abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "refresh token is invalid or expired",
                reason="REFRESH_TOKEN_INVALID",
            )
        return self._session_message(
            rotation.account_id, rotation.session_id, rotation.roles, new_token, now
        )

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        claims = current_claims()
        now = self.clock()
        await self.store.revoke_session(claims.sid, until=self._horizon(now), now=now)
        metrics.REVOCATIONS.labels("logout").inc()
        return auth_pb2.LogoutResponse()

    async def RevokeSessions(
        self, request: auth_pb2.RevokeSessionsRequest, context: Context
    ) -> auth_pb2.RevokeSessionsResponse:
        if not request.account_id or len(request.account_id) > 128:
            await errors.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "account_id is required (at most 128 characters)",
                reason="INVALID_ARGUMENT",
                field="account_id",
            )
        now = self.clock()
        count = await self.store.revoke_account(
            request.account_id, until=self._horizon(now), now=now
        )
        metrics.REVOCATIONS.labels("admin").inc(count)
        log.info(
            "sessions revoked by admin",
            extra={"account": request.account_id, "count": count, "by": current_claims().sub},
        )
        return auth_pb2.RevokeSessionsResponse(revoked=count)

    async def BanAccount(
        self, request: auth_pb2.BanAccountRequest, context: Context
    ) -> auth_pb2.Ban:
        now = self.clock()
        admin = current_claims().sub
        try:
            account_id = accounts.check_account_id(request.account_id)
            reason = accounts.check_ban_reason(request.reason)
            until = accounts.check_ban_until(request.until, now=now)
        except InputError as err:
            self._audit(context, "ban", request.account_id[:128], "refused", err.message)
            await _invalid(context, err)
        ban, revoked = await self._ban(account_id, reason, admin, until=until, now=now)
        if ban is None:
            self._audit(context, "ban", account_id, "refused", "no such account")
            await _no_account(context)
        self._audit(context, "ban", account_id, "ok", _ban_detail(ban, revoked))
        reply = _ban_message(ban)
        reply.revoked_sessions = revoked
        return reply

    async def _ban(
        self, account_id: str, reason: str, actor: str, *, until: int, now: float
    ) -> tuple[BanRecord | None, int]:
        """Ban ``account_id`` and revoke its sessions: the ban (None for no such
        account) and how many sessions were revoked."""
        ban = await self.bans.ban(account_id, reason, actor, until=until, now=now)
        if ban is None:
            return None, 0
        revoked = await self.store.revoke_account(account_id, until=self._horizon(now), now=now)
        metrics.REVOCATIONS.labels("ban").inc(revoked)
        return ban, revoked

    async def LiftBan(
        self, request: auth_pb2.LiftBanRequest, context: Context
    ) -> auth_pb2.LiftBanResponse:
        try:
            account_id = accounts.check_account_id(request.account_id)
        except InputError as err:
            self._audit(context, "lift_ban", request.account_id[:128], "refused", err.message)
            await _invalid(context, err)
        if await self.accounts.account(account_id) is None:
            self._audit(context, "lift_ban", account_id, "refused", "no such account")
            await _no_account(context)
        lifted = await self.bans.lift(account_id, now=self.clock())
        self._audit(context, "lift_ban", account_id, "ok", f"{lifted} bans lifted")
        return auth_pb2.LiftBanResponse(lifted=lifted)

    async def ListBans(
        self, request: auth_pb2.ListBansRequest, context: Context
    ) -> auth_pb2.ListBansResponse:
        try:
            size, before = accounts.check_ban_page(request.page_size, request.page_token)
        except InputError as err:
            await _invalid(context, err)
        found = await self.bans.page(
            active_only=request.active_only, before_id=before, limit=size, now=self.clock()
        )
        reply = auth_pb2.ListBansResponse(bans=[_ban_message(b) for b in found])
        if len(found) == size:
            reply.next_page_token = str(found[-1].ban_id)
        return reply

    async def ListSuspects(
        self, request: auth_pb2.ListSuspectsRequest, context: Context
    ) -> auth_pb2.ListSuspectsResponse:
        try:
            world, limit = cheating.check_suspects_request(request.world, request.limit)
        except InputError as err:
            await _refuse(context, err)
        weights = self.config.cheat.weights
        found = cheating.ranked(await self.store.suspects(world), weights, limit)
        return auth_pb2.ListSuspectsResponse(
            suspects=[
                auth_pb2.Suspect(
                    player_id=s.player,
                    score=cheating.score(s.tallies, weights),
                    tallies=s.tallies,
                    zone=s.zone,
                    since_ms=s.since_ms,
                    action=s.action,
                )
                for s in found
            ]
        )

    async def enforce_cheat_policy(self, world: str) -> list[str]:
        """Act on ``world``'s players over the cheat policy's threshold, once per
        player across every auth replica: kick (through the relays' kick channel)
        or ban (as BanAccount does). Each action is audited as the actor
        ``policy:cheat`` and counted; the players acted on. An action that raises
        (PostgreSQL or Redis down) gives its claim back, so a later pass retries it."""
        policy = self.config.cheat
        acted = []
        for suspect in cheating.due(await self.store.suspects(world), policy):
            if not await self.store.claim_cheat_action(world, suspect.player, policy.action):
                continue  # another replica acted first
            try:
                outcome, detail = await self._act(world, suspect, policy)
            except Exception:
                metrics.CHEAT_ACTIONS.labels(policy.action, "error").inc()
                await self.store.release_cheat_action(world, suspect.player)
                raise
            acted.append(suspect.player)
            metrics.CHEAT_ACTIONS.labels(policy.action, outcome).inc()
            log.warning(
                "cheat policy acted",
                extra={"world": world, "player": suspect.player, "action": policy.action},
            )
            self.audit.write(
                AuditRecord(CHEAT_POLICY, policy.action, suspect.player, "auth", outcome, detail)
            )
        return acted

    async def _act(
        self, world: str, suspect: cheating.Suspect, policy: cheating.CheatPolicy
    ) -> tuple[str, str]:
        """Kick or ban ``suspect``: the outcome (``ok``, or ``failed`` for a player
        with no account) and the audit detail."""
        why = cheating.verdict(suspect, policy, world)
        if policy.action == "kick":
            relays = await self.store.publish_kick(world, suspect.player, why)
            return "ok", f"{why}; {relays} relays told"
        now = self.clock()
        until = int(now) + policy.ban_s if policy.ban_s else 0
        ban, revoked = await self._ban(suspect.player, why, CHEAT_POLICY, until=until, now=now)
        if ban is None:
            return "failed", f"no such account; {why}"
        return "ok", _ban_detail(ban, revoked)

    async def _refuse_banned(self, context: Context, kind: str, account_id: str) -> None:
        """Abort a login of ``account_id`` with PERMISSION_DENIED when a ban is in force."""
        ban = await self.bans.in_force(account_id, now=self.clock())
        if ban is not None:
            await _banned(context, kind, ban)

    def _audit(self, context: Context, action: str, target: str, outcome: str, detail: str) -> None:
        """Queue an audit record of the calling admin's ``action`` (never fails it)."""
        address = sessions.client_address(context.peer())
        self.audit.write(
            AuditRecord(current_claims().sub, action, target, address, outcome, detail)
        )

    def _audit_limit(self, action: str, target: str, address: str, detail: str) -> None:
        """Audit a lockout or throttle that failed logins started (no actor: auth did it)."""
        self.audit.write(AuditRecord("", action, target, address, "ok", detail))

    async def GetPublicKeys(
        self, request: auth_pb2.GetPublicKeysRequest, context: Context
    ) -> auth_pb2.PublicKeySet:
        return public_key_set(self.keys.ring, self.clock(), self.config.keys_max_age_s)

    async def IssueConnectToken(
        self, request: auth_pb2.ConnectTokenRequest, context: Context
    ) -> auth_pb2.ConnectToken:
        now = int(self.clock())
        reply = auth_pb2.ConnectToken()
        try:
            self._connect_token(request, current_claims(), now, self.keys.ring.current(now), reply)
        except TokenRefused as refused:
            await errors.abort(
                context, refused.code, refused.message, reason=refused.reason, field=refused.field
            )
        metrics.TOKENS_ISSUED.labels("connect").inc()
        return reply

    async def IssueConnectTokens(
        self, request: auth_pb2.IssueConnectTokensRequest, context: Context
    ) -> auth_pb2.IssueConnectTokensResponse:
        """Connect tokens for many players (a span ``auth.connect_tokens`` in the
        caller's trace, when it sends one)."""
        with tracing.serving(
            "auth.connect_tokens",
            context.invocation_metadata(),
            {"tessera.requests": len(request.requests)},
        ) as span:
            response = await self._issue_connect_tokens(request, context)
            span.set_attribute(
                "tessera.issued", sum(1 for r in response.results if r.HasField("token"))
            )
            return response

    async def _issue_connect_tokens(
        self, request: auth_pb2.IssueConnectTokensRequest, context: Context
    ) -> auth_pb2.IssueConnectTokensResponse:
        if len(request.requests) > MAX_CONNECT_BATCH:
            await errors.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {MAX_CONNECT_BATCH} connect-token requests per call, "
                f"got {len(request.requests)}",
                reason="BATCH_TOO_LARGE",
                field="requests",
            )
        # What every token of the call shares is looked up once: the caller, the
        # time and the signing key.
        claims, now = current_claims(), int(self.clock())
        key = self.keys.ring.current(now)
        response = auth_pb2.IssueConnectTokensResponse()
        issued = 0
        for item in request.requests:
            result = response.results.add()
            try:
                self._connect_token(item, claims, now, key, result.token)
                issued += 1
            except TokenRefused as refused:
                result.error.code = refused.code.value[0]
                result.error.message = refused.message
                result.error.detail.reason = refused.reason
                result.error.detail.field = refused.field
        metrics.TOKENS_ISSUED.labels("connect").inc(issued)
        return response

    async def GetPlayerData(
        self, request: auth_pb2.GetPlayerDataRequest, context: Context
    ) -> auth_pb2.PlayerData:
        try:
            playerdata.check_key(request.world, request.player_id)
        except InputError as err:
            await _refuse(context, err)
        found = await player_records.load(self.database, request.world, request.player_id)
        if found is None:
            await errors.abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"player {request.player_id!r} has no data in world {request.world!r}",
                reason="NO_PLAYER_DATA",
                field="player_id",
            )
        return playerdata.to_message(found)

    async def PutPlayerData(
        self, request: auth_pb2.PutPlayerDataRequest, context: Context
    ) -> auth_pb2.PlayerData:
        try:
            record = playerdata.to_record(request.data)
        except InputError as err:
            await _refuse(context, err)
        written = await player_records.put(
            self.database, record, request.expected_version, now=self.clock()
        )
        if written is None:
            await errors.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"player data of {record.player!r} is not at version {request.expected_version}"
                " (read it again)",
                reason="STALE_VERSION",
                field="expected_version",
            )
        log.info(
            "player data written",
            extra={
                "world": record.world,
                "player": record.player,
                "version": written.version,
                "by": current_claims().sub,
            },
        )
        return playerdata.to_message(written)

    # accounts and profiles

    async def _target(self, context: Context, account_id: str) -> str:
        """The account a profile request is about: the caller's own when empty; only
        an admin may name another (PERMISSION_DENIED otherwise)."""
        claims = current_claims()
        if not account_id or account_id == claims.sub:
            return claims.sub
        if "admin" not in claims.roles:
            await errors.abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                "only an admin may read or change another account",
                reason="NOT_YOUR_ACCOUNT",
                field="account_id",
            )
        try:
            return accounts.check_account_id(account_id)
        except InputError as err:
            await _refuse(context, err)

    async def _view(self, context: Context, account_id: str) -> auth_pb2.Account:
        found = await self.accounts.view(account_id)
        if found is None:
            await _no_account(context)
        return _account_message(found)

    async def GetAccount(
        self, request: auth_pb2.GetAccountRequest, context: Context
    ) -> auth_pb2.Account:
        return await self._view(context, await self._target(context, request.account_id))

    async def UpdateAccount(
        self, request: auth_pb2.UpdateAccountRequest, context: Context
    ) -> auth_pb2.Account:
        account_id = await self._target(context, request.account_id)
        own = account_id == current_claims().sub
        try:
            # ListFields holds the optional fields that are set, even to "".
            changes = profiles.check_changes(
                {d.name: v for d, v in request.ListFields() if d.name in profiles.FIELDS}
            )
        except InputError as err:
            if not own:
                self._audit(context, "update_account", account_id, "refused", err.message)
            await _refuse(context, err)
        if not await self.accounts.update_profile(account_id, changes, now=self.clock()):
            await _no_account(context)
        if not own:
            self._audit(context, "update_account", account_id, "ok", ", ".join(changes))
        return await self._view(context, account_id)

    async def _device(self, context: Context, device_id: str) -> str:
        try:
            return sessions.digest(accounts.check_device_id(device_id))
        except InputError as err:
            await _refuse(context, err)

    async def LinkDevice(
        self, request: auth_pb2.DeviceRequest, context: Context
    ) -> auth_pb2.Account:
        device_hash = await self._device(context, request.device_id)
        account_id = current_claims().sub
        owner = await self.accounts.link_device(account_id, device_hash, now=self.clock())
        if owner != account_id:
            await errors.abort(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                "the device is linked to another account",
                reason="DEVICE_TAKEN",
                field="device_id",
            )
        return await self._view(context, account_id)

    async def UnlinkDevice(
        self, request: auth_pb2.DeviceRequest, context: Context
    ) -> auth_pb2.Account:
        device_hash = await self._device(context, request.device_id)
        account_id = current_claims().sub
        outcome = await self.accounts.unlink_device(account_id, device_hash)
        if outcome == "not_linked":
            await errors.abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                "the device is not linked to this account",
                reason="DEVICE_NOT_LINKED",
                field="device_id",
            )
        if outcome == "last":
            await errors.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "a guest account's only device cannot be unlinked (it is the only way in)",
                reason="LAST_DEVICE",
                field="device_id",
            )
        return await self._view(context, account_id)

    def _connect_token(
        self,
        request: auth_pb2.ConnectTokenRequest,
        claims: Claims,
        now: int,
        key: SigningKey,
        out: auth_pb2.ConnectToken,
    ) -> None:
        """Issue the token ``request`` asks of the caller ``claims`` into ``out``; raises
        TokenRefused (before writing anything) when the single call would fail."""
        player_id, session_id = claims.sub, claims.sid
        if "service" in claims.roles:
            if not request.player_id:
                raise TokenRefused(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "player_id is required when a service asks for a connect token",
                    reason="INVALID_ARGUMENT",
                    field="player_id",
                )
            player_id, session_id = request.player_id, request.session_id or claims.sid
        elif request.player_id and request.player_id != claims.sub:
            raise TokenRefused(
                grpc.StatusCode.PERMISSION_DENIED,
                "only role service may ask for another player's connect token",
                reason="FORBIDDEN",
                field="player_id",
            )
        _check_destination(request, claims.roles)
        match = _match_context(request, claims.roles)
        region = request.region or "default"
        relays = self.config.relays.get(region)
        if relays is None:
            raise TokenRefused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown relay region {region!r}; known: {', '.join(sorted(self.config.relays))}",
                reason="UNKNOWN_REGION",
                field="region",
            )
        grant = connect_token.ConnectGrant(
            token_id=connect_token.new_token_id(),
            player_id=player_id,
            session_id=session_id,
            relay_addresses=relays,
            client_to_server_key=connect_token.new_channel_key(),
            server_to_client_key=connect_token.new_channel_key(),
            issued_at=now,
            expires_at=now + self.config.connect_ttl_s,
            timeout_s=self.config.connect_timeout_s,
            world=request.world,
            zone=request.zone,
            match=match,
        )
        try:
            token = connect_token.issue_connect_token(
                grant, signing_key=key, sealing_key=self.config.sealing_key
            )
        except ValueError as err:
            raise TokenRefused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"cannot issue a connect token: {err}",
                reason="INVALID_ARGUMENT",
                field="player_id",
            ) from None
        out.token = token
        out.relay_addresses.extend(relays)
        out.client_to_server_key = grant.client_to_server_key
        out.server_to_client_key = grant.server_to_client_key
        out.expires_at = grant.expires_at
        out.timeout_s = grant.timeout_s
        out.player_id = player_id
        out.world = grant.world
        out.zone = grant.zone


class TokenRefused(Exception):
    """Why a connect-token request gets no token: the status and ErrorDetail the
    single call aborts with, or one result of a batch carries."""

    def __init__(
        self, code: grpc.StatusCode, message: str, *, reason: str, field: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.field = field


def _check_destination(request: auth_pb2.ConnectTokenRequest, roles: Sequence[str]) -> None:
    """A destination (world, zone) is for Tessera's services and admins only, and
    must name DNS labels; raises TokenRefused otherwise."""
    if not (request.world or request.zone):
        return
    if not DESTINATION_ROLES.intersection(roles):
        raise TokenRefused(
            grpc.StatusCode.PERMISSION_DENIED,
            "only roles service and admin may name a destination world or zone",
            reason="DESTINATION_NOT_ALLOWED",
            field="zone" if request.zone else "world",
        )
    if request.zone and not request.world:
        # Zone names are only unique within a world: a relay of any world would take it.
        raise TokenRefused(
            grpc.StatusCode.INVALID_ARGUMENT,
            "a destination zone needs its world",
            reason="INVALID_ARGUMENT",
            field="world",
        )
    for field, name in (("world", request.world), ("zone", request.zone)):
        if not connect_token.is_destination_name(name):
            raise TokenRefused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{field} {name!r} must be a DNS label (a-z, 0-9, '-', at most 63)",
                reason="INVALID_ARGUMENT",
                field=field,
            )


def _match_context(
    request: auth_pb2.ConnectTokenRequest, roles: Sequence[str]
) -> connect_token.MatchContext | None:
    """The match context to seal into the token: for role ``service`` (the
    matchmaker) only, within the token's bounds; raises TokenRefused otherwise."""
    if not (request.match_id or request.team or request.role):
        return None
    if "service" not in roles:
        raise TokenRefused(
            grpc.StatusCode.PERMISSION_DENIED,
            "only role service (the matchmaker) may put a match context in a connect token",
            reason="MATCH_NOT_ALLOWED",
            field="match_id",
        )
    if not request.match_id:
        raise TokenRefused(
            grpc.StatusCode.INVALID_ARGUMENT,
            "team and role need a match_id",
            reason="INVALID_ARGUMENT",
            field="match_id",
        )
    match = connect_token.MatchContext(request.match_id, request.team, request.role)
    problem = connect_token.match_problem(match)
    if problem is not None:
        field, message = problem
        raise TokenRefused(
            grpc.StatusCode.INVALID_ARGUMENT, message, reason="INVALID_ARGUMENT", field=field
        )
    return match


def public_key_set(ring: KeyRing, now: float, max_age_s: int) -> auth_pb2.PublicKeySet:
    """The PublicKeySet message for ``ring`` at ``now``."""
    return auth_pb2.PublicKeySet(
        keys=[public_key_entry(k.kid, k.public_key, k.retired_at) for k in ring.published(now)],
        max_age_s=max_age_s,
    )


async def _invalid(context: Context, err: InputError) -> NoReturn:
    metrics.LOGINS.labels("input", "invalid_argument").inc()
    await errors.abort(
        context,
        grpc.StatusCode.INVALID_ARGUMENT,
        err.message,
        reason=err.reason,
        field=err.field,
    )


async def _refuse_locked(context: Context, kind: str, wait_s: float, why: str) -> None:
    """RESOURCE_EXHAUSTED with ``retry_after_s`` while ``wait_s`` is left on a lock."""
    if wait_s <= 0:
        return
    metrics.LOGINS.labels(kind, "locked").inc()
    await errors.abort(
        context,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"{why}; retry in {math.ceil(wait_s)} s",
        reason="LOGIN_LOCKED",
        retry_after_s=wait_s,
    )


def _ban_detail(ban: BanRecord, revoked: int) -> str:
    term = f"until {ban.until}" if ban.until else "permanently"
    return f"banned {term} ({ban.reason}); {revoked} sessions revoked"


def _ban_message(ban: BanRecord) -> auth_pb2.Ban:
    return auth_pb2.Ban(
        id=ban.ban_id,
        account_id=ban.account_id,
        reason=ban.reason,
        banned_by=ban.banned_by,
        created_at=ban.created_at,
        until=ban.until,
        lifted_at=ban.lifted_at,
    )


async def _banned(context: Context, kind: str, ban: BanRecord) -> NoReturn:
    """Refuse a banned account: only that it is banned and until when (0 = permanent)."""
    metrics.LOGINS.labels(kind, "banned").inc()
    term = f"until {ban.until} (Unix time)" if ban.until else "permanently"
    await errors.abort(
        context,
        grpc.StatusCode.PERMISSION_DENIED,
        f"banned {term}",
        reason="BANNED",
        metadata={"until": str(ban.until)},
    )


def _account_message(view: AccountView) -> auth_pb2.Account:
    p = view.profile
    return auth_pb2.Account(
        account_id=view.account.account_id,
        username=view.account.username,
        kind=view.account.kind,
        created_at=view.created_at,
        profile=auth_pb2.Profile(
            display_name=p.display_name,
            avatar_url=p.avatar_url,
            lang_tag=p.lang_tag,
            location=p.location,
            timezone=p.timezone,
            metadata=p.metadata,
        ),
        devices=view.devices,
    )


async def _no_account(context: Context) -> NoReturn:
    await errors.abort(
        context,
        grpc.StatusCode.NOT_FOUND,
        "no such account",
        reason="ACCOUNT_NOT_FOUND",
        field="account_id",
    )


async def _taken(context: Context) -> NoReturn:
    metrics.LOGINS.labels("register", "taken").inc()
    await errors.abort(
        context,
        grpc.StatusCode.ALREADY_EXISTS,
        "username is taken",
        reason="USERNAME_TAKEN",
        field="username",
    )


async def _refuse(context: Context, err: InputError) -> NoReturn:
    """INVALID_ARGUMENT for a player-data or account request (logins count theirs in
    _invalid)."""
    await errors.abort(
        context, grpc.StatusCode.INVALID_ARGUMENT, err.message, reason=err.reason, field=err.field
    )
