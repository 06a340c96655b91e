"""Front-end workers: real matchmaker processes sharing one gRPC port."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable

import grpc
import pytest

from tessera.authclient.bearer import bearer_metadata
from tessera.common.config import ConfigError, Env
from tessera.common.process import ServiceProcess
from tessera.harness.redis import LocalRedis
from tessera.matchmaking.config import Settings
from tessera.matchmaking.workers import worker_env
from tessera.v1 import auth_pb2, auth_pb2_grpc
from tessera.v1 import matchmaking_pb2 as pb
from tessera.v1 import matchmaking_pb2_grpc as pb_grpc

from .conftest import COMMON, scrape


def test_worker_env_serves_the_api_only_on_the_parents_port() -> None:
    env = worker_env(50051, 9090, 2)
    assert env["TESSERA_GRPC_PORT"] == "50051"
    assert env["TESSERA_METRICS_PORT"] == "9092"
    assert env["TESSERA_MM_MATCHING"] == "false"
    assert env["TESSERA_MM_FRONTEND_WORKERS"] == "1"
    assert worker_env(50051, 0, 3)["TESSERA_METRICS_PORT"] == "0"


def test_workers_setting() -> None:
    base = {
        "TESSERA_AUTH_ADDRESS": "127.0.0.1:5000",
        "TESSERA_MM_CONNECT_TOKENS": "false",
        "TESSERA_DATABASE_URL": "postgresql://db/t",
    }
    assert Settings.from_env(Env(base)).frontend_workers == 1
    env = {**base, "TESSERA_MM_FRONTEND_WORKERS": "4"}
    assert Settings.from_env(Env(env)).frontend_workers == 4
    for bad in ("0", "65", "two"):
        with pytest.raises(ConfigError, match="TESSERA_MM_FRONTEND_WORKERS"):
            Settings.from_env(Env({**base, "TESSERA_MM_FRONTEND_WORKERS": bad}))
    with pytest.raises(ConfigError, match="TESSERA_MM_FRONTEND_WORKERS"):
        Settings.from_env(
            Env({**base, "TESSERA_MM_FRONTEND": "false", "TESSERA_MM_FRONTEND_WORKERS": "2"})
        )


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def matchmaker(
    redis_server: LocalRedis, auth: ServiceProcess, database_url: str, **env: str
) -> ServiceProcess:
    """A matchmaker (not started) with front-end workers, without connect tokens."""
    return ServiceProcess(
        "tessera.matchmaking",
        {
            **COMMON,
            "TESSERA_REDIS_URL": redis_server.url_for("matchmaking"),
            "TESSERA_DATABASE_URL": database_url,
            "TESSERA_AUTH_ADDRESS": auth.grpc_address,
            "TESSERA_MM_CONNECT_TOKENS": "false",
            **env,
        },
        name="matchmaking",
    )


@pytest.mark.integration
async def test_workers_share_the_port_restart_and_stop_with_the_parent(
    redis_server: LocalRedis,
    auth: ServiceProcess,
    database_url: str,
    start_service: Callable[[ServiceProcess], ServiceProcess],
) -> None:
    mm = matchmaker(redis_server, auth, database_url, TESSERA_MM_FRONTEND_WORKERS="3")
    try:
        start_service(mm)
        serving = next(r for r in mm.records() if r.get("msg") == "serving")
        children = serving["frontend_worker_pids"]
        assert len(children) == 2 and all(running(pid) for pid in children)
        # Every process serves the API on the parent's port, with its own /metrics.
        metrics_ports = [mm.ports["metrics_port"]] + [
            r["metrics_port"]
            for r in mm.records()
            if r.get("msg") == "frontend worker serving"
            and r.get("grpc_port") == mm.ports["grpc_port"]
        ]
        assert len(metrics_ports) == 3

        # 16 connections (each its own subchannel) are spread over the three processes.
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.aio.insecure_channel(mm.grpc_address, options=options) for _ in range(16)]
        async with grpc.aio.insecure_channel(auth.grpc_address) as auth_channel:
            auth_stub = auth_pb2_grpc.AuthStub(auth_channel)
            sessions = await asyncio.gather(
                *(
                    auth_stub.GuestLogin(
                        auth_pb2.GuestLoginRequest(device_id=f"device-{uuid.uuid4().hex}")
                    )
                    for _ in channels
                )
            )
        tickets = await asyncio.gather(
            *(
                pb_grpc.MatchmakerStub(channel).CreateTicket(
                    pb.CreateTicketRequest(
                        mode="duel",
                        players=[pb.TicketPlayer(player_id=s.account_id)],
                        regions=[pb.RegionLatency(region="eu", latency_ms=10.0)],
                    ),
                    metadata=bearer_metadata(s.access_token),
                    timeout=10,
                )
                for channel, s in zip(channels, sessions, strict=True)
            )
        )
        for channel in channels:
            await channel.close(None)
        assert all(t.state == pb.TICKET_STATE_SEARCHING for t in tickets)
        counts = [
            scrape(port, "tessera_matchmaking_tickets_total", 'state="created"')
            for port in metrics_ports
        ]
        assert sum(counts) == 16
        assert sum(1 for n in counts if n > 0) >= 2, counts

        # A worker that dies is started again; the parent's SIGTERM stops them all.
        os.kill(children[0], signal.SIGKILL)
        wait_until(
            lambda: any(
                r.get("msg") == "frontend worker exited; starting it again" for r in mm.records()
            )
        )
        wait_until(
            lambda: sum(1 for r in mm.records() if r.get("msg") == "frontend worker serving") == 3
        )
        assert running(children[1])
        assert mm.terminate() == 0
        assert not any(running(pid) for pid in children)
    finally:
        mm.kill()


@pytest.mark.integration
def test_workers_die_with_a_killed_parent(
    redis_server: LocalRedis,
    auth: ServiceProcess,
    database_url: str,
    start_service: Callable[[ServiceProcess], ServiceProcess],
) -> None:
    mm = matchmaker(
        redis_server,
        auth,
        database_url,
        TESSERA_MM_MATCHING="false",
        TESSERA_MM_FRONTEND_WORKERS="2",
    )
    try:
        start_service(mm)
        serving = next(r for r in mm.records() if r.get("msg") == "serving")
        (child,) = serving["frontend_worker_pids"]
        assert running(child)
        mm.kill()
        wait_until(lambda: not running(child))
    finally:
        mm.kill()
