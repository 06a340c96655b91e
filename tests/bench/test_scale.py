"""A short scale run (``bench/scale.py``): 200 synthetic players on one redis-server,
split over a few zones by the local runtime, with no entity lost or duplicated and a
complete report and picture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "scale.py"


def test_a_short_run_loses_nobody_and_reports_everything(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    args = [sys.executable, str(BENCH), "--json", str(out), "--players", "200", "--bots", "0"]
    args += ["--seconds", "12", "--ramp", "3", "--single-redis", "--world-m", "1024"]
    args += ["--split", "80", "--merge", "20", "--max-zones", "4", "--scan-every", "4"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["lost"] == 0 and report["duplicated"] == 0, report
    assert report["lost_players"] == [] and report["duplicated_entities"] == []
    assert report["bot_disconnect_reasons"] == {} and "scan_moved_max" in report
    assert report["players"] == 200
    assert report["scans"] >= 2
    assert 1 <= report["zones_min"] <= report["zones_max"] <= 4
    assert report["splits"] >= 1 and report["operator_passes"] >= 10
    assert report["redis_ops_per_s"] > 0 and report["redis_per_node"]
    assert set(report["tick_p99_ms_per_zone"]) and report["tick_budget_ms"] == 100.0
    assert Path(report["picture"]).stat().st_size > 10_000
