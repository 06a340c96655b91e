"""gRPC core's life in a process that opens and drops channels, with and without a hold.

``grpc.aio`` polls core's completion queue from one Python thread (named after
its target, ``_poll_wrapper``) that lives exactly as long as core does: a new
one means core was started again. Each case runs in a fresh interpreter, except
the last, which checks that this test session holds core (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import subprocess
import sys
import threading
import time

import grpc

POLLER = "(_poll_wrapper)"

# Prints the poller after the hold (if any), while a channel is open, and once
# every aio object is garbage (polled: the poller takes a moment to stop).
SCRIPT = """
import asyncio, gc, json, sys, threading, time
import grpc
from tessera.harness import grpc_runtime

def core():
    return [t.name for t in threading.enumerate() if t.name.endswith({poller!r})]

if sys.argv[1] == "hold":
    grpc_runtime.hold()
held = core()

async def call():
    async with grpc.aio.insecure_channel("unix:/nonexistent/test") as channel:
        try:
            await channel.unary_unary("/t.T/M")(b"", timeout=0.5)
        except grpc.aio.AioRpcError:
            pass
        return core()

during = asyncio.run(call())
gc.collect()
deadline = time.monotonic() + 5
while core() and sys.argv[1] == "drop" and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.5)
print(json.dumps({{"held": held, "during": during, "after": core()}}))
"""


def core_life(mode: str) -> dict[str, list[str]]:
    """Core's poller threads after the hold (or none), with a channel open, and after."""
    script = SCRIPT.format(poller=POLLER)
    out = subprocess.run(
        [sys.executable, "-c", script, mode],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    life: dict[str, list[str]] = json.loads(out.stdout.splitlines()[-1])
    return life


def pollers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith(POLLER)]


def test_without_a_hold_core_stops_when_the_last_channel_is_collected() -> None:
    life = core_life("drop")
    assert life["held"] == []
    assert len(life["during"]) == 1
    assert life["after"] == []  # the next channel starts core again


def test_a_held_core_outlives_every_channel() -> None:
    life = core_life("hold")
    assert len(life["held"]) == 1
    assert life["during"] == life["held"] == life["after"]


def test_this_session_holds_core() -> None:
    """Channels opened and dropped by a test neither start nor stop core."""

    async def call() -> None:
        async with grpc.aio.insecure_channel("unix:/nonexistent/test") as channel:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await channel.unary_unary("/t.T/M", None, None)(b"", timeout=0.5)

    before = pollers()
    asyncio.run(call())
    gc.collect()
    time.sleep(0.5)
    assert len(before) == 1
    assert pollers() == before
