"""TLS settings checked at start-up, and real TLS handshakes with certificates made here."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tessera.client.client import GameClient, Intent
from tessera.client.login import guest_connect_token
from tessera.client.transport import PlayTransport
from tessera.common import store, tls
from tessera.common.config import ConfigError, Env
from tessera.common.process import ServiceProcess
from tessera.common.tls import ClientTls, ServerTls
from tessera.harness.certs import Authority, Issued
from tessera.harness.redis import LocalRedis
from tessera.harness.stack import Stack
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import World, ZoneSpec
from tessera.v1 import zone_pb2, zone_pb2_grpc
from tessera.wire.geometry import Rect

SLEEPY = str(Path(__file__).with_name("sleepy_service.py"))
ENV = {"TESSERA_GRPC_PORT": "0", "TESSERA_METRICS_PORT": "0", "TESSERA_HOST": "127.0.0.1"}


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Issued
    expired: Issued
    future: Issued
    client: Issued
    other_ca: Path
    other_server: Issued
    internal: Issued  # for the name "tessera.internal" only


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, other = Authority(), Authority("another CA")
    return Pki(
        ca=ca.write_ca(d / "ca.crt"),
        server=ca.issue(d / "server"),
        expired=ca.issue(d / "expired", valid_from_h=-48, valid_for_h=24),
        future=ca.issue(d / "future", valid_from_h=24),
        client=ca.issue(d / "client", ("game-backend",), client=True),
        other_ca=other.write_ca(d / "other-ca.crt"),
        other_server=other.issue(d / "other"),
        internal=ca.issue(d / "internal", ("tessera.internal",)),
    )


def server_env(issued: Issued, **extra: str) -> dict[str, str]:
    return {
        "TESSERA_TLS_CERT_FILE": str(issued.cert),
        "TESSERA_TLS_KEY_FILE": str(issued.key),
        **extra,
    }


def client(pki: Pki, **extra: str) -> ClientTls:
    settings = ClientTls.from_env(Env({"TESSERA_TLS_CA_FILE": str(pki.ca), **extra}))
    assert settings is not None
    return settings


# --- settings, checked at start-up ----------------------------------------------------------


def test_channels_have_grpc_retries_off(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    """Transparent retries of streams a stopping server refused sometimes made the
    client's memory run away in gRPC core (docs/OPERATIONS.md, "gRPC retries")."""
    opened: list[dict[str, object]] = []

    def record(_address: str, *args: object, **kw: object) -> None:
        opened.append(dict(kw["options"]))  # type: ignore[call-overload]

    monkeypatch.setattr(grpc.aio, "insecure_channel", record)
    monkeypatch.setattr(grpc.aio, "secure_channel", record)
    tls.channel("127.0.0.1:1", options=[("grpc.max_receive_message_length", 1)])
    tls.channel("127.0.0.1:1", tls=client(pki))
    tls.channel("127.0.0.1:1", options=[("grpc.enable_retries", 1)])  # asked for
    assert [o.get("grpc.enable_retries") for o in opened] == [0, 0, 1]
    assert opened[0]["grpc.max_receive_message_length"] == 1


def test_no_settings_mean_plaintext() -> None:
    assert ServerTls.from_env(Env({})) is None
    assert ClientTls.from_env(Env({})) is None


def test_server_and_client_settings_load(pki: Pki) -> None:
    env = Env(
        {
            **server_env(pki.server, TESSERA_TLS_CLIENT_CA_FILE=str(pki.ca)),
            "TESSERA_TLS_CA_FILE": str(pki.ca),
            "TESSERA_TLS_SERVER_NAME": "tessera.internal",
            "TESSERA_TLS_CLIENT_CERT_FILE": str(pki.client.cert),
            "TESSERA_TLS_CLIENT_KEY_FILE": str(pki.client.key),
            "TESSERA_TLS_ZONES": "true",
        }
    )
    server = ServerTls.from_env(env)
    assert server is not None
    assert server.cert_chain == pki.server.cert.read_bytes()
    assert server.client_ca == pki.ca.read_bytes()
    settings = ClientTls.from_env(env)
    assert settings is not None
    assert settings.ca == pki.ca.read_bytes()
    assert settings.cert_chain == pki.client.cert.read_bytes()
    assert settings.zones
    assert settings.options() == (("grpc.ssl_target_name_override", "tessera.internal"),)
    assert client(pki).options() == ()
    assert "PRIVATE KEY" not in repr(server) + repr(settings)


