"""Zone start-to-ready: from process start to the ``serving`` log line, cold and warm.

The zone loads (or compiles) its numba kernels before it serves and registers
itself. A cold start has an empty ``NUMBA_CACHE_DIR`` and compiles every kernel;
a warm start finds them in the cache (as a zone started from the image does).

    python bench/zone_startup.py --json PATH [--warm 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tessera.common.process import ServiceProcess
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL


def start_to_ready(redis_url: str, cache: Path) -> float:
    """Seconds from starting one zone process to its ``serving`` line."""
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
    proc = ServiceProcess("tessera.zone", env, name="zone").start()
    try:
        proc.wait_serving(timeout_s=120.0)
        return time.perf_counter() - began
    finally:
        proc.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the records")
    parser.add_argument("--warm", type=int, default=3, help="warm starts after the cold one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis = LocalRedis(Path(tmp) / "redis")
        (Path(tmp) / "redis").mkdir()
        redis.start()
        try:
            cache = Path(tmp) / "numba"
            cold = start_to_ready(redis.url, cache)
            warm = [start_to_ready(redis.url, cache) for _ in range(args.warm)]
        finally:
            redis.stop()
    record: dict[str, Any] = {
        "cold_s": round(cold, 3),
        "warm_s_median": round(statistics.median(warm), 3),
        "warm_s": [round(w, 3) for w in warm],
    }
    print(f"start-to-ready: cold {cold:.2f} s, warm median {record['warm_s_median']:.2f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bench": "zone_startup", "records": [record]}, indent=2))


if __name__ == "__main__":
    main()
