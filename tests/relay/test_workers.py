"""Relay worker processes: each worker's settings, and with real processes
(redis-server, auth, a zone, relays and SDK bots over UDP, the helpers of
``test_failover.py``) sessions on both workers, a killed worker and its restart,
NAT rebinding and SIGTERM to the parent."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import numpy as np
import pytest

from tessera.client.client import GameClient
from tessera.common.config import Env
from tessera.common.process import ServiceProcess
from tessera.harness.relays import RelayWorld, metric
from tessera.relay.config import RelayConfig
from tessera.relay.workers import relay_workers, worker_env

from .test_config import BASE
from .test_failover import (
    connect_playing,
    entities,
    gaps_after,
    keep_moving,
    nothing_lost_or_duplicated,
    resumed,
    udp,
    wait_for,
    world,
)

__all__ = ["world"]  # the fixture: auth, the zone, UDP ports for relays A and B
BOTS = 30
# Device ids of their own (test_failover.connect numbers the devices).
OFFSET = 5000


def test_a_worker_is_a_relay_of_its_own_on_the_parents_ports() -> None:
    env = worker_env(
        relay_id="relay-a",
        number=2,
        udp_port=7777,
        grpc_port=50051,
        metrics_port=9090,
        address="play.example.com:7777",
    )
    config = RelayConfig.from_env(Env({**BASE, **env}))
    assert (config.relay_id, config.udp_port, config.public_address) == (
        "relay-a-w2",
        7777,
        "play.example.com:7777",
    )
    assert (config.workers, config.worker, config.reuse_port) == (1, 2, True)
    assert (env["TESSERA_GRPC_PORT"], env["TESSERA_METRICS_PORT"]) == ("50051", "9092")
    zero = worker_env(
        relay_id="r", number=1, udp_port=1, grpc_port=2, metrics_port=0, address="h:1"
    )
    assert zero["TESSERA_METRICS_PORT"] == "0"  # any free port


def test_n_workers_are_the_parent_and_n_minus_one_children() -> None:
    workers = relay_workers(
        3, relay_id="relay-a", udp_port=7777, grpc_port=50051, metrics_port=9090, address="h:7777"
    )
    assert [c.env["TESSERA_RELAY_ID"] for c in workers.children] == ["relay-a-w1", "relay-a-w2"]
    assert [c.module for c in workers.children] == ["tessera.relay"] * 2
    assert workers.pids == []  # not started


def worker_ports(relay: ServiceProcess) -> dict[str, int]:
    """Relay id -> /metrics port of each process of ``relay`` (the parent and the
    workers serving now: a restarted worker's newest line wins)."""
    ports = {"relay-a": relay.ports["metrics_port"]}
    for record in relay.records():
        if record.get("msg") == "relay worker serving":
            ports[f"relay-a-w{record['relay_worker']}"] = int(record["metrics_port"])
    return ports


def udp_sessions(ports: dict[str, int]) -> dict[str, float]:
    return {
        rid: metric(port, "tessera_relay_sessions", transport="udp") for rid, port in ports.items()
    }


def accepted_resumes(ports: dict[str, int]) -> float:
    return sum(
        metric(port, "tessera_relay_resumes_total", result="accepted") for port in ports.values()
    )


def unknown_drops(ports: dict[str, int]) -> float:
    """Datagrams the workers dropped for coming from an address with no session there."""
    return sum(
        metric(port, "tessera_relay_drops_total", reason="unknown_address")
        for port in ports.values()
    )


async def every_client_heard(ports: dict[str, int], timeout_s: float) -> None:
    """Wait for a second in which no worker drops a datagram from an unknown address:
    every client's packets reach the worker holding its session (each sends 5 inputs
    a second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        before = unknown_drops(ports)
        await asyncio.sleep(1.0)
        if unknown_drops(ports) == before:
            return
        assert time.monotonic() < deadline, (
            "clients still sending to a worker without their session"
        )


def settled(clients: list[GameClient]) -> bool:
    return all(c.connected and udp(c).accepted and not udp(c).resuming for c in clients)


@pytest.mark.integration
async def test_two_workers_share_the_port_survive_a_kill_and_stop_without_disconnects(
    world: RelayWorld,
) -> None:
    """Relay A with two worker processes and 30 bots: both workers hold sessions.
    Every bot moves to a new local port (NAT rebinding): each resumes, on whichever
    worker its new port hashes to. kill -9 of worker 1: its bots resume on worker 0,
    and the parent starts worker 1 again. SIGTERM to the parent with relay B up:
    every worker tells its bots to MOVE to B, and all resume there. 0 disconnects
    throughout; the zone holds each bot's entity once, the same one from start to
    end, and every bot keeps moving."""
    procs, address = world.procs, world.address
    relay_a = procs["relay-a"] = world.relay("a", env={"TESSERA_RELAY_WORKERS": "2"})
    clients: list[GameClient] = []
    try:
        await asyncio.to_thread(relay_a.wait_serving)
        (child,) = next(r for r in relay_a.records() if r.get("msg") == "serving")["worker_pids"]
        auth = procs["auth"].grpc_address
        clients += await connect_playing(auth, address["a"], range(OFFSET, OFFSET + BOTS))
        before = await entities(procs["zone"].grpc_address)
        assert len(before) == BOTS
        ports = worker_ports(relay_a)
        sessions = udp_sessions(ports)
        assert sum(sessions.values()) == BOTS and all(sessions.values()), sessions

        # kill -9 of worker 1: the kernel hands its bots' datagrams to worker 0.
        killed = sessions["relay-a-w1"]
        resumes = accepted_resumes({"relay-a": ports["relay-a"]})  # w1's count dies with it
        since_kill = [udp(c).resumes for c in clients]
        os.kill(child, signal.SIGKILL)
        await wait_for(
            lambda: any(
                r.get("msg") == "relay worker exited; starting it again" for r in relay_a.records()
            ),
            15.0,
            "the parent to restart worker 1",
        )
        await wait_for(
            lambda: sum(r.get("msg") == "relay worker serving" for r in relay_a.records()) == 2,
            30.0,
            "worker 1 serving again",
        )
        ports = worker_ports(relay_a)

        # Its bots resumed: on worker 0, or on worker 1 once back (and bots of worker
        # 0 whose ports the kernel hashes to the new worker 1 resume there).
        def moved() -> int:
            return sum(udp(c).resumes > n for c, n in zip(clients, since_kill, strict=True))

        await wait_for(lambda: settled(clients) and moved() >= killed, 20.0, "resumes")
        # Worker 1 back in the group takes some 4-tuples from worker 0, which keeps
        # sending to those clients: after UNHEARD_S without a packet from them it
        # tells them to MOVE, and they resume from a new socket.
        await every_client_heard(ports, 20.0)
        await wait_for(lambda: settled(clients), 15.0, "bots settled")
        assert accepted_resumes(ports) - resumes >= moved()
        assert all(c.connected for c in clients), [c.disconnected for c in clients]
        await nothing_lost_or_duplicated(world, before)
        await keep_moving(clients)

        # NAT rebinding: a new 4-tuple, maybe another worker; a resume, not a disconnect.
        rebound = [udp(c).resumes for c in clients]
        restart_moved = sum(udp(c).resumes - n for c, n in zip(clients, since_kill, strict=True))
        told = metric(ports["relay-a"], "tessera_relay_unheard_moves_total")
        for client in clients:
            udp(client).rebind()
        await resumed(clients, rebound, "A after rebinding", address["a"])
        assert all(c.connected for c in clients), [c.disconnected for c in clients]
        await nothing_lost_or_duplicated(world, before)

        # SIGTERM to the parent: every worker moves its bots to relay B.
        relay_b = procs["relay-b"] = world.relay("b")
        await asyncio.to_thread(relay_b.wait_serving)
        await wait_for(lambda: settled(clients), 15.0, "bots settled")
        on_a = [udp(c).resumes for c in clients]
        assert await asyncio.to_thread(relay_a.terminate, 30.0) == 0
        # Every worker has exited with the parent: the port is free again.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", world.ports["a"]))
        drains = [r for r in relay_a.records() if r.get("msg") == "draining"]
        assert drains and all(r["move_to"] == address["b"] for r in drains), drains
        await resumed(clients, on_a, "B", address["b"])
        assert all(c.connected for c in clients), [c.disconnected for c in clients]
        await nothing_lost_or_duplicated(world, before)
        await keep_moving(clients)
        kill_gaps = [
            udp(c).resume_gaps[n]
            for c, n, m in zip(clients, since_kill, rebound, strict=True)
            if m > n
        ]
        killing, rebinding, sigterm = (
            np.percentile(gaps, [50, 100]).round(3).tolist()
            for gaps in (kill_gaps, gaps_after(clients, rebound), gaps_after(clients, on_a))
        )
        print(
            f"kill -9 of worker 1 ({killed:.0f} bots) and its restart: {restart_moved} "
            f"resumes ({told:.0f} after an unheard MOVE); resume gap p50/max after "
            f"kill -9 {killing} s, rebinding {rebinding} s, SIGTERM {sigterm} s"
        )
    finally:
        await asyncio.gather(*(c.close() for c in clients))