def bad_server_settings(pki: Pki, tmp: Path) -> list[tuple[dict[str, str], str, str]]:
    garbage = tmp / "garbage.pem"
    garbage.write_text("not a certificate")
    missing = str(tmp / "missing.pem")
    return [
        ({"TESSERA_TLS_CERT_FILE": str(pki.server.cert)}, "TESSERA_TLS_KEY_FILE", "since"),
        ({"TESSERA_TLS_KEY_FILE": str(pki.server.key)}, "TESSERA_TLS_CERT_FILE", "since"),
        (
            {"TESSERA_TLS_CERT_FILE": missing, "TESSERA_TLS_KEY_FILE": str(pki.server.key)},
            "TESSERA_TLS_CERT_FILE",
            "a readable PEM file",
        ),
        (
            {"TESSERA_TLS_CERT_FILE": str(garbage), "TESSERA_TLS_KEY_FILE": str(pki.server.key)},
            "TESSERA_TLS_CERT_FILE",
            "PEM certificates",
        ),
        (
            {"TESSERA_TLS_CERT_FILE": str(pki.server.cert), "TESSERA_TLS_KEY_FILE": str(garbage)},
            "TESSERA_TLS_KEY_FILE",
            "PEM private key",
        ),
        (
            {
                "TESSERA_TLS_CERT_FILE": str(pki.server.cert),
                "TESSERA_TLS_KEY_FILE": str(pki.client.key),
            },
            "TESSERA_TLS_KEY_FILE",
            "the private key of TESSERA_TLS_CERT_FILE",
        ),
        (server_env(pki.expired), "TESSERA_TLS_CERT_FILE", "has not expired"),
        (server_env(pki.future), "TESSERA_TLS_CERT_FILE", "valid now"),
        (
            server_env(pki.server, TESSERA_TLS_CLIENT_CA_FILE=str(garbage)),
            "TESSERA_TLS_CLIENT_CA_FILE",
            "PEM certificates",
        ),
    ]


def test_bad_server_settings_name_the_variable(pki: Pki, tmp_path: Path) -> None:
    for env, variable, expected in bad_server_settings(pki, tmp_path):
        with pytest.raises(ConfigError) as caught:
            ServerTls.from_env(Env(env))
        assert caught.value.variable == variable, env
        assert expected in str(caught.value), (env, str(caught.value))


def test_bad_client_settings_name_the_variable(pki: Pki, tmp_path: Path) -> None:
    cases = [
        ({"TESSERA_TLS_CA_FILE": str(tmp_path / "none")}, "TESSERA_TLS_CA_FILE"),
        ({"TESSERA_TLS_ZONES": "true"}, "TESSERA_TLS_ZONES"),
        (
            {
                "TESSERA_TLS_CLIENT_CERT_FILE": str(pki.client.cert),
                "TESSERA_TLS_CLIENT_KEY_FILE": str(pki.client.key),
            },
            "TESSERA_TLS_CLIENT_CERT_FILE",
        ),
        (
            {"TESSERA_TLS_CA_FILE": str(pki.ca), "TESSERA_TLS_SERVER_NAME": "a b"},
            "TESSERA_TLS_SERVER_NAME",
        ),
        (
            {
                "TESSERA_TLS_CA_FILE": str(pki.ca),
                "TESSERA_TLS_CLIENT_CERT_FILE": str(pki.expired.cert),
                "TESSERA_TLS_CLIENT_KEY_FILE": str(pki.expired.key),
            },
            "TESSERA_TLS_CLIENT_CERT_FILE",
        ),
    ]
    for env, variable in cases:
        with pytest.raises(ConfigError) as caught:
            ClientTls.from_env(Env(env))
        assert caught.value.variable == variable, env


# --- handshakes against an in-process server ------------------------------------------------


