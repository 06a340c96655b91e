"""The shared bootstrap, tested on a real service process."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tessera.common.process import ServiceProcess
from tessera.common.server import end_tasks

SLEEPY = str(Path(__file__).with_name("sleepy_service.py"))
ENV = {"TESSERA_GRPC_PORT": "0", "TESSERA_METRICS_PORT": "0", "TESSERA_HOST": "127.0.0.1"}

pytestmark = pytest.mark.integration


@pytest.fixture
def sleepy() -> Iterator[ServiceProcess]:
    proc = ServiceProcess(SLEEPY, ENV, name="sleepy").start()
    proc.wait_serving()
    yield proc
    proc.kill()


async def test_health_reflection_and_metrics(sleepy: ServiceProcess) -> None:
    async with grpc.aio.insecure_channel(sleepy.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tessera.test.Sleepy"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = set()
        async for response in call:
            names = {s.name for s in response.list_services_response.service}
        assert {"grpc.health.v1.Health", "tessera.test.Sleepy"} <= names

    url = f"http://127.0.0.1:{sleepy.ports['metrics_port']}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    assert b"process_cpu_seconds_total" in body or b"python_info" in body


async def test_sigterm_finishes_in_flight_call_and_exits_zero(sleepy: ServiceProcess) -> None:
    async with grpc.aio.insecure_channel(sleepy.grpc_address) as channel:
        sleep = channel.unary_unary("/tessera.test.Sleepy/Sleep", None, None)
        call = sleep(b"1.5")
        await asyncio.sleep(0.3)  # the call is in flight
        started = time.monotonic()
        assert sleepy.proc is not None
        sleepy.proc.send_signal(signal.SIGTERM)
        assert await call == b"done"
        code = await asyncio.to_thread(sleepy.proc.wait, 5)
    assert code == 0
    assert time.monotonic() - started < 5
    messages = [r.get("msg") for r in sleepy.records()]
    assert messages[-2:] == ["stopping", "stopped"] or "stopped" in messages


def test_a_stop_stuck_in_a_hook_ends_with_status_1_after_its_limit() -> None:
    env = {
        **ENV,
        "SLEEPY_STUCK_HOOK": "1",
        "TESSERA_SHUTDOWN_GRACE_S": "0.2",
        "TESSERA_SHUTDOWN_HOOKS_S": "0.5",
    }
    proc = ServiceProcess(SLEEPY, env, name="sleepy-stuck").start()
    try:
        proc.wait_serving()
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(10) == 1
        overdue = [
            r for r in proc.records() if r.get("msg") == "stop did not finish in time; exiting"
        ]
        assert overdue and overdue[0]["limit_s"] == pytest.approx(0.7)
    finally:
        proc.kill()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TESSERA_GRPC_PORT", "abc", "an integer from 0 to 65535"),
        ("TESSERA_GRPC_PORT", "70000", "an integer from 0 to 65535"),
        ("TESSERA_REDIS_URL", "localhost:6379", "a string matching"),
        ("TESSERA_LOG_LEVEL", "loud", "one of debug"),
    ],
)
def test_bad_env_value_exits_non_zero_naming_the_variable(
    variable: str, value: str, expected: str
) -> None:
    proc = ServiceProcess(SLEEPY, {**ENV, variable: value}, name="sleepy").start()
    assert proc.proc is not None
    code = proc.proc.wait(timeout=20)
    proc.terminate()
    assert code == 2
    output = "\n".join(proc.lines)
    assert variable in output
    assert expected in output


async def test_end_tasks_ends_a_loop_that_absorbed_its_first_cancel() -> None:
    absorbed = asyncio.Event()

    async def loop() -> None:
        # What a loop catching Exception does when a library turned the cancel
        # into an ordinary error (or swallowed it): it goes on.
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if absorbed.is_set():
                    raise
                absorbed.set()

    task = asyncio.create_task(loop())
    quiet = asyncio.create_task(asyncio.sleep(30))
    done = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.02)
    await asyncio.wait_for(end_tasks([task, quiet, done], every_s=0.05), 10)
    assert absorbed.is_set()
    assert task.cancelled() and quiet.cancelled() and done.done()
