"""The Auth service on a real grpc.aio server with real Redis: every RPC, good and bad."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import statistics
import time
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from tessera.auth import store
from tessera.authclient.access import UNAUTHENTICATED_MESSAGE
from tessera.authclient.bearer import bearer_metadata
from tessera.authclient.keys import keys_from_proto
from tessera.authclient.verifier import Verifier
from tessera.common import errors
from tessera.common.audit import AuditLog, AuditRecord
from tessera.common.database import Pool
from tessera.harness.audit import audit_trail
from tessera.relay.store import RelayStore
from tessera.v1 import auth_pb2
from tessera.wire import connect_token
from tessera.wire.access_token import b64url
from tessera.zone.store import ZoneStore

from .conftest import SEALING_KEY, RunningAuth, StartAuth, fails, service_metadata

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"


async def register(auth: RunningAuth, username: str, password: str = PASSWORD) -> auth_pb2.Session:
    return await auth.stub.Register(auth_pb2.RegisterRequest(username=username, password=password))


async def login(auth: RunningAuth, username: str, password: str = PASSWORD) -> auth_pb2.Session:
    return await auth.stub.Login(auth_pb2.LoginRequest(username=username, password=password))


async def verifier_for(auth: RunningAuth) -> Verifier:
    keys = keys_from_proto(await auth.stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest()))
    return Verifier(keys)


async def test_register_login_and_tokens_verify(auth: RunningAuth) -> None:
    session = await register(auth, "Alice")
    assert session.roles == ["player"]
    assert session.refresh_token and session.access_expires_at > time.time() + 800
    verifier = await verifier_for(auth)
    claims = verifier.verify(session.access_token)
    assert (claims.sub, claims.sid) == (session.account_id, session.session_id)
    again = await login(auth, "ALICE")
    assert again.account_id == session.account_id
    assert again.session_id != session.session_id


async def test_usernames_are_normalized_and_unique(auth: RunningAuth) -> None:
    await register(auth, "alice")
    err = await fails(register(auth, "ＡＬＩＣＥ"))  # full-width: NFKC folds it
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert errors.detail_of(err).reason == "USERNAME_TAKEN"
    assert (await login(auth, "Ａｌｉｃｅ")).roles == ["player"]


async def test_concurrent_registrations_of_one_name_create_one_account(auth: RunningAuth) -> None:
    results = await asyncio.gather(
        *(register(auth, "racer", f"{PASSWORD} {i}") for i in range(12)), return_exceptions=True
    )
    ok = [r for r in results if isinstance(r, auth_pb2.Session)]
    taken = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1
    assert len(taken) == 11
    assert {e.code() for e in taken} == {grpc.StatusCode.ALREADY_EXISTS}


@pytest.mark.parametrize(
    ("username", "password", "field", "reason"),
    [
        ("ab", PASSWORD, "username", "USERNAME_INVALID"),
        ("a" * 33, PASSWORD, "username", "USERNAME_INVALID"),
        ("bad name", PASSWORD, "username", "USERNAME_INVALID"),
        ("ällo", PASSWORD, "username", "USERNAME_INVALID"),
        ("раураl", PASSWORD, "username", "USERNAME_INVALID"),  # Cyrillic look-alikes
        ("x" * 100_000, PASSWORD, "username", "USERNAME_INVALID"),
        ("", PASSWORD, "username", "USERNAME_INVALID"),
        ("bob", "short", "password", "PASSWORD_TOO_SHORT"),
        ("bob", "password123", "password", "PASSWORD_TOO_COMMON"),
        ("bob", "Qwertyuiop123", "password", "PASSWORD_TOO_COMMON"),
        ("bob", "aaaaaaaaaaaa", "password", "PASSWORD_TOO_COMMON"),
        ("bobby", "my name is bobby!", "password", "PASSWORD_CONTAINS_USERNAME"),
        ("bob", "p" * 257, "password", "PASSWORD_TOO_LONG"),
        ("bob", "", "password", "PASSWORD_INVALID"),
    ],
)
async def test_registration_input_rules(
    auth: RunningAuth, username: str, password: str, field: str, reason: str
) -> None:
    err = await fails(register(auth, username, password))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    detail = errors.detail_of(err)
    assert (detail.field, detail.reason) == (field, reason)
    assert err.details()


async def test_over_long_login_inputs_are_rejected_before_hashing(auth: RunningAuth) -> None:
    for username, password in (("alice", "p" * 100_000), ("a" * 100_000, "pw")):
        err = await fails(login(auth, username, password))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await fails(auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token="r" * 10_000)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_no_user_enumeration(start_auth: StartAuth) -> None:
    # Heavier argon2 here so the hash dominates and timing differences would show.
    auth = await start_auth(AUTH_ARGON2_MEMORY_KIB="8192", AUTH_LOGIN_FAILS_PER_ACCOUNT="1000")
    await register(auth, "known")
    wrong = await fails(login(auth, "known", "wrong password!"))
    unknown = await fails(login(auth, "nobody", "wrong password!"))
    assert wrong.code() == unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.details() == unknown.details() == "invalid username or password"
    assert errors.detail_of(wrong) == errors.detail_of(unknown)

    # CPU time of this process (the auth service runs in it, hashing on a worker
    # thread), not wall time: other jobs on a loaded machine do not skew it.
    async def timed(username: str) -> float:
        started = time.process_time()
        await fails(login(auth, username, "wrong password!"))
        return time.process_time() - started

    known_times, unknown_times = [], []
    for _ in range(12):
        known_times.append(await timed("known"))
        unknown_times.append(await timed("nobody"))
    known, unknown_ = statistics.median(known_times), statistics.median(unknown_times)
    # Without the dummy hash unknown users would answer ~5x faster (hash ~8 ms, RPC ~1.5 ms).
    assert 0.5 < unknown_ / known < 2.0, (known, unknown_)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def audited(database: Pool, count: int, **match: str) -> list[AuditRecord]:
    """The audit records whose fields equal ``match`` (newest first), once there
    are ``count`` of them (or after 15 s): services write them off the request path."""
    deadline = time.monotonic() + 15
    while True:
        records = [
            r
            for r in await AuditLog(database).recent(1000)
            if all(getattr(r, k) == v for k, v in match.items())
        ]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.05)


async def test_account_backoff_doubles_and_success_resets(
    start_auth: StartAuth, database: Pool
) -> None:
    auth = await start_auth(
        AUTH_LOGIN_FAILS_PER_ACCOUNT="3", AUTH_LOCKOUT_BASE_S="0.3", AUTH_LOCKOUT_MAX_S="5"
    )
    await register(auth, "carol")
    for _ in range(3):
        err = await fails(login(auth, "carol", "not the password"))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await fails(login(auth, "carol"))  # even the right password
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    first = errors.detail_of(err)
    assert first.reason == "LOGIN_LOCKED"
    assert 0 < first.retry_after_s <= 0.3
    await asyncio.sleep(first.retry_after_s + 0.05)
    # One more failure after the lock ends doubles it.
    await fails(login(auth, "carol", "not the password"))
    second = errors.detail_of(await fails(login(auth, "carol")))
    assert 0.3 < second.retry_after_s <= 0.6
    records = await audited(database, 2, action="login_lockout")
    assert [(r.target, r.source, r.actor) for r in records] == [("carol", "127.0.0.1", "")] * 2
    assert "locked for 0.6 s" in records[0].detail
    await asyncio.sleep(second.retry_after_s + 0.05)
    assert (await login(auth, "carol")).roles == ["player"]
    # The success cleared the count: the next failure is the first again.
    assert (
        await fails(login(auth, "carol", "nope nope"))
    ).code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await login(auth, "carol")).roles == ["player"]


async def test_concurrent_guesses_cannot_pass_the_lock(start_auth: StartAuth) -> None:
    auth = await start_auth(AUTH_LOGIN_FAILS_PER_ACCOUNT="3", AUTH_LOCKOUT_BASE_S="60")
    await register(auth, "hana")
    guesses = [login(auth, "hana", f"guess number {i}") for i in range(20)]
    results = await asyncio.gather(*guesses, return_exceptions=True)
    codes = [r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(codes) == 20
    assert codes.count(grpc.StatusCode.UNAUTHENTICATED) == 3
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 17


async def test_unknown_usernames_lock_like_known_ones(start_auth: StartAuth) -> None:
    auth = await start_auth(AUTH_LOGIN_FAILS_PER_ACCOUNT="2", AUTH_LOCKOUT_BASE_S="5")
    await register(auth, "erin")
    answers = []
    for username in ("erin", "ghost"):
        for _ in range(2):
            await fails(login(auth, username, "not the password"))
        err = await fails(login(auth, username, "not the password"))
        answers.append((err.code(), err.details(), errors.detail_of(err).reason))
    assert answers[0] == answers[1]
    assert answers[0][0] == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_failing_address_slows_but_never_refuses(
    start_auth: StartAuth, database: Pool
) -> None:
    auth = await start_auth(
        AUTH_LOGIN_FAILS_PER_ADDRESS="5",
        AUTH_ADDRESS_DELAY_BASE_S="0.05",
        AUTH_ADDRESS_DELAY_MAX_S="0.2",
    )
    await register(auth, "victim")
    throttled = sample("tessera_auth_throttled_logins_total")
    # 100 wrong passwords from this address, over 50 usernames (2 each: below the
    # account threshold), 25 at a time.
    for batch in range(4):
        calls = [login(auth, f"user{(batch * 25 + i) % 50}", "not the password") for i in range(25)]
        for result in await asyncio.gather(*calls, return_exceptions=True):
            assert isinstance(result, grpc.aio.AioRpcError)
            assert result.code() == grpc.StatusCode.UNAUTHENTICATED
    # Another player's right password from the same address: slowed, served.
    assert (await login(auth, "victim")).roles == ["player"]
    # Every call after the first batch (25 failures) waited.
    assert sample("tessera_auth_throttled_logins_total") - throttled >= 76
    # And the matchmaker's service login is not slowed or refused.
    await service_metadata(auth)
    records = await audited(database, 1, action="login_throttle")
    assert [(r.target, r.source) for r in records] == [("127.0.0.1", "127.0.0.1")]


async def test_service_logins_have_their_own_limit(
    start_auth: StartAuth, redis: Redis, database: Pool
) -> None:
    auth = await start_auth(
        AUTH_SERVICE_FAILS_PER_CLIENT="3",
        AUTH_LOGIN_FAILS_PER_ADDRESS="1",
        AUTH_ADDRESS_DELAY_BASE_S="10",
        AUTH_ADDRESS_DELAY_MAX_S="10",
        AUTH_LOCKOUT_BASE_S="60",
    )
    wrong = auth_pb2.ServiceLoginRequest(client_id="matchmaking", client_secret="x" * 20)
    for _ in range(3):
        err = await fails(auth.stub.ServiceLogin(wrong))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await fails(auth.stub.ServiceLogin(wrong))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert errors.detail_of(err).reason == "LOGIN_LOCKED"
    assert 55 < errors.detail_of(err).retry_after_s <= 60
    [record] = await audited(database, 1, action="login_lockout")
    assert (record.target, record.source) == ("service:matchmaking", "127.0.0.1")
    # The right secret is never refused, and clears the count.
    await service_metadata(auth)
    assert (await fails(auth.stub.ServiceLogin(wrong))).code() == grpc.StatusCode.UNAUTHENTICATED
    # Service failures neither lock nor slow players: a player login from this
    # address (one failure would make it wait 10 s) is served at once.
    await register(auth, "frank")
    assert (await login(auth, "frank")).roles == ["player"]
    assert await redis.exists(store.failures_key("address", "127.0.0.1")) == 0


async def test_limits_are_shared_across_replicas(start_auth: StartAuth) -> None:
    settings = {
        "AUTH_LOGIN_FAILS_PER_ACCOUNT": "2",
        "AUTH_LOCKOUT_BASE_S": "5",
        "AUTH_LOGIN_FAILS_PER_ADDRESS": "2",
        "AUTH_ADDRESS_DELAY_BASE_S": "0.05",
    }
    one, two = await start_auth(**settings), await start_auth(**settings)
    await register(one, "dave")
    await register(one, "ella")
    await fails(login(one, "dave", "not the password"))
    await fails(login(two, "dave", "not the password"))
    for replica in (one, two):
        assert (await fails(login(replica, "dave"))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The address's two failures, one on each replica, slow a login on either.
    throttled = sample("tessera_auth_throttled_logins_total")
    assert (await login(two, "ella")).roles == ["player"]
    assert sample("tessera_auth_throttled_logins_total") == throttled + 1


async def test_limits_expire_with_the_window(start_auth: StartAuth) -> None:
    auth = await start_auth(
        AUTH_LOGIN_FAILS_PER_ACCOUNT="2",
        AUTH_LOCKOUT_BASE_S="0.2",
        AUTH_LOCKOUT_MAX_S="1",
        AUTH_LOGIN_FAIL_WINDOW_S="1",
    )
    await register(auth, "gina")
    for _ in range(2):
        await fails(login(auth, "gina", "not the password"))
    await asyncio.sleep(1.1)  # the window from the last failure
    # The count is gone: this failure is the first again, so no lock follows it.
    await fails(login(auth, "gina", "not the password"))
    assert (await login(auth, "gina")).roles == ["player"]


async def test_registrations_per_address(start_auth: StartAuth) -> None:
    auth = await start_auth(AUTH_REGISTRATIONS_PER_ADDRESS="2")
    await register(auth, "first")
    await auth.stub.GuestLogin(auth_pb2.GuestLoginRequest(device_id="device-0123456789abcdef"))
    err = await fails(register(auth, "third"))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    detail = errors.detail_of(err)
    assert detail.reason == "REGISTRATION_RATE_LIMITED" and detail.retry_after_s > 0


async def test_guest_login(auth: RunningAuth) -> None:
    device = "device-0123456789abcdef"
    first = await auth.stub.GuestLogin(auth_pb2.GuestLoginRequest(device_id=device))
    again = await auth.stub.GuestLogin(auth_pb2.GuestLoginRequest(device_id=device))
    other = await auth.stub.GuestLogin(auth_pb2.GuestLoginRequest(device_id=device + "x"))
    assert first.account_id == again.account_id != other.account_id
    assert first.roles == ["player"] and first.refresh_token
    for bad in ("short", "has spaces in it here!", "x" * 129, "ü" * 20):
        err = await fails(auth.stub.GuestLogin(auth_pb2.GuestLoginRequest(device_id=bad)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert errors.detail_of(err).field == "device_id"


async def test_service_login(auth: RunningAuth) -> None:
    session = await auth.stub.ServiceLogin(
        auth_pb2.ServiceLoginRequest(client_id="matchmaking", client_secret="mm-secret-0123456789")
    )
    assert session.roles == ["service"] and not session.refresh_token
    assert session.account_id == "service:matchmaking"
    for client_id, secret in (("matchmaking", "wrong-secret-01234"), ("nobody", "whatever")):
        err = await fails(
            auth.stub.ServiceLogin(
                auth_pb2.ServiceLoginRequest(client_id=client_id, client_secret=secret)
            )
        )
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.details() == "invalid client credentials"


async def test_refresh_rotation_and_reuse_revokes_the_family(auth: RunningAuth) -> None:
    session = await register(auth, "erin")
    first = await auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=session.refresh_token))
    assert first.session_id == session.session_id
    assert first.refresh_token != session.refresh_token
    second = await auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
    # The first token comes back: theft. The whole session dies, including `second`.
    err = await fails(auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert errors.detail_of(err).reason == "REFRESH_TOKEN_REUSED"
    err = await fails(
        auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=second.refresh_token))
    )
    assert errors.detail_of(err).reason == "SESSION_REVOKED"
    err = await fails(
        auth.stub.Logout(auth_pb2.LogoutRequest(), metadata=bearer_metadata(second.access_token))
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert errors.detail_of(err).reason == "UNAUTHENTICATED"
    err = await fails(auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token="made-up-token")))
    assert errors.detail_of(err).reason == "REFRESH_TOKEN_INVALID"


async def test_logout_revokes_the_session_only(auth: RunningAuth) -> None:
    one = await register(auth, "frank")
    two = await login(auth, "frank")
    await auth.stub.Logout(auth_pb2.LogoutRequest(), metadata=bearer_metadata(one.access_token))
    err = await fails(auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=one.refresh_token)))
    assert errors.detail_of(err).reason == "SESSION_REVOKED"
    refreshed = await auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=two.refresh_token))
    assert refreshed.session_id == two.session_id


async def test_admin_revokes_all_sessions(auth: RunningAuth, start_auth: StartAuth) -> None:
    registered = await register(auth, "root-admin")
    assert registered.roles == ["player"]  # a name alone never makes an admin
    await auth.stub.Logout(
        auth_pb2.LogoutRequest(), metadata=bearer_metadata(registered.access_token)
    )
    auth = await start_auth(AUTH_ADMIN_ACCOUNTS=registered.account_id)
    admin = await login(auth, "root-admin")
    player = await register(auth, "grace")
    await login(auth, "grace")
    assert admin.roles == ["player", "admin"]
    request = auth_pb2.RevokeSessionsRequest(account_id=player.account_id)
    err = await fails(
        auth.stub.RevokeSessions(request, metadata=bearer_metadata(player.access_token))
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = await auth.stub.RevokeSessions(request, metadata=bearer_metadata(admin.access_token))
    assert reply.revoked == 2
    err = await fails(
        auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=player.refresh_token))
    )
    assert errors.detail_of(err).reason == "SESSION_REVOKED"
    err = await fails(
        auth.stub.RevokeSessions(
            auth_pb2.RevokeSessionsRequest(), metadata=bearer_metadata(admin.access_token)
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_public_keys(auth: RunningAuth) -> None:
    key_set = await auth.stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest())
    assert key_set.max_age_s == 60
    assert len(key_set.keys) == 1
    key = key_set.keys[0]
    assert (key.alg, key.crv, key.retired_at) == ("EdDSA", "Ed25519", 0)
    assert len(keys_from_proto(key_set)[key.kid].public_bytes_raw()) == 32


async def test_connect_tokens(auth: RunningAuth) -> None:
    session = await register(auth, "heidi")
    md = bearer_metadata(session.access_token)
    reply = await auth.stub.IssueConnectToken(auth_pb2.ConnectTokenRequest(), metadata=md)
    assert reply.relay_addresses == ["127.0.0.1:7777"]
    assert reply.player_id == session.account_id
    assert 25 <= reply.expires_at - time.time() <= 31
    verifier = await verifier_for(auth)
    grant = connect_token.open_connect_token(
        reply.token,
        public_keys=verifier.public_keys,
        sealing_key=SEALING_KEY,
        relay_address="127.0.0.1:7777",
        now=time.time(),
    )
    assert grant.client_to_server_key == reply.client_to_server_key
    assert grant.server_to_client_key == reply.server_to_client_key
    assert (grant.player_id, grant.session_id) == (session.account_id, session.session_id)
    assert reply.client_to_server_key not in reply.token

    eu = await auth.stub.IssueConnectToken(
        auth_pb2.ConnectTokenRequest(region="eu-west"), metadata=md
    )
    assert eu.relay_addresses == ["10.0.0.1:7777", "10.0.0.2:7777"]
    err = await fails(
        auth.stub.IssueConnectToken(auth_pb2.ConnectTokenRequest(region="mars"), metadata=md)
    )
    assert errors.detail_of(err).reason == "UNKNOWN_REGION"
    err = await fails(
        auth.stub.IssueConnectToken(auth_pb2.ConnectTokenRequest(player_id="other"), metadata=md)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await fails(auth.stub.IssueConnectToken(auth_pb2.ConnectTokenRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_service_issues_connect_tokens_on_behalf_of_players(auth: RunningAuth) -> None:
    service = await auth.stub.ServiceLogin(
        auth_pb2.ServiceLoginRequest(client_id="matchmaking", client_secret="mm-secret-0123456789")
    )
    md = bearer_metadata(service.access_token)
    reply = await auth.stub.IssueConnectToken(
        auth_pb2.ConnectTokenRequest(player_id="p-42", session_id="s-42"), metadata=md
    )
    assert reply.player_id == "p-42"
    verifier = await verifier_for(auth)
    grant = connect_token.open_connect_token(
        reply.token,
        public_keys=verifier.public_keys,
        sealing_key=SEALING_KEY,
        relay_address="127.0.0.1:7777",
        now=time.time(),
    )
    assert (grant.player_id, grant.session_id) == ("p-42", "s-42")
    err = await fails(auth.stub.IssueConnectToken(auth_pb2.ConnectTokenRequest(), metadata=md))
    assert errors.detail_of(err).field == "player_id"


async def open_reply(auth: RunningAuth, reply: auth_pb2.ConnectToken) -> connect_token.ConnectGrant:
    verifier = await verifier_for(auth)
    return connect_token.open_connect_token(
        reply.token,
        public_keys=verifier.public_keys,
        sealing_key=SEALING_KEY,
        relay_address="127.0.0.1:7777",
        now=time.time(),
    )


async def test_a_service_names_the_destination(auth: RunningAuth) -> None:
    service = await auth.stub.ServiceLogin(
        auth_pb2.ServiceLoginRequest(client_id="matchmaking", client_secret="mm-secret-0123456789")
    )
    md = bearer_metadata(service.access_token)
    zone = "inst-0123456789abcdef01234567"
    reply = await auth.stub.IssueConnectToken(
        auth_pb2.ConnectTokenRequest(player_id="p-7", world="main", zone=zone), metadata=md
    )
    assert (reply.world, reply.zone) == ("main", zone)
    grant = await open_reply(auth, reply)
    assert (grant.player_id, grant.world, grant.zone) == ("p-7", "main", zone)
    # A world alone (the relay picks the zone) is fine too; no destination stays empty.
    only_world = await auth.stub.IssueConnectToken(
        auth_pb2.ConnectTokenRequest(player_id="p-7", world="main"), metadata=md
    )
    assert ((await open_reply(auth, only_world)).world, only_world.zone) == ("main", "")
    plain = await auth.stub.IssueConnectToken(
        auth_pb2.ConnectTokenRequest(player_id="p-7"), metadata=md
    )
    assert (plain.world, plain.zone) == ("", "")
    grant = await open_reply(auth, plain)
    assert (grant.world, grant.zone) == ("", "")


@pytest.mark.parametrize(
    ("world", "zone", "field"),
    [
        ("Main", "", "world"),
        ("main", "zone_b", "zone"),
        ("main", "z" * 64, "zone"),
        ("-main", "zone-b", "world"),
        ("main", "zone-b.", "zone"),
    ],
)
async def test_a_destination_must_be_dns_labels(
    auth: RunningAuth, world: str, zone: str, field: str
) -> None:
    service = await auth.stub.ServiceLogin(
        auth_pb2.ServiceLoginRequest(client_id="matchmaking", client_secret="mm-secret-0123456789")
    )
    request = auth_pb2.ConnectTokenRequest(player_id="p-7", world=world, zone=zone)
    err = await fails(
        auth.stub.IssueConnectToken(request, metadata=bearer_metadata(service.access_token))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    detail = errors.detail_of(err)
    assert (detail.reason, detail.field) == ("INVALID_ARGUMENT", field)
    assert "DNS label" in (err.details() or "")


async def test_a_destination_zone_needs_its_world(auth: RunningAuth) -> None:
    service = await auth.stub.ServiceLogin(
        auth_pb2.ServiceLoginRequest(client_id="matchmaking", client_secret="mm-secret-0123456789")
    )
    request = auth_pb2.ConnectTokenRequest(player_id="p-7", zone="inst-0123456789abcdef01234567")
    err = await fails(
        auth.stub.IssueConnectToken(request, metadata=bearer_metadata(service.access_token))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert errors.detail_of(err).field == "world"
    assert "needs its world" in (err.details() or "")


async def test_only_services_and_admins_name_a_destination(
    auth: RunningAuth, start_auth: StartAuth
) -> None:
    player = await register(auth, "judy")
    md = bearer_metadata(player.access_token)
    for request in (
        auth_pb2.ConnectTokenRequest(zone="inst-0123456789abcdef01234567"),
        auth_pb2.ConnectTokenRequest(world="main"),
        # Even an invalid name: permission is checked first, so nothing is revealed.
        auth_pb2.ConnectTokenRequest(world="main", zone="Not A Label"),
    ):
        err = await fails(auth.stub.IssueConnectToken(request, metadata=md))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert errors.detail_of(err).reason == "DESTINATION_NOT_ALLOWED"
    # The same player without a destination is fine.
    assert (await auth.stub.IssueConnectToken(auth_pb2.ConnectTokenRequest(), metadata=md)).token
    # An admin may send themselves somewhere (e.g. to inspect an instance).
    auth = await start_auth(AUTH_ADMIN_ACCOUNTS=player.account_id)
    admin = await login(auth, "judy")
    assert "admin" in admin.roles
    reply = await auth.stub.IssueConnectToken(
        auth_pb2.ConnectTokenRequest(world="main", zone="zone-b"),
        metadata=bearer_metadata(admin.access_token),
    )
    grant = await open_reply(auth, reply)
    assert (grant.player_id, grant.world, grant.zone) == (player.account_id, "main", "zone-b")


async def test_only_the_matchmaking_service_seals_a_match_context(auth: RunningAuth) -> None:
    service = await auth.stub.ServiceLogin(
        auth_pb2.ServiceLoginRequest(client_id="matchmaking", client_secret="mm-secret-0123456789")
    )
    md = bearer_metadata(service.access_token)
    match = "0123456789abcdef0123456789abcdef"
    zone = "inst-0123456789abcdef01234567"
    matched = auth_pb2.ConnectTokenRequest(
        player_id="p-7", world="main", zone=zone, match_id=match, team=1, role="healer"
    )
    grant = await open_reply(auth, await auth.stub.IssueConnectToken(matched, metadata=md))
    assert grant.match == connect_token.MatchContext(match, 1, "healer")
    # In a batch (as the matchmaker asks), next to a token without one.
    plain = auth_pb2.ConnectTokenRequest(player_id="p-8")
    bad = auth_pb2.ConnectTokenRequest(player_id="p-9", match_id=match, team=256)
    reply = await auth.stub.IssueConnectTokens(
        auth_pb2.IssueConnectTokensRequest(requests=[matched, plain, bad]), metadata=md
    )
    first, second, third = reply.results
    assert (await open_reply(auth, first.token)).match == grant.match
    assert (await open_reply(auth, second.token)).match is None
    assert third.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert (third.error.detail.reason, third.error.detail.field) == ("INVALID_ARGUMENT", "team")
    # Out of bounds: a precise INVALID_ARGUMENT naming the field, no token.
    for fields, field in (
        ({"match_id": "m" * 65}, "match_id"),
        ({"match_id": "has space"}, "match_id"),
        ({"match_id": match, "role": "r" * 33}, "role"),
        ({"team": 1}, "match_id"),
        ({"role": "tank"}, "match_id"),
    ):
        request = auth_pb2.ConnectTokenRequest(player_id="p-7", **fields)
        err = await fails(auth.stub.IssueConnectToken(request, metadata=md))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert errors.detail_of(err).field == field, fields
        assert field in (err.details() or "")
    # A player cannot put themselves in a match (nor name its team).
    player = await register(auth, "mallory")
    for request in (
        auth_pb2.ConnectTokenRequest(match_id=match),
        auth_pb2.ConnectTokenRequest(team=1),
    ):
        err = await fails(
            auth.stub.IssueConnectToken(request, metadata=bearer_metadata(player.access_token))
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert errors.detail_of(err).reason == "MATCH_NOT_ALLOWED"


async def test_forged_tokens_are_unauthenticated(auth: RunningAuth) -> None:
    session = await register(auth, "ivan")
    header_b64, payload_b64, _ = session.access_token.split(".")
    header = json.loads(_unb64(header_b64))
    key_set = await auth.stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest())
    public = _unb64(key_set.keys[0].x)
    forged_header = b64url(json.dumps({**header, "alg": "HS256"}).encode())
    mac = hmac.new(public, f"{forged_header}.{payload_b64}".encode(), hashlib.sha256).digest()
    none_header = b64url(json.dumps({**header, "alg": "none"}).encode())
    # Each is refused the same way: the answer does not say which check failed.
    for token in (
        f"{forged_header}.{payload_b64}.{b64url(mac)}",
        f"{none_header}.{payload_b64}.",
        "garbage",
    ):
        err = await fails(
            auth.stub.IssueConnectToken(
                auth_pb2.ConnectTokenRequest(), metadata=bearer_metadata(token)
            )
        )
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert errors.detail_of(err).reason == "UNAUTHENTICATED"
        assert err.details() == UNAUTHENTICATED_MESSAGE


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_login_rehashes_after_argon2_parameters_change(
    start_auth: StartAuth, database: Pool
) -> None:
    weak = await start_auth()
    session = await register(weak, "judy")
    query = "SELECT password_hash FROM accounts WHERE id = $1"
    assert "m=64,t=1" in await database.fetchval(query, session.account_id)
    stronger = await start_auth(AUTH_ARGON2_MEMORY_KIB="128", AUTH_ARGON2_TIME_COST="2")
    await login(stronger, "judy")
    assert "m=128,t=2" in await database.fetchval(query, session.account_id)
    assert (await login(stronger, "judy")).account_id == session.account_id


async def test_a_batch_gives_each_request_its_own_result_in_order(auth: RunningAuth) -> None:
    md = await service_metadata(auth)
    zone = "inst-0123456789abcdef01234567"
    requests = [
        auth_pb2.ConnectTokenRequest(player_id="p-1", session_id="s-1", world="main", zone=zone),
        auth_pb2.ConnectTokenRequest(player_id="p-2", region="mars"),
        auth_pb2.ConnectTokenRequest(player_id="p-3", region="eu-west", world="main"),
        auth_pb2.ConnectTokenRequest(player_id=""),
        auth_pb2.ConnectTokenRequest(player_id="p-5", world="main", zone="Not_A_Label"),
        auth_pb2.ConnectTokenRequest(player_id="p-6"),
    ]
    reply = await auth.stub.IssueConnectTokens(
        auth_pb2.IssueConnectTokensRequest(requests=requests), metadata=md
    )
    kinds = [r.WhichOneof("result") for r in reply.results]
    assert kinds == ["token", "error", "token", "error", "error", "token"]
    # Every refusal is what the single call answers for that request alone.
    for request, result in zip(requests, reply.results, strict=True):
        if result.WhichOneof("result") != "error":
            continue
        err = await fails(auth.stub.IssueConnectToken(request, metadata=md))
        assert result.error.code == err.code().value[0]
        assert result.error.message == err.details()
        assert result.error.detail == errors.detail_of(err)
    unknown, no_player, bad_zone = (reply.results[i].error for i in (1, 3, 4))
    assert (unknown.code, unknown.detail.reason, unknown.detail.field) == (
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        "UNKNOWN_REGION",
        "region",
    )
    assert (no_player.detail.reason, no_player.detail.field) == ("INVALID_ARGUMENT", "player_id")
    assert (bad_zone.detail.reason, bad_zone.detail.field) == ("INVALID_ARGUMENT", "zone")
    first, third, sixth = (reply.results[i].token for i in (0, 2, 5))
    grant = await open_reply(auth, first)
    assert (grant.player_id, grant.session_id, grant.world, grant.zone) == (
        "p-1",
        "s-1",
        "main",
        zone,
    )
    assert list(third.relay_addresses) == ["10.0.0.1:7777", "10.0.0.2:7777"]
    assert (third.player_id, third.world, third.zone) == ("p-3", "main", "")
    assert (await open_reply(auth, sixth)).player_id == "p-6"
    # Fresh channel keys and token ids for every token.
    assert len({t.client_to_server_key for t in (first, third, sixth)}) == 3
    assert len({t.token[:40] for t in (first, third, sixth)}) == 3
    empty = await auth.stub.IssueConnectTokens(auth_pb2.IssueConnectTokensRequest(), metadata=md)
    assert list(empty.results) == []


async def test_a_batch_is_for_services_and_admins_only(
    auth: RunningAuth, start_auth: StartAuth
) -> None:
    player = await register(auth, "mallory")
    own = auth_pb2.IssueConnectTokensRequest(requests=[auth_pb2.ConnectTokenRequest()])
    err = await fails(
        auth.stub.IssueConnectTokens(own, metadata=bearer_metadata(player.access_token))
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await fails(auth.stub.IssueConnectTokens(own))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    # An admin may batch, under the single call's rules: for themselves (also with a
    # destination), never for another player (that needs role service).
    auth = await start_auth(AUTH_ADMIN_ACCOUNTS=player.account_id)
    admin = await login(auth, "mallory")
    reply = await auth.stub.IssueConnectTokens(
        auth_pb2.IssueConnectTokensRequest(
            requests=[
                auth_pb2.ConnectTokenRequest(world="main", zone="zone-b"),
                auth_pb2.ConnectTokenRequest(player_id="someone-else"),
            ]
        ),
        metadata=bearer_metadata(admin.access_token),
    )
    mine, other = reply.results
    grant = await open_reply(auth, mine.token)
    assert (grant.player_id, grant.zone) == (player.account_id, "zone-b")
    assert other.error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert (other.error.detail.reason, other.error.detail.field) == ("FORBIDDEN", "player_id")


async def test_a_batch_holds_at_most_512_requests(auth: RunningAuth) -> None:
    md = await service_metadata(auth)

    def batch(n: int) -> auth_pb2.IssueConnectTokensRequest:
        return auth_pb2.IssueConnectTokensRequest(
            requests=[auth_pb2.ConnectTokenRequest(player_id=f"p-{i}") for i in range(n)]
        )

    full = await auth.stub.IssueConnectTokens(batch(512), metadata=md)
    assert [r.token.player_id for r in full.results] == [f"p-{i}" for i in range(512)]
    err = await fails(auth.stub.IssueConnectTokens(batch(513), metadata=md))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    detail = errors.detail_of(err)
    assert (detail.reason, detail.field) == ("BATCH_TOO_LARGE", "requests")
    assert "512" in (err.details() or "")


async def admin_and_player(
    auth: RunningAuth, start_auth: StartAuth
) -> tuple[RunningAuth, Any, Any]:
    """An auth whose admin is "root-admin", the admin's session and a player "mallory"."""
    registered = await register(auth, "root-admin")
    auth = await start_auth(AUTH_ADMIN_ACCOUNTS=registered.account_id)
    return auth, await login(auth, "root-admin"), await register(auth, "mallory")