@pytest.fixture
async def expired_server(pki: Pki) -> AsyncIterator[str]:
    """A server presenting an expired certificate (the check at start-up is bypassed)."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)  # type: ignore[attr-defined]
    credentials = ServerTls(pki.expired.cert.read_bytes(), pki.expired.key.read_bytes())
    port = server.add_secure_port("127.0.0.1:0", credentials.credentials())
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def check(address: str, settings: ClientTls | None, *, zone: bool = False) -> None:
    async with tls.channel(address, tls=settings, zone=zone) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10.0
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def refused(address: str, settings: ClientTls | None, *, zone: bool = False) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(address, settings, zone=zone)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    return caught.value.details() or ""


async def test_an_expired_server_certificate_is_refused(pki: Pki, expired_server: str) -> None:
    details = await refused(expired_server, client(pki))
    assert "handshake" in details.lower() or "ssl" in details.lower(), details


# --- a real service process serving TLS -----------------------------------------------------


def serve(env: dict[str, str], module: str = SLEEPY) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(module, {**ENV, **env}, name="tls-service").start()
    proc.wait_serving(timeout_s=60.0)  # generous: the machine may be loaded
    yield proc
    proc.kill()


@pytest.fixture
def tls_service(pki: Pki) -> Iterator[ServiceProcess]:
    yield from serve(server_env(pki.server))


@pytest.mark.integration
async def test_a_client_trusting_the_ca_is_served_and_others_are_refused(
    pki: Pki, tls_service: ServiceProcess
) -> None:
    address = tls_service.grpc_address
    await check(address, client(pki))
    await check(f"localhost:{tls_service.ports['grpc_port']}", client(pki))
    other = ClientTls.from_env(Env({"TESSERA_TLS_CA_FILE": str(pki.other_ca)}))
    details = await refused(address, other)
    assert "handshake" in details.lower() or "ssl" in details.lower(), details
    await refused(address, None)  # plaintext to a TLS port
    # The name checked is the address's host, or the one configured.
    await refused(address, client(pki, TESSERA_TLS_SERVER_NAME="tessera.internal"))


@pytest.mark.integration
async def test_the_configured_server_name_is_checked(pki: Pki) -> None:
    for proc in serve(server_env(pki.internal)):
        await refused(proc.grpc_address, client(pki))
        await check(proc.grpc_address, client(pki, TESSERA_TLS_SERVER_NAME="tessera.internal"))


@pytest.mark.integration
async def test_mutual_tls_refuses_a_client_without_a_certificate(pki: Pki) -> None:
    for proc in serve(server_env(pki.server, TESSERA_TLS_CLIENT_CA_FILE=str(pki.ca))):
        await refused(proc.grpc_address, client(pki))
        other_client = client(
            pki,
            TESSERA_TLS_CLIENT_CERT_FILE=str(pki.other_server.cert),
            TESSERA_TLS_CLIENT_KEY_FILE=str(pki.other_server.key),
        )
        await refused(proc.grpc_address, other_client)
        with_cert = client(
            pki,
            TESSERA_TLS_CLIENT_CERT_FILE=str(pki.client.cert),
            TESSERA_TLS_CLIENT_KEY_FILE=str(pki.client.key),
        )
        await check(proc.grpc_address, with_cert)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("case", "variable"),
    [
        ("no key", "TESSERA_TLS_KEY_FILE"),
        ("key of another certificate", "TESSERA_TLS_KEY_FILE"),
        ("expired", "TESSERA_TLS_CERT_FILE"),
        ("no CA bundle", "TESSERA_TLS_CA_FILE"),
    ],
)
def test_bad_tls_settings_stop_the_process_naming_the_variable(
    pki: Pki, tmp_path: Path, case: str, variable: str
) -> None:
    env = {
        "no key": {"TESSERA_TLS_CERT_FILE": str(pki.server.cert)},
        "key of another certificate": {
            "TESSERA_TLS_CERT_FILE": str(pki.server.cert),
            "TESSERA_TLS_KEY_FILE": str(pki.client.key),
        },
        "expired": server_env(pki.expired),
        "no CA bundle": {"TESSERA_TLS_CA_FILE": str(tmp_path / "none")},
    }[case]
    proc = ServiceProcess(SLEEPY, {**ENV, **env}, name="tls-bad").start()
    assert proc.proc is not None
    code = proc.proc.wait(timeout=30)
    proc.terminate()
    assert code == 2
    assert variable in "\n".join(proc.lines)


def install(issued: Issued, cert: Path, key: Path) -> None:
    """Replace the files as a Secret volume update does: new files swapped in."""
    for source, target in ((issued.cert, cert), (issued.key, key)):
        shutil.copy(source, target.with_suffix(".new"))
        os.replace(target.with_suffix(".new"), target)


@pytest.mark.integration
async def test_a_renewed_certificate_is_served_without_a_restart(pki: Pki, tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    install(pki.server, cert, key)
    other = ClientTls.from_env(Env({"TESSERA_TLS_CA_FILE": str(pki.other_ca)}))
    for proc in serve({"TESSERA_TLS_CERT_FILE": str(cert), "TESSERA_TLS_KEY_FILE": str(key)}):
        await check(proc.grpc_address, client(pki))
        # A renewal that fails the start-up checks is refused; the old pair stays.
        shutil.copy(pki.client.key, key)
        await check(proc.grpc_address, client(pki))
        for _ in range(100):
            if any("renewed TLS certificate refused" in line for line in proc.lines):
                break
            await asyncio.sleep(0.05)
        assert any("TESSERA_TLS_KEY_FILE" in line for line in proc.lines)
        # The next handshake after a good renewal presents the new certificate.
        install(pki.other_server, cert, key)
        await check(proc.grpc_address, other)
        await refused(proc.grpc_address, client(pki))


@pytest.mark.integration
async def test_a_zone_serves_its_link_over_tls(pki: Pki, redis_server: LocalRedis) -> None:
    env = {
        **server_env(pki.server),
        **LOCAL.env(),
        "TESSERA_REDIS_URL": redis_server.url_for("zone"),
        "TESSERA_WORLD": "tls",
        "TESSERA_ZONE": "tls-0",
    }
    for proc in serve(env, "tessera.zone"):
        # A zone's channel is TLS only when the client is told zones serve it.
        await refused(proc.grpc_address, client(pki), zone=True)
        settings = client(pki, TESSERA_TLS_ZONES="true")
        await check(proc.grpc_address, settings, zone=True)
        async with tls.channel(proc.grpc_address, tls=settings, zone=True) as channel:
            status = await zone_pb2_grpc.ZoneStub(channel).GetStatus(
                zone_pb2.GetStatusRequest(), timeout=10.0, metadata=LOCAL.metadata("service")
            )
        assert status.zone.zone == "tls-0"


@pytest.mark.integration
async def test_a_game_client_plays_with_tls_on_every_grpc_hop(
    pki: Pki, redis_server: LocalRedis, redis: store.Client, database_url: str, tmp_path: Path
) -> None:
    """Auth, the relay and the zone serve TLS; the relay verifies auth (keys) and the
    zone (its link, with TESSERA_TLS_ZONES); a client of the SDK logs in and plays
    over the relay's Play stream, both with the CA's credentials."""
    served = {**server_env(pki.server), "TESSERA_TLS_CA_FILE": str(pki.ca)}
    world = World(redis, redis_server.url, world="tls", env=server_env(pki.server))
    stack = Stack(world, database_url, tmp_path, env={**served, "TESSERA_TLS_ZONES": "true"})
    credentials = client(pki).credentials()
    try:
        await stack.start([ZoneSpec("tls-0", Rect(-500, -500, 500, 500))])
        token = await guest_connect_token(
            stack.auth.grpc_address, "device-tls-0123456789", credentials=credentials
        )
        game = GameClient(PlayTransport(stack.relay.grpc_address, credentials=credentials))
        await game.connect(token)
        game.start(lambda _client: Intent(move_x=1.0))
        deadline = time.monotonic() + 60.0  # generous: the machine may be loaded
        while game.snapshots < 5:
            assert time.monotonic() < deadline, "no snapshots over TLS"
            await asyncio.sleep(0.05)
        await game.close()
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # plaintext to auth: refused
            await guest_connect_token(stack.auth.grpc_address, "device-tls-9876543210")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stack.kill()
