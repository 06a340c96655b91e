"""The console against real processes: auth (with an admin account), a relay
plus a relay address where nothing listens, two zone processes sharing an edge,
and the console. The frame lists the zones, their border and both relays (one
down); admins log in through auth, drain a zone into its neighbour, kick, and
are audited; a player account, a missing or bad token and bad input are refused
with a clear status and message."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from redis.asyncio import Redis

from tessera.common import store
from tessera.common.database import Pool
from tessera.common.process import ServiceProcess, free_port
from tessera.harness.audit import audit_trail
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL, relay_login_env, service_clients
from tessera.harness.zones import World, ZoneSpec
from tessera.v1 import auth_pb2, auth_pb2_grpc, zone_pb2
from tessera.wire.geometry import Rect

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
CONSOLE_SECRET = "console-secret-0123456789"
AUTH_ENV = {
    "TESSERA_GRPC_PORT": "0",
    "TESSERA_METRICS_PORT": "0",
    "TESSERA_HOST": "127.0.0.1",
    "TESSERA_CONNECT_KEY": base64.b64encode(os.urandom(32)).decode(),
    "TESSERA_AUTH_ARGON2_TIME_COST": "1",
    "TESSERA_AUTH_ARGON2_MEMORY_KIB": "64",
    "TESSERA_AUTH_ARGON2_PARALLELISM": "1",
    "TESSERA_AUTH_SERVICE_CLIENTS": service_clients(f"console={CONSOLE_SECRET}"),
}


@dataclass
class Setup:
    url: str
    admin_id: str
    redis: Redis
    auth: str
    relay: str
    database: Pool


async def register(address: str, *names: str) -> dict[str, str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub: Any = auth_pb2_grpc.AuthStub(channel)
        out = {}
        for name in names:
            s = await stub.Register(auth_pb2.RegisterRequest(username=name, password=PASSWORD))
            out[name] = s.account_id
        return out


@pytest.fixture
async def setup(
    redis_server: LocalRedis, redis: Redis, database_url: str, database: Pool, tmp_path: Path
) -> AsyncIterator[Setup]:
    """Auth with admin ``boss`` (and player ``pat``), zones a | b, the console. Auth
    signs with the harness's key, which the zones trust."""
    env = {
        **AUTH_ENV,
        **LOCAL.auth_env(tmp_path / "keys"),
        "TESSERA_REDIS_URL": redis_server.url_for("auth"),
        "TESSERA_DATABASE_URL": database_url,
    }
    first = ServiceProcess("tessera.auth", env, name="auth").start()
    first.wait_serving(30.0)
    ids = await register(first.grpc_address, "boss", "pat")
    first.terminate(10.0)
    auth = ServiceProcess(
        "tessera.auth", {**env, "TESSERA_AUTH_ADMIN_ACCOUNTS": ids["boss"]}, name="auth"
    ).start()
    world = World(redis, redis_server.url, world="w")
    relay: ServiceProcess | None = None
    console: ServiceProcess | None = None
    try:
        auth.wait_serving(30.0)
        relay = ServiceProcess(
            "tessera.relay",
            {
                **env,
                "TESSERA_REDIS_URL": redis_server.url_for("relay"),
                "TESSERA_WORLD": "w",
                "TESSERA_RELAY_ID": "relay-t",
                "TESSERA_UDP_HOST": "127.0.0.1",
                "TESSERA_UDP_PORT": "0",
                "TESSERA_AUTH_ADDRESS": auth.grpc_address,
                **relay_login_env(),
            },
            name="relay",
        ).start()
        relay.wait_serving(30.0)
        await world.start_all(
            [
                ZoneSpec("a", Rect(-1000, -1000, 0, 1000)),
                ZoneSpec("b", Rect(0, -1000, 1000, 1000)),
            ]
        )
        console = ServiceProcess(
            "tessera.console",
            {
                "TESSERA_REDIS_URL": redis_server.url_for("console"),
                "TESSERA_DATABASE_URL": database_url,
                "TESSERA_HOST": "127.0.0.1",
                "TESSERA_GRPC_PORT": "0",
                "TESSERA_METRICS_PORT": "0",
                "TESSERA_CONSOLE_HTTP_PORT": "0",
                "TESSERA_WORLD": "w",
                "TESSERA_AUTH_ADDRESS": auth.grpc_address,
                "TESSERA_CONSOLE_RELAYS": f"{relay.grpc_address},127.0.0.1:{free_port()}",
                "TESSERA_CONSOLE_INTERVAL_S": "0.3",
                "TESSERA_SERVICE_CLIENT_SECRET": CONSOLE_SECRET,
            },
            name="console",
        ).start()
        ports = console.wait_serving(30.0)
        yield Setup(
            f"http://127.0.0.1:{ports['http_port']}",
            ids["boss"],
            redis,
            auth.grpc_address,
            relay.grpc_address,
            database,
        )
    finally:
        if console is not None:
            console.terminate(10.0)
        for proc in world.procs.values():
            proc.terminate(10.0)
        if relay is not None:
            relay.terminate(10.0)
        auth.terminate(10.0)


