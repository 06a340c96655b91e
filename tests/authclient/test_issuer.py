"""Connect tokens from a real auth process, on behalf of players, naming the
match's destination, in IssueConnectTokens batches; and a matchmaker tick that
issues its tokens through the issuer."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from tessera.authclient.issuer import AuthIssuer, TokenRefused
from tessera.authclient.keys import keys_from_proto
from tessera.common.database import Pool
from tessera.common.process import ServiceProcess
from tessera.common.store import WorldKeys
from tessera.harness.redis import LocalRedis
from tessera.matchmaking.director import Director
from tessera.matchmaking.modes import Mode
from tessera.matchmaking.records import RatingRecords
from tessera.matchmaking.store import Store
from tessera.v1 import auth_pb2, auth_pb2_grpc, common_pb2, zone_pb2
from tessera.v1 import matchmaking_pb2 as pb
from tessera.wire.connect_token import ConnectGrant, open_connect_token

pytestmark = pytest.mark.integration

SECRET = "admission-secret-0123456789"
SEALING_KEY = os.urandom(32)
DEFAULT_RELAY, EU_RELAY = "127.0.0.1:7000", "127.0.0.1:7001"


@pytest.fixture
def auth(redis_server: LocalRedis, redis: Redis, database_url: str) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        "tessera.auth",
        {
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_REDIS_URL": redis_server.url_for("auth"),
            "TESSERA_DATABASE_URL": database_url,
            "TESSERA_AUTH_GENERATE_KEYS": "true",
            "TESSERA_CONNECT_KEY": base64.b64encode(SEALING_KEY).decode(),
            "TESSERA_AUTH_SERVICE_CLIENTS": f"matchmaking={SECRET}",
            "TESSERA_AUTH_RELAYS": f"default={DEFAULT_RELAY};eu-west={EU_RELAY}",
        },
        name="auth",
    )
    process.start().wait_serving()
    yield process
    process.terminate()


class Recorder(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Notes the method and request of every unary call on a channel."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method
        self.calls.append((method.decode() if isinstance(method, bytes) else method, request))
        return await continuation(client_call_details, request)

    def batches(self) -> list[int]:
        """Sizes of the IssueConnectToken(s) calls made, in order (-1: a single call)."""
        return [
            len(request.requests) if method.endswith("/IssueConnectTokens") else -1
            for method, request in self.calls
            if "/IssueConnectToken" in method
        ]


def recording_issuer(address: str, secret: str = SECRET) -> tuple[AuthIssuer, Recorder]:
    """An AuthIssuer whose channel records its calls."""
    issuer = AuthIssuer(address, "matchmaking", secret)
    recorder = Recorder()
    issuer.channel = grpc.aio.insecure_channel(address, interceptors=[recorder])  # type: ignore[list-item]
    issuer.stub = issuer.credentials.stub = auth_pb2_grpc.AuthStub(issuer.channel)
    return issuer, recorder


async def open_at(issuer: AuthIssuer, token: auth_pb2.ConnectToken, relay: str) -> ConnectGrant:
    """What a relay at ``relay`` reads from ``token`` (the relay's opening code)."""
    keys = keys_from_proto(await issuer.stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest()))
    return open_connect_token(
        token.token, public_keys=keys, sealing_key=SEALING_KEY, relay_address=relay, now=time.time()
    )


async def test_a_batch_with_region_fallback_and_refusals_in_order(auth: ServiceProcess) -> None:
    issuer, recorder = recording_issuer(auth.grpc_address)
    zone = "inst-0123456789abcdef01234567"
    try:
        await issuer.login()
        results = await issuer.issue_many(
            [
                auth_pb2.ConnectTokenRequest(
                    player_id="player-1", region="eu-west", session_id="session-1"
                ),
                auth_pb2.ConnectTokenRequest(player_id="player-2", region="mars"),
                auth_pb2.ConnectTokenRequest(player_id="player-3", world="arenas", zone="Bad_Zone"),
                auth_pb2.ConnectTokenRequest(
                    player_id="player-4", region="mars", session_id="s-4", world="arenas", zone=zone
                ),
            ]
        )
        eu, elsewhere, bad, fallback = results
        assert isinstance(eu, auth_pb2.ConnectToken)
        assert eu.player_id == "player-1" and list(eu.relay_addresses) == [EU_RELAY]
        # A match region auth has no relays for gets the default relays.
        assert isinstance(elsewhere, auth_pb2.ConnectToken)
        assert list(elsewhere.relay_addresses) == [DEFAULT_RELAY]
        assert isinstance(bad, TokenRefused)
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert (bad.reason, bad.field) == ("INVALID_ARGUMENT", "zone")
        assert isinstance(fallback, auth_pb2.ConnectToken)
        grant = await open_at(issuer, fallback, DEFAULT_RELAY)
        assert (grant.player_id, grant.session_id, grant.world, grant.zone) == (
            "player-4",
            "s-4",
            "arenas",
            zone,
        )
        # One call for the batch, one more for the two requests of an unknown region.
        assert recorder.batches() == [4, 2]
        # The unknown region is remembered: its next requests go to the default at once.
        (again,) = await issuer.issue_many(
            [auth_pb2.ConnectTokenRequest(player_id="player-5", region="mars")]
        )
        assert isinstance(again, auth_pb2.ConnectToken)
        assert list(again.relay_addresses) == [DEFAULT_RELAY]
        assert recorder.batches() == [4, 2, 1]
        assert recorder.calls[-1][1].requests[0].region == ""
    finally:
        await issuer.close()


