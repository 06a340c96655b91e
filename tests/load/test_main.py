"""``python -m tessera.load`` against a running Tessera (the demo's stack of real
processes): every bot connects, plays the scenario and leaves cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.demo.stack import MONITOR_CLIENT, Stack
from tessera.demo.world import DemoSettings
from tessera.load.__main__ import parse_args


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(DemoSettings(bots=8, duration_s=10, world_m=1000), tmp_path / "stack")
    s.start()
    yield s
    s.stop()


@pytest.mark.integration
def test_swarm_against_a_running_world(stack: Stack, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tessera.load",
            "--auth",
            stack.auth_address,
            "--bots",
            "8",
            "--duration",
            "8",
            "--ramp",
            "1",
            "--scenario",
            "border-walkers",
            "--world",
            "0,0,1000,1000",
            "--max-speed",
            "50",
            "--relay",
            stack.relay_address,
            "--relay-client",
            f"{MONITOR_CLIENT}={stack.monitor_secret}",
            "--json",
            str(report),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **stack.client_env()},  # auth and the relay serve TLS
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    r = json.loads(report.read_text())
    assert (r["bots"], r["connects"], r["disconnects"], r["connect_failures"]) == (8, 8, 0, 0)
    assert r["logouts"] == 8 and r["workers"] == 2 and r["workers_done"] == 2
    assert r["rtt_ms_p50"] > 0 and r["bytes_per_s_per_bot"] > 500
    assert r["bytes_in"] > 0 and r["bytes_out"] > 0
    assert r["relay"]["packets_in"] > 0 and r["relay"]["reroutes"] > 0  # border walkers
    assert "connects           8 (failures 0)" in done.stdout


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--auth", "a:1", "--scenario", "nope"],
        ["--auth", "a:1", "--world", "1,2"],
        ["--auth", "a:1", "--bots", "0"],
    ):
        with pytest.raises(SystemExit) as err:
            parse_args(argv)
        assert err.value.code == 2
    assert "no scenario file 'nope'" in capsys.readouterr().err
