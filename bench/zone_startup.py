"""Zone start-to-ready: from process start to the ``serving`` log line, cold and
warm, in wall time and in the zone process's CPU seconds.

The zone loads (or compiles) its numba kernels before it serves and registers
itself. A cold start has an empty ``NUMBA_CACHE_DIR`` and compiles every kernel;
a warm start finds them in the cache (as a zone started from the image does).
The CPU figure (user + system of the zone process up to its ``serving`` line,
from /proc) is what a start takes from the zones already running on the same
cores, and moves less with the machine's load than the wall time does.

Then as many starts forked from a zone template (``ForkedProcess``, as the
operator's local runtime starts zones): the template imports the zone's code
and loads its kernels once (``template_cpu_s``), each forked zone only runs the
zone's own start-up.

    python bench/zone_startup.py --json PATH [--warm 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tessera.common.process import ForkedProcess, ServiceProcess, cpu_seconds
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL
from tessera.operator.processes import ZONE_TEMPLATE

TEMPLATE: list[int] = []  # the pid of the forked zones' parent


def start_to_ready(redis_url: str, cache: Path, *, forked: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds from starting one zone process to its ``serving`` line."""
    env = {
        "TESSERA_GRPC_PORT": "0",
        "TESSERA_METRICS_PORT": "0",
        "TESSERA_HOST": "127.0.0.1",
        "TESSERA_REDIS_URL": redis_url,
        "TESSERA_ZONE_BOUNDS": "-500,-500,500,500",
        "NUMBA_CACHE_DIR": str(cache),
        **LOCAL.env(),
    }
    began = time.perf_counter()
    proc = (
        ForkedProcess("tessera.zone", env, name="zone", preload=ZONE_TEMPLATE)
        if forked
        else ServiceProcess("tessera.zone", env, name="zone")
    ).start()
    try:
        proc.wait_serving(timeout_s=120.0)
        wall = time.perf_counter() - began
        if forked:  # the template: the zone's parent (field 4 of /proc/PID/stat)
            stat = Path(f"/proc/{proc.pid}/stat").read_text()
            TEMPLATE[:] = [int(stat.rsplit(")")[1].split()[1])]
        return wall, cpu_seconds(proc.pid)
    finally:
        proc.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the records")
    parser.add_argument("--warm", type=int, default=5, help="warm starts after the cold one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis = LocalRedis(Path(tmp) / "redis")
        (Path(tmp) / "redis").mkdir()
        redis.start()
        try:
            cache = Path(tmp) / "numba"
            cold = start_to_ready(redis.url, cache)
            warm = [start_to_ready(redis.url, cache) for _ in range(args.warm)]
            os.environ["NUMBA_CACHE_DIR"] = str(cache)  # the template's, read at its start
            forked = [start_to_ready(redis.url, cache, forked=True) for _ in range(args.warm)]
            template_cpu_s = cpu_seconds(TEMPLATE[0])
        finally:
            redis.stop()
    record: dict[str, Any] = {
        "cold_s": round(cold[0], 3),
        "cold_cpu_s": round(cold[1], 3),
        "warm_s_median": round(statistics.median(w for w, _ in warm), 3),
        "warm_cpu_s_median": round(statistics.median(c for _, c in warm), 3),
        "warm_s": [round(w, 3) for w, _ in warm],
        "warm_cpu_s": [round(c, 3) for _, c in warm],
        "forked_s_median": round(statistics.median(w for w, _ in forked), 3),
        "forked_cpu_s_median": round(statistics.median(c for _, c in forked), 3),
        "forked_s": [round(w, 3) for w, _ in forked],
        "forked_cpu_s": [round(c, 3) for _, c in forked],
        "template_cpu_s": round(template_cpu_s, 3),
        # Without written bytecode every start compiles the project's modules again.
        "dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
        "load_average": os.getloadavg()[0],
        "python": sys.version.split()[0],
    }
    print(
        f"start-to-ready: cold {cold[0]:.2f} s ({cold[1]:.2f} CPU-s), warm median "
        f"{record['warm_s_median']:.2f} s ({record['warm_cpu_s_median']:.2f} CPU-s), forked "
        f"median {record['forked_s_median']:.2f} s ({record['forked_cpu_s_median']:.2f} CPU-s; "
        f"template {template_cpu_s:.2f} CPU-s)"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bench": "zone_startup", "records": [record]}, indent=2))


if __name__ == "__main__":
    main()