async def post(
    http: aiohttp.ClientSession, url: str, body: Any = None, token: str = ""
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def login(http: aiohttp.ClientSession, url: str, user: str) -> tuple[int, dict[str, Any]]:
    return await post(http, url + "/api/login", {"username": user, "password": PASSWORD})


async def frame_of(setup: Setup) -> dict[str, Any]:
    """The console's frame once it shows both zones and the live relay."""
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            async with http.get(setup.url + "/api/frame") as response:
                frame: dict[str, Any] = await response.json()
            if len(frame["zones"]) == 2 and frame["relays"][setup.relay]["up"]:
                break
            await asyncio.sleep(0.2)
    return frame


async def test_admin_actions_need_an_admin_and_are_audited(setup: Setup) -> None:
    frame = await frame_of(setup)
    assert sorted(frame["zones"]) == ["a", "b"]
    assert frame["borders"] == {"a|b": [0, -1000, 0, 1000]}
    assert frame["relays"][setup.relay] == {"id": "relay-t", "sessions": 0, "up": True}
    (down,) = [r for address, r in frame["relays"].items() if address != setup.relay]
    assert down == {"id": "", "sessions": 0, "up": False}

    async with aiohttp.ClientSession() as http:
        # The console serves before its verifier has auth's keys: 503 until then.
        for _ in range(100):
            status, answer = await login(http, setup.url, "pat")
            if status != 503:
                break
            await asyncio.sleep(0.2)
        assert (status, answer["error"]) == (403, "account 'pat' is not an admin")
        status, answer = await post(
            http, setup.url + "/api/login", {"username": "boss", "password": "wrong password!"}
        )
        assert status == 401 and answer["error"].startswith("login refused by auth")
        status, answer = await post(http, setup.url + "/api/login", [1, 2])
        assert (status, answer["error"]) == (400, "the body must be a JSON object")

        async with grpc.aio.insecure_channel(setup.auth) as channel:
            stub: Any = auth_pb2_grpc.AuthStub(channel)
            player = await stub.Login(auth_pb2.LoginRequest(username="pat", password=PASSWORD))
        drain = setup.url + "/api/zones/a/drain"
        status, answer = await post(http, drain, token=player.access_token)
        assert (status, answer["error"]) == (403, f"account {player.account_id} is not an admin")
        status, answer = await post(http, drain, token="not-a-token")
        assert status == 401 and answer["error"].startswith("access token refused")
        status, answer = await post(http, drain)
        assert (status, answer["error"]) == (401, "admin login required")
        ban = f"{setup.url}/api/accounts/{player.account_id}/ban"
        status, answer = await post(http, ban, {"reason": "x"})
        assert (status, answer["error"]) == (401, "admin login required")
        status, answer = await post(http, ban, {"reason": "x"}, token=player.access_token)
        assert (status, answer["error"]) == (403, f"account {player.account_id} is not an admin")

    beat = await store.read_heartbeat(setup.redis, "w", "a")
    assert beat is not None and beat.state == zone_pb2.ZONE_STATE_ACTIVE  # nothing drained

    async with aiohttp.ClientSession() as http:
        status, session = await login(http, setup.url, "boss")
        assert status == 200 and session["account_id"] == setup.admin_id
        token = session["access_token"]

        status, answer = await post(http, setup.url + "/api/zones/a/drain", token=token)
        assert status == 200, answer
        assert (answer["zone"], answer["target"]) == ("a", "b")
        for _ in range(100):
            beat = await store.read_heartbeat(setup.redis, "w", "a")
            if beat is not None and beat.state != zone_pb2.ZONE_STATE_ACTIVE:
                break
            await asyncio.sleep(0.1)
        assert beat is not None and beat.state in (
            zone_pb2.ZONE_STATE_DRAINING,
            zone_pb2.ZONE_STATE_DRAINED,
        )
        status, answer = await post(http, setup.url + "/api/zones/a/drain", token=token)
        assert status == 409 and "not an active zone" in answer["error"]
        status, answer = await post(http, setup.url + "/api/zones/nowhere/drain", token=token)
        assert status == 404

        status, answer = await post(http, setup.url + "/api/players/p1/kick", token=token)
        assert (status, answer["error"]) == (404, "no relay holds a session of player 'p1'")
        status, answer = await post(http, setup.url + "/api/players/a%20b/kick", token=token)
        assert status == 400

        week = {"reason": "griefing", "duration_s": 7 * 86400}
        status, answer = await post(http, ban, week, token=token)
        assert status == 200, answer
        assert answer["account"] == player.account_id and answer["revoked_sessions"] >= 1
        status, answer = await post(http, setup.url + "/api/accounts/nobody/ban", week, token=token)
        assert status == 404 and answer["error"].startswith("auth refused the ban")
        status, answer = await post(http, ban, {"reason": ""}, token=token)
        assert status == 400

    async with grpc.aio.insecure_channel(setup.auth) as channel:
        stub = auth_pb2_grpc.AuthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as banned:
            await stub.Login(auth_pb2.LoginRequest(username="pat", password=PASSWORD))
        assert banned.value.code() == grpc.StatusCode.PERMISSION_DENIED

    records = await audit_trail(setup.database, 18)
    assert [(r.actor, r.action, r.target, r.outcome) for r in records[:7]] == [
        (player.account_id, "login", "pat", "refused"),
        ("", "login", "boss", "refused"),
        (player.account_id, "drain", "a", "refused"),
        ("", "drain", "a", "refused"),
        ("", "drain", "a", "refused"),
        ("", "ban", player.account_id, "refused"),
        (player.account_id, "ban", player.account_id, "refused"),
    ]
    records = records[7:]
    assert [(r.action, r.target, r.outcome) for r in records] == [
        ("login", "boss", "ok"),
        ("drain", "a", "ok"),
        ("drain", "a", "refused"),
        ("drain", "nowhere", "refused"),
        ("kick", "p1", "refused"),
        ("kick", "a b", "refused"),
        ("ban", player.account_id, "ok"),  # by auth
        ("ban", player.account_id, "ok"),  # by the console
        ("ban", "nobody", "refused"),
        ("ban", "nobody", "refused"),
        ("ban", player.account_id, "refused"),
    ]
    assert {r.actor for r in records} == {setup.admin_id}
    assert {r.source for r in records} == {"127.0.0.1"}
    assert records[1].detail.startswith("draining into b")
    assert records[7].detail.startswith("banned until ") and "(griefing)" in records[7].detail

    # The audit trail read back through the console: admins only, newest first, filtered.
    audit = setup.url + "/api/audit"
    await register(setup.auth, "quinn")
    async with grpc.aio.insecure_channel(setup.auth) as channel:
        stub = auth_pb2_grpc.AuthStub(channel)
        quinn = await stub.Login(auth_pb2.LoginRequest(username="quinn", password=PASSWORD))
    async with aiohttp.ClientSession() as http:
        for token, params, status in [
            ("", {}, 401),
            (quinn.access_token, {}, 403),
            (session["access_token"], {"limit": "0"}, 400),
            (session["access_token"], {"limit": "ten"}, 400),
            (session["access_token"], {"actor": "x" * 201}, 400),
            (session["access_token"], {"since": "1"}, 400),
        ]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.get(audit, params=params, headers=headers) as response:
                assert response.status == status, await response.text()
        headers = {"Authorization": f"Bearer {session['access_token']}"}
        query = {"target": "nobody", "limit": "1"}
        async with http.get(audit, params=query, headers=headers) as response:
            (newest,) = (await response.json())["records"]
        assert (newest["action"], newest["target"], newest["outcome"]) == (
            "ban",
            "nobody",
            "refused",
        )
        assert newest["actor"] == setup.admin_id and newest["at"].startswith("20")
        async with http.get(
            audit, params={"actor": player.account_id}, headers=headers
        ) as response:
            mine = (await response.json())["records"]
        assert [(r["action"], r["outcome"]) for r in mine] == [
            ("ban", "refused"),
            ("drain", "refused"),
            ("login", "refused"),
        ]