async def ban(auth: RunningAuth, token: str, account_id: str, until: int = 0) -> auth_pb2.Ban:
    request = auth_pb2.BanAccountRequest(account_id=account_id, reason="aimbot", until=until)
    return await auth.stub.BanAccount(request, metadata=bearer_metadata(token))


async def test_a_ban_revokes_sessions_and_refuses_login_and_refresh(
    auth: RunningAuth, start_auth: StartAuth, redis: Any, database: Pool
) -> None:
    auth, admin, player = await admin_and_player(auth, start_auth)
    second = await login(auth, "mallory")
    reply = await ban(auth, admin.access_token, player.account_id)
    assert (reply.account_id, reply.reason, reply.banned_by) == (
        player.account_id,
        "aimbot",
        admin.account_id,
    )
    assert (reply.until, reply.lifted_at, reply.revoked_sessions) == (0, 0, 2)
    revoked = {m.decode() for m in await redis.zrange("tessera:{auth}:revoked", 0, -1)}
    assert {player.session_id, second.session_id} <= revoked
    for refused in (
        login(auth, "mallory"),
        auth.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=second.refresh_token)),
    ):
        err = await fails(refused)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == "banned permanently"
        detail = errors.detail_of(err)
        assert (detail.reason, dict(detail.metadata)) == ("BANNED", {"until": "0"})
    # A wrong password learns nothing about the ban.
    err = await fails(login(auth, "mallory", "wrong password 123"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    (done,) = await audit_trail(database, 1)
    assert done.action == "ban"
    assert (done.actor, done.target, done.outcome, done.source) == (
        admin.account_id,
        player.account_id,
        "ok",
        "127.0.0.1",
    )
    assert "2 sessions revoked" in done.detail and "aimbot" in done.detail


async def test_a_banned_guest_device_cannot_log_in(
    auth: RunningAuth, start_auth: StartAuth
) -> None:
    auth, admin, _ = await admin_and_player(auth, start_auth)
    device = auth_pb2.GuestLoginRequest(device_id="device-0123456789abcdef")
    guest = await auth.stub.GuestLogin(device)
    until = int(time.time()) + 3600
    await ban(auth, admin.access_token, guest.account_id, until)
    err = await fails(auth.stub.GuestLogin(device))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == f"banned until {until} (Unix time)"
    assert errors.detail_of(err).metadata["until"] == str(until)


async def test_a_ban_expires_and_a_lift_works_at_once(
    auth: RunningAuth, start_auth: StartAuth, database: Pool
) -> None:
    auth, admin, player = await admin_and_player(auth, start_auth)
    bearer = bearer_metadata(admin.access_token)
    await ban(auth, admin.access_token, player.account_id, int(time.time()) + 2)
    assert (await fails(login(auth, "mallory"))).code() == grpc.StatusCode.PERMISSION_DENIED
    await asyncio.sleep(2.2)
    assert (await login(auth, "mallory")).account_id == player.account_id
    await ban(auth, admin.access_token, player.account_id)
    lift = auth_pb2.LiftBanRequest(account_id=player.account_id)
    assert (await auth.stub.LiftBan(lift, metadata=bearer)).lifted == 1
    assert (await login(auth, "mallory")).account_id == player.account_id
    assert (await auth.stub.LiftBan(lift, metadata=bearer)).lifted == 0
    *_, lifted = await audit_trail(database, 4)
    assert lifted.action == "lift_ban"
    assert (lifted.actor, lifted.target, lifted.detail) == (
        admin.account_id,
        player.account_id,
        "0 bans lifted",
    )


async def test_list_bans_pages_active_and_history(auth: RunningAuth, start_auth: StartAuth) -> None:
    auth, admin, player = await admin_and_player(auth, start_auth)
    other = await register(auth, "trudy")
    bearer = bearer_metadata(admin.access_token)
    await ban(auth, admin.access_token, player.account_id)
    await ban(auth, admin.access_token, player.account_id)  # replaces the first
    await ban(auth, admin.access_token, other.account_id)
    active = await auth.stub.ListBans(auth_pb2.ListBansRequest(active_only=True), metadata=bearer)
    assert [b.account_id for b in active.bans] == [other.account_id, player.account_id]
    assert active.next_page_token == ""
    pages, token = [], ""
    while True:
        page = await auth.stub.ListBans(
            auth_pb2.ListBansRequest(page_size=2, page_token=token), metadata=bearer
        )
        pages.append([b.account_id for b in page.bans])
        token = page.next_page_token
        if not token:
            break
    assert pages == [[other.account_id, player.account_id], [player.account_id]]
    history = await auth.stub.ListBans(auth_pb2.ListBansRequest(), metadata=bearer)
    assert history.bans[-1].lifted_at > 0 and history.bans[0].lifted_at == 0


async def test_ban_rpcs_are_for_admins_with_precise_errors(
    auth: RunningAuth, start_auth: StartAuth
) -> None:
    auth, admin, player = await admin_and_player(auth, start_auth)
    calls = {
        "BanAccount": auth_pb2.BanAccountRequest(account_id=player.account_id, reason="x"),
        "LiftBan": auth_pb2.LiftBanRequest(account_id=player.account_id),
        "ListBans": auth_pb2.ListBansRequest(),
    }
    for name, request in calls.items():
        method = getattr(auth.stub, name)
        assert (await fails(method(request))).code() == grpc.StatusCode.UNAUTHENTICATED
        err = await fails(method(request, metadata=bearer_metadata(player.access_token)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, name
    bearer = bearer_metadata(admin.access_token)
    bad = [
        auth_pb2.BanAccountRequest(account_id="", reason="x"),
        auth_pb2.BanAccountRequest(account_id="a" * 100_000, reason="x"),
        auth_pb2.BanAccountRequest(account_id=player.account_id, reason=" "),
        auth_pb2.BanAccountRequest(account_id=player.account_id, reason="x" * 501),
        auth_pb2.BanAccountRequest(account_id=player.account_id, reason="x", until=1),
        auth_pb2.BanAccountRequest(account_id=player.account_id, reason="x", until=2**62),
    ]
    for request in bad:
        err = await fails(auth.stub.BanAccount(request, metadata=bearer))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(err.details() or "") < 200
    for bad_page in (
        auth_pb2.ListBansRequest(page_size=501),
        auth_pb2.ListBansRequest(page_token="x" * 10_000),
    ):
        err = await fails(auth.stub.ListBans(bad_page, metadata=bearer))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    for unknown in (
        auth.stub.BanAccount(
            auth_pb2.BanAccountRequest(account_id="nobody", reason="x"), metadata=bearer
        ),
        auth.stub.LiftBan(auth_pb2.LiftBanRequest(account_id="nobody"), metadata=bearer),
    ):
        err = await fails(unknown)
        assert err.code() == grpc.StatusCode.NOT_FOUND
    listed = await auth.stub.ListBans(auth_pb2.ListBansRequest(), metadata=bearer)
    assert list(listed.bans) == []  # nothing bad was stored
    assert (await login(auth, "mallory")).account_id == player.account_id


async def publish_tallies(redis: Any, zone: str, tallies: dict[str, tuple[int, int]]) -> None:
    """Publish players' (speed_clamps, teleports) as zone ``zone`` of world w1 does."""
    await ZoneStore(redis, world="w1", zone=zone).publish_tallies(tallies, ttl_s=60, now_ms=5000)


async def test_list_suspects_ranks_a_worlds_players_for_admins_only(
    auth: RunningAuth, start_auth: StartAuth, redis: Any
) -> None:
    auth, admin, player = await admin_and_player(auth, start_auth)
    await publish_tallies(redis, "z1", {"mallory": (2, 3), "carol": (20, 0), "dave": (1, 0)})
    await publish_tallies(redis, "z2", {"erin": (0, 1)})
    request = auth_pb2.ListSuspectsRequest(world="w1")
    assert (await fails(auth.stub.ListSuspects(request))).code() == grpc.StatusCode.UNAUTHENTICATED
    err = await fails(
        auth.stub.ListSuspects(request, metadata=bearer_metadata(player.access_token))
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    bearer = bearer_metadata(admin.access_token)
    reply = await auth.stub.ListSuspects(request, metadata=bearer)
    # Default weights: speed_clamps 1, teleports 5.
    assert [(s.player_id, s.score, s.zone) for s in reply.suspects] == [
        ("carol", 20.0, "z1"),
        ("mallory", 17.0, "z1"),
        ("erin", 5.0, "z2"),
        ("dave", 1.0, "z1"),
    ]
    assert dict(reply.suspects[1].tallies) == {"speed_clamps": 2, "teleports": 3}
    assert {(s.since_ms, s.action) for s in reply.suspects} == {(5000, "")}
    top = await auth.stub.ListSuspects(
        auth_pb2.ListSuspectsRequest(world="w1", limit=2), metadata=bearer
    )
    assert [s.player_id for s in top.suspects] == ["carol", "mallory"]
    empty = auth_pb2.ListSuspectsRequest(world="w2")
    assert list((await auth.stub.ListSuspects(empty, metadata=bearer)).suspects) == []
    for bad in (
        auth_pb2.ListSuspectsRequest(world=""),
        auth_pb2.ListSuspectsRequest(world="x" * 100_000),
        auth_pb2.ListSuspectsRequest(world="w1", limit=501),
    ):
        err = await fails(auth.stub.ListSuspects(bad, metadata=bearer))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(err.details() or "") < 200


async def policed(
    start_auth: StartAuth, action: str, replicas: int = 1
) -> tuple[list[RunningAuth], Any, Any]:
    """Auth replicas with the cheat policy ``action`` on world w1 (threshold 10, 0.1 s
    passes), the admin's session and the player "mallory"."""
    first = await start_auth()
    registered = await register(first, "root-admin")
    settings = {
        "AUTH_ADMIN_ACCOUNTS": registered.account_id,
        "AUTH_CHEAT_ACTION": action,
        "AUTH_CHEAT_WORLDS": "w1",
        "AUTH_CHEAT_THRESHOLD": "10",
        "AUTH_CHEAT_BAN_S": "3600",
        "AUTH_CHEAT_POLL_S": "0.1",
    }
    running = [await start_auth(**settings) for _ in range(replicas)]
    return running, await login(running[0], "root-admin"), await register(running[0], "mallory")


def cheat_actions(action: str) -> float:
    labels = {"action": action, "outcome": "ok"}
    return REGISTRY.get_sample_value("tessera_auth_cheat_actions_total", labels) or 0.0


async def test_the_cheat_policy_bans_a_player_over_the_threshold_once(
    start_auth: StartAuth, redis: Any, database: Pool
) -> None:
    (auth, _), admin, player = await policed(start_auth, "ban", replicas=2)
    bearer = bearer_metadata(admin.access_token)
    before = cheat_actions("ban")
    await publish_tallies(redis, "z1", {player.account_id: (5, 1), "innocent": (9, 0)})
    active = auth_pb2.ListBansRequest(active_only=True)
    for _ in range(200):  # up to 10 s on a loaded machine
        if (await auth.stub.ListBans(active, metadata=bearer)).bans:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # several more passes of both replicas
    (banned,) = (await auth.stub.ListBans(active, metadata=bearer)).bans
    assert (banned.account_id, banned.banned_by) == (player.account_id, "policy:cheat")
    assert banned.reason == ("anti-cheat: score 10 >= 10 in world w1 (speed_clamps=5, teleports=1)")
    assert 3590 <= banned.until - banned.created_at <= 3600
    err = await fails(login(auth, "mallory"))
    assert (err.code(), errors.detail_of(err).reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "BANNED",
    )
    assert cheat_actions("ban") - before == 1
    records = await audited(database, 1, actor="policy:cheat")
    assert [(r.action, r.target, r.outcome, r.source) for r in records] == [
        ("ban", player.account_id, "ok", "auth")
    ]
    assert "1 sessions revoked" in records[0].detail
    reply = await auth.stub.ListSuspects(auth_pb2.ListSuspectsRequest(world="w1"), metadata=bearer)
    assert [(s.player_id, s.action) for s in reply.suspects] == [
        (player.account_id, "ban"),
        ("innocent", ""),
    ]


async def test_the_cheat_policy_kicks_through_the_relays_once(
    start_auth: StartAuth, redis: Any, database: Pool
) -> None:
    (auth,), _, player = await policed(start_auth, "kick")
    kicks: list[tuple[str, str]] = []
    ready = asyncio.Event()
    relay = RelayStore(redis, "w1")
    follow = asyncio.create_task(
        relay.watch_routes(lambda *_: None, ready, on_kick=lambda p, r: kicks.append((p, r)))
    )
    try:
        await asyncio.wait_for(ready.wait(), 5)
        before = cheat_actions("kick")
        await publish_tallies(redis, "z1", {player.account_id: (0, 3)})
        for _ in range(200):  # up to 10 s on a loaded machine
            if kicks:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
    finally:
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow
    assert kicks == [
        (player.account_id, "anti-cheat: score 15 >= 10 in world w1 (speed_clamps=0, teleports=3)")
    ]
    assert cheat_actions("kick") - before == 1
    (record,) = await audited(database, 1, actor="policy:cheat")
    assert (record.action, record.target, record.outcome) == ("kick", player.account_id, "ok")
    assert record.detail.endswith("; 1 relays told")
    assert await redis.hget("tessera:{auth}:cheat:acted:w1", player.account_id) == b"kick"
    # A kick is no ban: the player may log in again.
    assert (await login(auth, "mallory")).account_id == player.account_id


# --- profiles and devices -------------------------------------------------------


async def test_a_player_reads_and_updates_their_own_profile(
    auth: RunningAuth, database: Pool
) -> None:
    ada = await register(auth, "ada")
    me = bearer_metadata(ada.access_token)
    fresh = await auth.stub.GetAccount(auth_pb2.GetAccountRequest(), metadata=me)
    assert (fresh.account_id, fresh.username, fresh.kind) == (ada.account_id, "ada", "password")
    assert fresh.profile == auth_pb2.Profile(metadata="{}") and fresh.devices == 0
    assert abs(fresh.created_at - time.time()) < 600
    update = auth_pb2.UpdateAccountRequest(
        display_name="Ada L.", lang_tag="en-GB", timezone="Europe/London", metadata='{"lvl": 7}'
    )
    updated = await auth.stub.UpdateAccount(update, metadata=me)
    assert updated.profile.display_name == "Ada L." and updated.profile.timezone == "Europe/London"
    assert json.loads(updated.profile.metadata) == {"lvl": 7}
    # Unset fields keep their value; a field set to "" is cleared.
    partial = auth_pb2.UpdateAccountRequest(location="Lyon", display_name="")
    again = await auth.stub.UpdateAccount(partial, metadata=me)
    assert (again.profile.display_name, again.profile.location) == ("", "Lyon")
    assert again.profile.lang_tag == "en-GB" and json.loads(again.profile.metadata) == {"lvl": 7}
    stored = await database.fetchrow(
        "SELECT location, metadata FROM accounts WHERE id = $1", ada.account_id
    )
    assert stored["location"] == "Lyon" and json.loads(stored["metadata"]) == {"lvl": 7}
    assert (
        await auth.stub.GetAccount(
            auth_pb2.GetAccountRequest(account_id=ada.account_id), metadata=me
        )
        == again
    )


async def test_a_bad_profile_field_writes_nothing(auth: RunningAuth, database: Pool) -> None:
    bob = await register(auth, "bob-profile")
    me = bearer_metadata(bob.access_token)
    await auth.stub.UpdateAccount(auth_pb2.UpdateAccountRequest(display_name="Bob"), metadata=me)
    for update, field, reason in [
        (
            auth_pb2.UpdateAccountRequest(display_name="B2", metadata="[]"),
            "metadata",
            "METADATA_INVALID",
        ),
        (
            auth_pb2.UpdateAccountRequest(
                display_name="B3", metadata='{"x": "' + "y" * 17_000 + '"}'
            ),
            "metadata",
            "METADATA_TOO_LARGE",
        ),
        (
            auth_pb2.UpdateAccountRequest(display_name="B4", timezone="Nowhere/City"),
            "timezone",
            "PROFILE_INVALID",
        ),
        (auth_pb2.UpdateAccountRequest(), "", "NO_CHANGES"),
    ]:
        err = await fails(auth.stub.UpdateAccount(update, metadata=me))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (errors.detail_of(err).field, errors.detail_of(err).reason) == (field, reason)
    name = await database.fetchval(
        "SELECT display_name FROM accounts WHERE id = $1", bob.account_id
    )
    assert name == "Bob"


async def test_only_an_admin_reads_and_changes_another_account(
    auth: RunningAuth, start_auth: StartAuth, database: Pool
) -> None:
    boss = await register(auth, "profile-admin")
    auth = await start_auth(AUTH_ADMIN_ACCOUNTS=boss.account_id)
    admin = bearer_metadata((await login(auth, "profile-admin")).access_token)
    carol = await register(auth, "carol")
    dave = await register(auth, "dave")
    other = auth_pb2.GetAccountRequest(account_id=carol.account_id)
    err = await fails(auth.stub.GetAccount(other, metadata=bearer_metadata(dave.access_token)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    change = auth_pb2.UpdateAccountRequest(account_id=carol.account_id, display_name="pwned")
    err = await fails(auth.stub.UpdateAccount(change, metadata=bearer_metadata(dave.access_token)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await fails(auth.stub.GetAccount(other, metadata=await service_metadata(auth)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await auth.stub.GetAccount(other, metadata=admin)).username == "carol"
    changed = await auth.stub.UpdateAccount(
        auth_pb2.UpdateAccountRequest(account_id=carol.account_id, display_name="Carol"),
        metadata=admin,
    )
    assert changed.profile.display_name == "Carol"
    nobody = auth_pb2.GetAccountRequest(account_id="no-such-account")
    err = await fails(auth.stub.GetAccount(nobody, metadata=admin))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    (record,) = await audit_trail(database, 1)
    assert (record.actor, record.action, record.target, record.outcome, record.detail) == (
        boss.account_id,
        "update_account",
        carol.account_id,
        "ok",
        "display_name",
    )


async def test_linked_devices_log_in_to_the_account(auth: RunningAuth) -> None:
    erin = await register(auth, "erin")
    me = bearer_metadata(erin.access_token)
    phone = auth_pb2.DeviceRequest(device_id="erin-phone-0123456789")
    assert (await auth.stub.LinkDevice(phone, metadata=me)).devices == 1
    assert (await auth.stub.LinkDevice(phone, metadata=me)).devices == 1  # linking again is a no-op
    guest = await auth.stub.GuestLogin(auth_pb2.GuestLoginRequest(device_id=phone.device_id))
    assert guest.account_id == erin.account_id
    # A device of another account stays there.
    tablet = "frank-tablet-0123456789"
    frank = await auth.stub.GuestLogin(auth_pb2.GuestLoginRequest(device_id=tablet))
    err = await fails(auth.stub.LinkDevice(auth_pb2.DeviceRequest(device_id=tablet), metadata=me))
    assert (err.code(), errors.detail_of(err).reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "DEVICE_TAKEN",
    )
    # A guest's only device is its only way in; a password account may drop all.
    err = await fails(
        auth.stub.UnlinkDevice(
            auth_pb2.DeviceRequest(device_id=tablet), metadata=bearer_metadata(frank.access_token)
        )
    )
    assert errors.detail_of(err).reason == "LAST_DEVICE"
    assert (await auth.stub.UnlinkDevice(phone, metadata=me)).devices == 0
    err = await fails(auth.stub.UnlinkDevice(phone, metadata=me))
    assert errors.detail_of(err).reason == "DEVICE_NOT_LINKED"
    again = await auth.stub.GuestLogin(auth_pb2.GuestLoginRequest(device_id=phone.device_id))
    assert again.account_id != erin.account_id  # a new guest account now
    err = await fails(auth.stub.LinkDevice(auth_pb2.DeviceRequest(device_id="short"), metadata=me))
    assert errors.detail_of(err).field == "device_id"
