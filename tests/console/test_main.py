"""The console end to end in headless Chromium: a real Redis and PostgreSQL, the
operator's local runtime with real zone processes, the console as its own process. Players joined
over the zone's gRPC API push the zone over its split threshold; the page shows
the split on the map, in the zone table and in the timeline, and refuses an
admin action without a login. Screenshots go to build/artifacts/console/ (not
committed), which the test prints."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright
from redis.asyncio import Redis

from tessera.common.process import ServiceProcess
from tessera.common.store import read_heartbeat
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL
from tessera.operator.local import LocalRuntime
from tessera.operator.planner.model import Phase
from tessera.v1 import common_pb2, zone_pb2, zone_pb2_grpc

pytestmark = pytest.mark.integration

WORLD: dict[str, Any] = {
    "apiVersion": "tessera.io/v1alpha1",
    "kind": "World",
    "metadata": {"name": "earth"},
    "spec": {
        "bounds": {"minX": 0, "minZ": 0, "maxX": 1024, "maxZ": 512},
        "zoneTemplate": {"image": "local", "tickRate": 20},
        "autoscaling": {
            "targetPlayersPerZone": 8,
            "splitThreshold": 10,
            "mergeThreshold": 2,
            "splitStabilizationSeconds": 0,
            "mergeStabilizationSeconds": 60,
            "cooldownSeconds": 120,  # one split, no second one on a slow machine
            "minZoneSize": 64,
        },
    },
}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 40_000
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "artifacts" / "console"


@pytest.fixture
async def runtime(
    local_runtime: Callable[..., LocalRuntime], redis: Redis
) -> AsyncIterator[LocalRuntime]:
    """On an emptied Redis, the local runtime (a pass every 0.3 s) with earth-0 READY."""
    rt = local_runtime(WORLD)
    stop = asyncio.Event()
    passes = asyncio.create_task(rt.run(stop, interval_s=0.3))
    try:
        for _ in range(300):
            if "earth-0" in rt.zones and rt.zones["earth-0"].view.phase == Phase.READY:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("earth-0 did not become READY within 30 s")
        yield rt
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await passes
        await rt.close()


@pytest.fixture
def console(redis_server: LocalRedis, database_url: str) -> Iterator[str]:
    """The console process; yields its base URL."""
    proc = ServiceProcess(
        "tessera.console",
        {
            "TESSERA_REDIS_URL": redis_server.url_for("console"),
            "TESSERA_DATABASE_URL": database_url,
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_CONSOLE_HTTP_PORT": "0",
            "TESSERA_WORLD": "earth",
            "TESSERA_CONSOLE_INTERVAL_S": "0.3",
            # No auth runs here: the verifier keeps retrying, admin actions are refused.
            "TESSERA_AUTH_ADDRESS": "127.0.0.1:9",
            "TESSERA_SERVICE_CLIENT_SECRET": "console-secret-0123456789",
        },
        name="console",
    ).start()
    try:
        ports = proc.wait_serving(30.0)
        yield f"http://127.0.0.1:{ports['http_port']}"
    finally:
        proc.terminate(10.0)


async def text_is(page: Page, selector: str, text: str) -> None:
    await page.wait_for_function(
        "([s, t]) => document.querySelector(s)?.textContent === t",
        arg=[selector, text],
        timeout=WAIT_MS,
    )


async def test_the_console_shows_a_split_and_refuses_an_admin_without_login(
    runtime: LocalRuntime, console: str, redis: Redis
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"console screenshots: {ARTIFACTS}")
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1500, "height": 900})
            await page.goto(console)
            await text_is(page, "#zone-count", "1")
            await page.wait_for_selector("#map[data-rects='1']", timeout=WAIT_MS)
            await page.screenshot(path=str(ARTIFACTS / "before-split.png"))

            address = runtime.zones["earth-0"].process.grpc_address
            async with LOCAL.channel(address) as channel:
                stub: Any = zone_pb2_grpc.ZoneStub(channel)
                for i in range(12):
                    spawn = common_pb2.Vec3(x=100 + 10 * i, z=100)
                    await stub.Join(
                        zone_pb2.JoinRequest(player_id=f"p{i}", relay_id="r", spawn=spawn)
                    )

            await text_is(page, "#zone-count", "2")
            await page.wait_for_selector("#map[data-rects='2']", timeout=WAIT_MS)
            await page.wait_for_function(
                "document.querySelectorAll('#zones tbody tr').length === 2", timeout=WAIT_MS
            )
            await page.wait_for_selector("#timeline li:has-text('Split')", timeout=WAIT_MS)
            await text_is(page, "#player-count", "12")

            await page.locator("#zones tbody tr[data-zone='earth-0'] button.drain").click()
            await page.wait_for_selector("#notice.refused", timeout=WAIT_MS)
            notice = await page.locator("#notice").text_content()
            assert notice == "refused (401): admin login required"
            await page.screenshot(path=str(ARTIFACTS / "after-split.png"))
        finally:
            await browser.close()
    beat = await read_heartbeat(redis, "earth", "earth-0")
    assert beat is not None and beat.state == zone_pb2.ZONE_STATE_ACTIVE  # nothing drained
