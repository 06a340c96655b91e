"""ZoneLink streams opened on a channel to a zone that is stopping, over and over:
the case in which gRPC core's transparent retries made the client's memory run
away (docs/OPERATIONS.md, "gRPC retries").

Each stop: a zone (forked from the zone template, as the local runtime starts
them) serves, gets SIGTERM, and 20 streams are opened to it 5 ms apart on one
channel, each sending its hello and reading until the stream ends. The bench
watches its own resident size and stops at ``--limit-mb``, reporting the stop it
reached, or at a zone that did not exit within 20 s of its SIGTERM
(``stuck_stop``). ``--retries`` turns gRPC's retries back on for the channel
(they are off on every Tessera channel: ``tessera.common.tls.NO_RETRIES``).

    python bench/refused_streams.py --json PATH [--stops 400] [--retries] [--limit-mb 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from tessera.authclient.credentials import bearer_interceptors
from tessera.common import tls
from tessera.common.process import ForkedProcess
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL
from tessera.harness.tripwire import resident_bytes
from tessera.operator.processes import ZONE_TEMPLATE
from tessera.v1 import zone_pb2, zone_pb2_grpc

STREAMS = 20


async def _hello() -> AsyncIterator[zone_pb2.ZoneLinkUp]:
    yield zone_pb2.ZoneLinkUp(hello=zone_pb2.LinkHello(relay_id="bench"))
    await asyncio.Event().wait()  # the stream stays open until the zone ends it


async def _link(stub: zone_pb2_grpc.ZoneStub) -> None:
    call: Any = stub.ZoneLink(_hello())  # type: ignore[arg-type]
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for _ in call:
            pass


async def stop_once(env: dict[str, str], options: list[tuple[str, Any]], n: int) -> None:
    zone = ForkedProcess("tessera.zone", env, name=f"zone-{n}", preload=ZONE_TEMPLATE).start()
    zone.wait_serving()
    try:
        async with tls.channel(
            zone.grpc_address, zone=True, interceptors=bearer_interceptors(LOCAL), options=options
        ) as channel:
            stub = zone_pb2_grpc.ZoneStub(channel)
            assert zone.proc is not None
            zone.proc.terminate()
            links = []
            for _ in range(STREAMS):
                links.append(asyncio.create_task(_link(stub)))
                await asyncio.sleep(0.005)
            await asyncio.to_thread(zone.proc.wait, 20)
            await asyncio.wait_for(asyncio.gather(*links), 10)
    finally:
        zone.kill()


def watch(limit: int, report: dict[str, Any], path: Path) -> None:
    """Write the report and exit at once when this process grows past ``limit``."""
    while True:
        rss = resident_bytes()
        report["peak_mb"] = max(report["peak_mb"], rss >> 20)
        if rss > limit:
            report["runaway"] = True
            path.write_text(json.dumps({"bench": "refused_streams", "records": [report]}, indent=2))
            print(f"runaway after {report['stops']} stops ({rss >> 20} MB)", flush=True)
            os._exit(1)
        time.sleep(0.05)


async def run(args: argparse.Namespace, report: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis = LocalRedis(Path(tmp))
        redis.start()
        try:
            env = {
                **LOCAL.env(),
                "TESSERA_GRPC_PORT": "0",
                "TESSERA_METRICS_PORT": "0",
                "TESSERA_REDIS_URL": redis.url,
                "TESSERA_ZONE_BOUNDS": "-500,-500,500,500",
                "TESSERA_SHUTDOWN_GRACE_S": "30",
            }
            options = [("grpc.enable_retries", 1)] if args.retries else []
            began = time.perf_counter()
            for n in range(args.stops):
                try:
                    await stop_once(env, options, n)
                except subprocess.TimeoutExpired:  # the zone did not exit within 20 s
                    report["stuck_stop"] = n + 1
                    break
                report["stops"] = n + 1
            report["wall_s"] = round(time.perf_counter() - began, 1)
        finally:
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the record")
    parser.add_argument("--stops", type=int, default=400)
    parser.add_argument("--retries", action="store_true", help="gRPC retries on (the default's)")
    parser.add_argument("--limit-mb", type=int, default=1500)
    args = parser.parse_args()
    report: dict[str, Any] = {"retries": args.retries, "stops": 0, "peak_mb": 0, "runaway": False}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    threading.Thread(
        target=watch, args=(args.limit_mb << 20, report, args.json), daemon=True
    ).start()
    asyncio.run(run(args, report))
    report["python"] = sys.version.split()[0]
    args.json.write_text(json.dumps({"bench": "refused_streams", "records": [report]}, indent=2))
    stuck = f", zone stop {report['stuck_stop']} did not end" if "stuck_stop" in report else ""
    print(f"{report['stops']} stops, peak {report['peak_mb']} MB, no runaway{stuck}")


if __name__ == "__main__":
    main()