async def test_large_batches_are_split_at_auths_limit(auth: ServiceProcess) -> None:
    issuer, recorder = recording_issuer(auth.grpc_address)
    try:
        requests = [auth_pb2.ConnectTokenRequest(player_id=f"p-{i}") for i in range(600)]
        results = await issuer.issue_many(requests)
        assert [r.player_id for r in results if isinstance(r, auth_pb2.ConnectToken)] == [
            f"p-{i}" for i in range(600)
        ]
        assert sorted(recorder.batches()) == [88, 512]
    finally:
        await issuer.close()


async def test_a_rejected_access_token_is_renewed_once(auth: ServiceProcess) -> None:
    issuer, recorder = recording_issuer(auth.grpc_address)
    try:
        await issuer.login()
        # A session whose access token auth does not accept (e.g. signed by a key
        # that was since removed) but that has not expired by the clock.
        issuer.credentials._session = auth_pb2.Session(
            access_token="not.a.token", access_expires_at=int(time.time()) + 600
        )
        (token,) = await issuer.issue_many([auth_pb2.ConnectTokenRequest(player_id="p-1")])
        assert isinstance(token, auth_pb2.ConnectToken)
        logins = [m for m, _ in recorder.calls if m.endswith("/ServiceLogin")]
        assert len(logins) == 2
        assert recorder.batches() == [1, 1]
    finally:
        await issuer.close()


async def test_a_failed_call_fails_each_of_its_requests() -> None:
    issuer = AuthIssuer("127.0.0.1:1", "matchmaking", SECRET, timeout_s=0.5)
    try:
        results = await issuer.issue_many(
            [auth_pb2.ConnectTokenRequest(player_id=p) for p in ("a", "b")]
        )
        assert len(results) == 2
        for result in results:
            assert isinstance(result, grpc.aio.AioRpcError)
            assert result.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
    finally:
        await issuer.close()


async def test_one_token_alone(auth: ServiceProcess) -> None:
    issuer, recorder = recording_issuer(auth.grpc_address)
    try:
        token = await issuer.issue("player-9", "mars", "s-9", world="main", zone="zone-b")
        grant = await open_at(issuer, token, DEFAULT_RELAY)
        assert (grant.player_id, grant.session_id, grant.zone) == ("player-9", "s-9", "zone-b")
        with pytest.raises(TokenRefused) as refused:
            await issuer.issue("player-9", "eu-west", world="Main")
        assert (refused.value.reason, refused.value.field) == ("INVALID_ARGUMENT", "world")
        assert recorder.batches() == [1, 1, 1]
    finally:
        await issuer.close()


async def test_wrong_secret_fails_at_login(auth: ServiceProcess) -> None:
    issuer = AuthIssuer(auth.grpc_address, "matchmaking", "not-the-secret-0123456789")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await issuer.login()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await issuer.close()


def duel(player: str, region: str, now_ms: float) -> pb.Ticket:
    return pb.Ticket(
        id=uuid.uuid4().hex,
        mode="duel",
        players=[pb.TicketPlayer(player_id=player)],
        regions=[pb.RegionLatency(region=region, latency_ms=10)],
        created_at_ms=now_ms,
    )


def failures() -> float:
    return REGISTRY.get_sample_value("tessera_matchmaking_connect_token_failures_total") or 0.0


async def test_a_tick_issues_its_tokens_in_one_batch_and_they_open_at_the_relay(
    auth: ServiceProcess, redis: Redis, database: Pool
) -> None:
    keys = WorldKeys("main")
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world="main", zone="z1"), state=zone_pb2.ZONE_STATE_ACTIVE
    )
    await redis.sadd(keys.zones, "z1")
    await redis.set(keys.zone_status("z1"), status.SerializeToString())
    store = Store(redis, RatingRecords(database), ticket_ttl_s=10.0, retention_s=60.0)
    issuer, recorder = recording_issuer(auth.grpc_address)
    director = Director(store, {"duel": Mode(name="duel", world="main")}, issuer=issuer)
    now = time.time() * 1000
    # Two pools (regions). In "us" (no relays in auth: default relays) one player's
    # id is too long for a token (128 bytes at most), so that proposal must wait.
    alice = await store.create(duel("alice", "eu-west", now), now, "alice-sid")
    bob = await store.create(duel("bob", "eu-west", now), now)
    long_id = "é" * 100
    stuck = [
        await store.create(duel(long_id, "us", now), now),
        await store.create(duel("carol", "us", now), now),
    ]
    before = failures()
    try:
        await issuer.login()
        result = await director.tick()
        assert (result.matches, result.assigned) == (1, 2)
        assert failures() - before == 1
        # All four tokens in one call; the two "us" ones again for default relays.
        assert recorder.batches() == [4, 2]
        got_alice, got_bob = await store.get_many([alice.id, bob.id], time.time() * 1000)
        assert got_alice is not None and got_bob is not None
        grants = {}
        for ticket in (got_alice, got_bob):
            assert ticket.state == pb.TICKET_STATE_ASSIGNED
            (player,) = ticket.assignment.players
            grant = await open_at(issuer, player.connect_token, EU_RELAY)
            grants[grant.player_id] = grant
            assert (grant.world, grant.zone) == ("main", "z1")
            assert ticket.assignment.destination.zone == "z1"
        assert set(grants) == {"alice", "bob"}
        assert grants["alice"].session_id == "alice-sid"
        # Bob named no session: the token carries the matchmaker's own.
        assert grants["bob"].session_id not in ("", "alice-sid")
        for waiting in await store.get_many([t.id for t in stuck], time.time() * 1000):
            assert waiting is not None and waiting.state == pb.TICKET_STATE_SEARCHING
    finally:
        await issuer.close()
