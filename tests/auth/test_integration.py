"""End to end with real processes: the auth service (``python -m tessera.auth``), a
protected gRPC service using the verifier library, and a real Redis."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from tessera.auth import keys
from tessera.auth.store import failures_key
from tessera.authclient import access
from tessera.authclient.bearer import bearer_metadata
from tessera.authclient.verifier import Verifier
from tessera.common import errors
from tessera.common.audit import AuditLog, AuditRecord
from tessera.common.database import Pool, open_database
from tessera.common.process import ServiceProcess, free_port
from tessera.harness.postgres import LocalPostgres
from tessera.harness.redis import LocalRedis
from tessera.v1 import auth_pb2, auth_pb2_grpc
from tessera.wire import access_token
from tessera.wire.access_token import TokenError
from tessera.zone.store import ZoneStore

pytestmark = pytest.mark.integration

ENV = {
    "TESSERA_HOST": "127.0.0.1",
    "TESSERA_GRPC_PORT": "0",
    "TESSERA_METRICS_PORT": "0",
    "TESSERA_CONNECT_KEY": base64.b64encode(os.urandom(32)).decode(),
    "TESSERA_AUTH_ARGON2_TIME_COST": "1",
    "TESSERA_AUTH_ARGON2_MEMORY_KIB": "64",
    "TESSERA_SHUTDOWN_GRACE_S": "1",
}
PASSWORD = "integration test password"
T = TypeVar("T")


def start_auth(redis_server: LocalRedis, database_url: str, **env: str) -> ServiceProcess:
    urls = {"TESSERA_REDIS_URL": redis_server.url_for("auth"), "TESSERA_DATABASE_URL": database_url}
    proc = ServiceProcess("tessera.auth", {**ENV, **urls, **env}, name="auth").start()
    proc.wait_serving()
    return proc


@pytest.fixture
def auth_process(
    redis_server: LocalRedis, redis: Any, database: Pool, database_url: str
) -> Iterator[ServiceProcess]:
    proc = start_auth(redis_server, database_url, TESSERA_AUTH_GENERATE_KEYS="true")
    yield proc
    proc.terminate()


async def _whoami(request: bytes, context: Any) -> bytes:
    return access.current_claims().sub.encode()


@pytest.fixture
async def protected(auth_process: ServiceProcess, redis_server: LocalRedis) -> AsyncIterator[str]:
    """A separate protected gRPC service that verifies tokens with the library."""
    verifier = await Verifier.connect(auth_process.grpc_address, redis_server.url)
    rules = {"/tessera.test.Game/WhoAmI": access.ROLES}
    server = grpc.aio.server(interceptors=[access.AccessInterceptor(verifier, rules)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "tessera.test.Game", {"WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)
    await verifier.close()


async def test_register_login_call_refresh_reuse_revokes_within_one_second(
    auth_process: ServiceProcess, protected: str
) -> None:
    async with (
        grpc.aio.insecure_channel(auth_process.grpc_address) as auth_channel,
        grpc.aio.insecure_channel(protected) as game_channel,
    ):
        auth = auth_pb2_grpc.AuthStub(auth_channel)
        whoami = game_channel.unary_unary("/tessera.test.Game/WhoAmI", None, None)
        registered = await auth.Register(
            auth_pb2.RegisterRequest(username="Player.One", password=PASSWORD)
        )
        session = await auth.Login(auth_pb2.LoginRequest(username="player.one", password=PASSWORD))
        assert session.account_id == registered.account_id
        me = await whoami(b"", metadata=bearer_metadata(session.access_token))
        assert me == session.account_id.encode()

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await whoami(b"")
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        refreshed = await auth.Refresh(auth_pb2.RefreshRequest(refresh_token=session.refresh_token))
        assert await whoami(b"", metadata=bearer_metadata(refreshed.access_token)) == me

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await auth.Refresh(auth_pb2.RefreshRequest(refresh_token=session.refresh_token))
        revoked_at = time.monotonic()
        assert errors.detail_of(info.value).reason == "REFRESH_TOKEN_REUSED"

        # Both access tokens of the family must now be refused by the other service.
        for token in (refreshed.access_token, session.access_token):
            while True:
                try:
                    await whoami(b"", metadata=bearer_metadata(token))
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
                    # The same answer as for any bad token: nothing says which check failed.
                    assert errors.detail_of(err).reason == "UNAUTHENTICATED"
                    assert err.details() == access.UNAUTHENTICATED_MESSAGE
                    break
                assert time.monotonic() - revoked_at < 1.0, "revocation took longer than 1 s"
                await asyncio.sleep(0.01)
        assert time.monotonic() - revoked_at < 1.0

    body = await metrics(auth_process)
    assert 'tessera_auth_logins_total{kind="password",result="ok"} 1.0' in body
    assert 'tessera_auth_refreshes_total{result="reused"} 1.0' in body
    assert 'tessera_auth_tokens_issued_total{kind="access"}' in body
    assert 'tessera_auth_verifications_total{result="REVOKED"}' in body


async def test_key_rotation_from_a_key_directory(
    redis_server: LocalRedis, redis: Any, database: Pool, database_url: str, tmp_path: Path
) -> None:
    keys.write_key(tmp_path, 0)
    proc = start_auth(
        redis_server,
        database_url,
        TESSERA_AUTH_KEY_DIR=str(tmp_path),
        TESSERA_AUTH_KEY_RELOAD_S="0.1",
    )
    verifier = await Verifier.connect(proc.grpc_address, redis_server.url)
    try:
        async with grpc.aio.insecure_channel(proc.grpc_address) as channel:
            auth = auth_pb2_grpc.AuthStub(channel)
            old = await auth.GuestLogin(
                auth_pb2.GuestLoginRequest(device_id="rotation-device-0001")
            )
            old_kid = verifier.verify(old.access_token).kid

            # Pre-publish a key that activates in the future: listed, not signing yet.
            upcoming = keys.write_key(tmp_path, int(time.time()) + 3600)
            await _until(lambda: _kids(auth), lambda kids: len(kids) == 2)
            upcoming.unlink()
            # Rotate now: a key activating at once.
            keys.write_key(tmp_path, int(time.time()))

            async def new_token() -> str:
                s = await auth.GuestLogin(
                    auth_pb2.GuestLoginRequest(device_id="rotation-device-0001")
                )
                return str(s.access_token)

            token = await _until(new_token, lambda t: _kid(t) != old_kid)
            # The verifier learns the new kid by itself (unknown kid -> immediate fetch).
            claims = await _until(lambda: _try_verify(verifier, token), lambda c: c is not None)
            assert claims is not None and claims.kid != old_kid
            assert verifier.verify(old.access_token).kid == old_kid  # overlap window
            key_set = await auth.GetPublicKeys(auth_pb2.GetPublicKeysRequest())
            retired = {k.kid: k.retired_at for k in key_set.keys}
            assert key_set.keys[0].kid == claims.kid
            assert retired[old_kid] > 0
    finally:
        await verifier.close()
        assert proc.terminate() == 0


async def _kids(auth: Any) -> list[str]:
    key_set = await auth.GetPublicKeys(auth_pb2.GetPublicKeysRequest())
    return [k.kid for k in key_set.keys]


def _kid(token: str) -> str:
    return access_token.read_header(token)


async def _try_verify(verifier: Verifier, token: str) -> Any:
    try:
        return verifier.verify(token)
    except TokenError:
        return None


async def _until(produce: Any, accept: Any, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await produce()
        if accept(value):
            return value
        assert time.monotonic() < deadline, f"condition not met: last value {value!r}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TESSERA_AUTH_GENERATE_KEYS": "true", "TESSERA_AUTH_RELAYS": "nowhere"}, "AUTH_RELAYS"),
        ({"TESSERA_AUTH_KEY_DIR": "/nonexistent/keys"}, "TESSERA_AUTH_KEY_DIR"),
        ({}, "TESSERA_AUTH_KEY_DIR"),
        (
            {"TESSERA_AUTH_GENERATE_KEYS": "true", "TESSERA_CONNECT_KEY": "dG9vIHNob3J0"},
            "TESSERA_CONNECT_KEY",
        ),
        ({"TESSERA_AUTH_GENERATE_KEYS": "yes", "TESSERA_AUTH_ACCESS_TTL_S": "0"}, "ACCESS_TTL"),
        ({"TESSERA_AUTH_GENERATE_KEYS": "yes", "TESSERA_DATABASE_URL": ""}, "DATABASE_URL"),
        # The retired fixed lockout names its replacements.
        ({"TESSERA_AUTH_GENERATE_KEYS": "yes", "TESSERA_AUTH_LOCKOUT_S": "900"}, "LOCKOUT_BASE_S"),
        (
            {"TESSERA_AUTH_GENERATE_KEYS": "yes", "TESSERA_AUTH_ADDRESS_DELAY_MAX_S": "60"},
            "TESSERA_AUTH_ADDRESS_DELAY_MAX_S",
        ),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable(
    redis_server: LocalRedis, env: dict[str, str], variable: str
) -> None:
    # A database that is never reached: configuration is checked first.
    urls = {
        "TESSERA_REDIS_URL": redis_server.url_for("auth"),
        "TESSERA_DATABASE_URL": "postgresql://db/t",
    }
    proc = ServiceProcess("tessera.auth", {**ENV, **urls, **env}, name="auth").start()
    assert proc.proc is not None
    code = proc.proc.wait(timeout=20)
    proc.terminate()
    assert code == 2
    assert variable in "\n".join(proc.lines)


def test_an_unreachable_database_exits_1_saying_so(redis_server: LocalRedis) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/tessera"
    env = {"TESSERA_AUTH_GENERATE_KEYS": "true", "TESSERA_DATABASE_URL": dead}
    proc = ServiceProcess(
        "tessera.auth",
        {**ENV, "TESSERA_REDIS_URL": redis_server.url_for("auth"), **env},
        name="auth",
    ).start()
    assert proc.proc is not None
    code = proc.proc.wait(timeout=60)
    proc.terminate()
    assert code == 1
    assert "PostgreSQL unreachable" in "\n".join(proc.lines)


async def test_database_outage_is_unavailable_and_auth_recovers(
    redis_server: LocalRedis, redis: Any
) -> None:
    """PostgreSQL stops under a running auth: calls that need it end UNAVAILABLE with
    a reason and are counted; once it is back the same process serves them again,
    and the cheat policy's ban that failed meanwhile is retried, once."""
    with LocalPostgres() as postgres:
        proc = start_auth(
            redis_server,
            postgres.url(),
            TESSERA_AUTH_GENERATE_KEYS="true",
            TESSERA_AUTH_CHEAT_ACTION="ban",
            TESSERA_AUTH_CHEAT_WORLDS="w1",
            TESSERA_AUTH_CHEAT_THRESHOLD="1",
            TESSERA_AUTH_CHEAT_POLL_S="0.1",
        )
        try:
            async with grpc.aio.insecure_channel(proc.grpc_address) as channel:
                auth = auth_pb2_grpc.AuthStub(channel)
                before = auth_pb2.RegisterRequest(username="before", password=PASSWORD)
                await auth.Register(before)
                cheater = auth_pb2.RegisterRequest(username="cheater", password=PASSWORD)
                cheater_id = (await auth.Register(cheater)).account_id

                postgres.halt()
                await ZoneStore(redis, world="w1", zone="z1").publish_tallies(
                    {cheater_id: (0, 1)},
                    ttl_s=60,
                    now_ms=1,  # (speed_clamps, teleports)
                )
                for call in (
                    auth.Login(auth_pb2.LoginRequest(username="before", password=PASSWORD)),
                    auth.Register(auth_pb2.RegisterRequest(username="during", password=PASSWORD)),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call
                    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                    assert "PostgreSQL unavailable" in (info.value.details() or "")
                    detail = errors.detail_of(info.value)
                    assert (detail.reason, detail.retry_after_s) == ("DATABASE_UNAVAILABLE", 1.0)
                # A login that could not be checked is not a failed login.
                assert await redis.hget(failures_key("account", "before"), "n") == b"0"

                # The policy's ban of the cheater failed meanwhile (and gave its claim back).
                for _ in range(150):
                    if 'cheat_actions_total{action="ban",outcome="error"}' in await metrics(proc):
                        break
                    await asyncio.sleep(0.1)
                postgres.start()
                login = auth_pb2.LoginRequest(username="before", password=PASSWORD)
                session = await _eventually(lambda: auth.Login(login))
                assert session.account_id
                after = auth_pb2.RegisterRequest(username="after", password=PASSWORD)
                assert (await auth.Register(after)).account_id
            text = await metrics(proc)
            for method in ("Login", "Register"):
                sample = f'tessera_database_unavailable_total{{method="/tessera.v1.Auth/{method}"}}'
                assert f"{sample} 1.0" in text, text
            assert 'tessera_auth_cheat_actions_total{action="ban",outcome="error"}' in text
            pool = await open_database(postgres.url(), max_size=2)
            try:
                records: list[AuditRecord] = []
                for _ in range(150):
                    records = await AuditLog(pool).recent(50, actor="policy:cheat")
                    if records:
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)  # more passes (and audit batches): no second ban
                records = await AuditLog(pool).recent(50, actor="policy:cheat")
            finally:
                await pool.close()
            assert [(r.action, r.target, r.outcome) for r in records] == [("ban", cheater_id, "ok")]
        finally:
            proc.terminate()


async def metrics(proc: ServiceProcess) -> str:
    """The process's /metrics page."""
    url = f"http://127.0.0.1:{proc.ports['metrics_port']}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    return str(body.decode())


async def _eventually(call: Callable[[], Awaitable[T]], timeout_s: float = 30.0) -> T:
    """The first success of ``call``, retried while it is UNAVAILABLE (the pool
    reconnects in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
