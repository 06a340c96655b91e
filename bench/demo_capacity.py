"""How many demo bots this machine carries: ``make demo`` at real settings with
N bots, for each N given, and the CPU each part of the system used.

    python bench/demo_capacity.py --json PATH [--bots 60,100,150] [--duration 90]

Each run is ``python -m tessera.demo --bots N`` (2 km world, the demo scenario);
while it runs, every process below it is sampled from /proc once a second for
its CPU time, summed by role (``tessera.harness.cpu``: zones, relay, bot
processes, probe, auth, Redis, PostgreSQL, the rest).
Reports per run: disconnects and connect failures, lost / duplicated entities,
the worst zone tick p99 and the zones over their budget, the probe's RTT and
prediction error (p50/p95), and CPU cores per role over the run. A run
"carries" its bots when the demo passed (exit 0: no disconnect, nothing lost,
every zone within its tick budget, probe figures present). The machine's load
average before and after each run is recorded: on a shared machine it decides
more than the bot count does.

``--probe-alone SECONDS`` first runs the demo's services with no bots and only
the probe client, walking at 6 m/s (an ordinary player) and at the demo's
50 m/s: its RTT and prediction error with nothing else in the world but the
zone's NPCs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tessera.demo.stack import Stack
from tessera.demo.world import DemoSettings
from tessera.harness.cpu import TreeCpu
from tessera.load import scenario as sc
from tessera.load.probe import Probe, ProbeConfig, ProbeFigures

ROOT = Path(__file__).resolve().parents[1]


def load_average() -> float:
    return os.getloadavg()[0]


def run_demo(bots: int, duration_s: float, out: Path) -> dict[str, Any]:
    """One demo run with its CPU per role (cores over the run)."""
    before = load_average()
    started = time.monotonic()
    args = ["--bots", str(bots), "--duration", str(duration_s), "--output", str(out), "--plain"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tessera.demo", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cpu = TreeCpu(proc.pid, root_role="other")
    while proc.poll() is None:
        cpu.sample()
        time.sleep(1.0)
    elapsed = time.monotonic() - started
    per_role = cpu.totals()
    figures = json.loads((out / "summary.json").read_text())
    probe = figures.get("probe", {})
    p99 = figures.get("tick_p99_ms_per_zone", {})
    return {
        "bots": bots,
        "duration_s": duration_s,
        "passed": proc.returncode == 0,
        "disconnects": figures["disconnects"],
        "connect_failures": figures["connect_failures"],
        "lost": figures["lost_entities"],
        "duplicated": figures["duplicated_entities"],
        "splits": figures["splits"],
        "merges": figures["merges"],
        "tick_p99_ms_max": max(p99.values(), default=0.0),
        "tick_p99_ms_per_zone": p99,
        "zones_over_budget": figures.get("zones_over_budget", []),
        "probe_rtt_ms_p50": probe.get("rtt_ms_p50", 0.0),
        "probe_rtt_ms_p95": probe.get("rtt_ms_p95", 0.0),
        "probe_prediction_m_p50": probe.get("prediction_error_m_p50", 0.0),
        "probe_prediction_m_p95": probe.get("prediction_error_m_p95", 0.0),
        "bot_rtt_ms_p50": figures["load"].get("rtt_ms_p50", 0.0),
        "combat_events": figures.get("combat_events", {}),
        "peak_npcs": figures.get("peak_npcs", 0),
        "cores": {k: round(v / elapsed, 3) for k, v in sorted(per_role.items())},
        "cores_total": round(sum(per_role.values()) / elapsed, 3),
        "elapsed_s": round(elapsed, 1),
        "load_average_before": round(before, 2),
        "load_average_after": round(load_average(), 2),
    }


def probe_alone(duration_s: float, walk_mps: float) -> dict[str, Any]:
    """The probe's figures beside the demo's services, with no bots."""
    settings = DemoSettings(bots=2, duration_s=duration_s)
    # Plaintext gRPC: the probe runs in this process, which reads its TLS settings
    # once, and gRPC is only its login; what it measures goes over UDP.
    stack = Stack(settings, tls=False)
    stack.start()
    try:
        cfg = ProbeConfig(
            auth=stack.auth_address,
            scenario=str(sc.resolve("demo")),
            world=settings.bounds_text,
            duration_s=duration_s,
            start_at=time.time() + 1.0,
            max_speed=settings.max_speed,
            walk_mps=walk_mps,
            input_hz=settings.input_hz,
        )

        async def play() -> ProbeFigures:
            probe = Probe(cfg)
            await probe.run()
            return probe.figures

        figures = asyncio.run(play())
    finally:
        stack.stop()
    return {"walk_mps": walk_mps, "load_average": round(load_average(), 2), **asdict(figures)}


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'bots':>5} {'pass':>5} {'disc':>5} {'lost':>5} {'dup':>4} {'p99 max':>8} "
        f"{'over':>5} {'probe rtt p50/p95':>18} {'pred p50/p95 m':>15} "
        f"{'zone':>5} {'relay':>5} {'bots':>5} {'total':>6} {'load':>10}"
    )
    lines = [head]
    for r in rows:
        c = r["cores"]
        lines.append(
            f"{r['bots']:>5} {r['passed']!s:>5} {r['disconnects']:>5} {r['lost']:>5} "
            f"{r['duplicated']:>4} {r['tick_p99_ms_max']:>8.1f} {len(r['zones_over_budget']):>5} "
            f"{r['probe_rtt_ms_p50']:>8.1f}/{r['probe_rtt_ms_p95']:<9.1f} "
            f"{r['probe_prediction_m_p50']:>7.3f}/{r['probe_prediction_m_p95']:<7.3f} "
            f"{c.get('zone', 0):>5.2f} {c.get('relay', 0):>5.2f} {c.get('bots', 0):>5.2f} "
            f"{r['cores_total']:>6.2f} "
            f"{r['load_average_before']:>4.1f}-{r['load_average_after']:<4.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="write results here")
    parser.add_argument("--bots", default="60,100,150", help="comma-separated bot counts")
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of scenario")
    parser.add_argument(
        "--probe-alone", type=float, default=0.0, help="seconds of the probe with no bots (0: no)"
    )
    args = parser.parse_args()
    counts = [int(b) for b in args.bots.split(",") if b]
    if min(counts, default=2) < 2 or args.duration < 10:
        parser.error("--bots must be counts >= 2 and --duration >= 10")
    alone = []
    if args.probe_alone > 0:
        for walk in (6.0, 50.0):
            alone.append(probe_alone(args.probe_alone, walk))
            a = alone[-1]
            print(
                f"probe alone at {walk:g} m/s: rtt p50/p95 {a['rtt_ms_p50']}/{a['rtt_ms_p95']} ms,"
                f" prediction error p50/p95 {a['prediction_error_m_p50']}/"
                f"{a['prediction_error_m_p95']} m ({a['prediction_samples']} samples,"
                f" load average {a['load_average']})",
                flush=True,
            )
    rows = []
    with tempfile.TemporaryDirectory(prefix="demo-capacity-") as tmp:
        for n in counts:
            rows.append(run_demo(n, args.duration, Path(tmp) / f"bots-{n}"))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print("\n" + table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"probe_alone": alone, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
