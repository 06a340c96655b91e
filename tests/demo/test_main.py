"""``python -m tessera.demo`` end to end: a short run of the demo scenario with
real processes (redis-server, auth, relay, matchmaking, the operator's local
runtime and its zones, bot processes), and an interrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    """Running (not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Watcher:
    """Collects every descendant of a process while it runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.seen |= descendants(self.pid)

    def stop(self) -> set[int]:
        self._stop.set()
        self._thread.join()
        return self.seen


def start_demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tessera.demo", "--output", str(tmp_path / "out"), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def no_survivors(pids: set[int]) -> list[str]:
    """The command lines of the processes still running after 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [f"{p}: {command(p)}" for p in left]


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "(gone)"


def test_short_demo_splits_merges_and_loses_nobody(tmp_path: Path) -> None:
    proc = start_demo(
        tmp_path, "--bots", "60", "--duration", "40", "--world-size", "1000", "--speed", "60"
    )
    watcher = Watcher(proc.pid)
    out, _ = proc.communicate(timeout=110)
    seen = watcher.stop()
    figures = json.loads((tmp_path / "out" / "summary.json").read_text())
    # Every zone's tick p99 is judged against its budget (30 Hz: 33.3 ms) and a
    # zone over it fails the run; on a machine shared with other work that can
    # happen, so the test checks the verdict matches, not the timing.
    p99, budget = figures["tick_p99_ms_per_zone"], figures["tick_budget_ms_per_zone"]
    assert set(p99) == set(budget) and all(v == 33.33 for v in budget.values())
    over = [z for z in p99 if p99[z] > budget[z]]
    assert figures["zones_over_budget"] == over
    assert proc.returncode == (1 if over else 0), out[-4000:]
    assert figures["splits"] >= 1, out[-3000:]
    assert figures["merges"] >= 1, out[-3000:]
    assert figures["disconnects"] == 0
    assert figures["connect_failures"] == 0
    assert figures["lost_entities"] == 0
    assert figures["duplicated_entities"] == 0
    assert figures["invariant_scans"] >= 5
    # The bots, the probe and an arena match's two players. Peak players sums the
    # zones' heartbeats, which are taken up to a second apart, so a player handed
    # from one zone to another between two heartbeats counts twice at that instant
    # (a loaded machine widens the window); the invariant scans above are the
    # exact check that nobody is in two zones.
    assert 61 <= figures["peak_players"] <= 65
    arena = figures["arena"]
    assert arena["matches"] >= 1, arena
    assert arena["failed"] == arena["disconnects"] == 0
    # Every match ended by the arena module's rules in its instance zone, which
    # reported it (the zone's audit record; the demo holds no credentials that
    # could), and matchmaking rated it.
    assert arena["reported_by_zone"] == arena["rated"] == arena["matches"], arena
    assert arena["ended_by_score"] + arena["ended_by_time"] == arena["matches"], arena
    assert re.fullmatch(r"\d+-\d+", arena["last_score"]), arena
    # The open world plays the resources module: bots collect at its nodes.
    assert figures["resources_collected"] > 0, figures["combat_events"]
    assert figures["handoffs"] > 0
    # Everything above went through auth, matchmaking and the relay serving TLS.
    assert set(figures["grpc_tls"]) == {"auth", "relay", "matchmaking"}
    # NPCs (100 per zone) and bots that fight them and each other.
    assert figures["peak_npcs"] >= 100
    assert figures["combat_events"].get("HIT_DEALT", 0) > 0, figures["combat_events"]
    assert figures["combat_events"].get("HIT_TAKEN", 0) > 0, figures["combat_events"]
    # The probe: one predicting player in its own process, its figures apart.
    probe = figures["probe"]
    assert probe["done"] and probe["disconnected"] == "" and probe["error"] == ""
    assert probe["rtt_samples"] >= 20 and probe["prediction_samples"] >= 100, probe
    assert 0 < probe["rtt_ms_p50"] <= probe["rtt_ms_p95"] < 10_000
    assert 0 <= probe["prediction_error_m_p50"] <= probe["prediction_error_m_p95"] < 100
    text = (tmp_path / "out" / "summary.txt").read_text()
    assert "probe (one player in a process of its own" in text and "bot-side (60 bots" in text
    assert "gRPC over TLS        auth, relay, matchmaking (zones in plaintext)" in text
    assert f"  ended by the zone  {arena['reported_by_zone']} reported by the arena zone" in text
    assert text.startswith("bots")
    png = (tmp_path / "out" / "world.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    # The plain (non-terminal) dashboard lines were printed.
    assert "splits=" in out and "zones: " in out
    # redis, 4 services, the zones, 2 bot processes and the probe at least.
    assert len(seen) >= 10
    assert no_survivors(seen) == []


def run_until_connected(tmp_path: Path) -> tuple[subprocess.Popen[str], Watcher, dict[str, str]]:
    """The demo with its 10 bots connected, and the lines it printed before, by
    their prefix (``console``, ``tls``)."""
    proc = start_demo(tmp_path, "--bots", "10", "--duration", "60", "--world-size", "1000")
    watcher = Watcher(proc.pid)
    assert proc.stdout is not None
    printed: dict[str, str] = {}
    for line in proc.stdout:
        if line.startswith("t=") and "bots=10/10" in line:
            break
        prefix, _, rest = line.partition(": ")
        printed.setdefault(prefix, rest.strip())
    return proc, watcher, printed


def health(address: str, credentials: grpc.ChannelCredentials | None) -> int:
    """A health check of ``address``: over TLS with ``credentials``, else plaintext."""
    with (
        grpc.secure_channel(address, credentials)
        if credentials is not None
        else grpc.insecure_channel(address)
    ) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10.0
        )
        return int(reply.status)


def assert_tls_only(tls_line: str) -> None:
    """Each service the demo says serves TLS answers a client trusting the run's
    CA and refuses a plaintext one."""
    servers = dict(re.findall(r"(auth|relay|matchmaking) (127\.0\.0\.1:\d+)", tls_line))
    assert set(servers) == {"auth", "relay", "matchmaking"}, tls_line
    ca = re.search(r"\(CA (\S+)\)", tls_line)
    assert ca is not None, tls_line
    trusted = grpc.ssl_channel_credentials(Path(ca.group(1)).read_bytes())
    for address in servers.values():
        assert health(address, trusted) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as refused:
            health(address, None)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_interrupt_stops_everything(tmp_path: Path) -> None:
    proc, watcher, printed = run_until_connected(tmp_path)
    with urllib.request.urlopen(printed["console"] + "/api/frame", timeout=10) as response:
        frame = json.load(response)  # the console serves the demo's world
    assert frame["meta"]["world"] == "demo" and frame["meta"]["zones"] >= 1
    assert_tls_only(printed["tls"])
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=45)
    seen = watcher.stop()
    assert proc.returncode == 130, out
    assert "interrupted" in out
    assert len(seen) >= 8
    assert no_survivors(seen) == []


def test_killed_demo_leaves_nothing_behind(tmp_path: Path) -> None:
    proc, watcher, _ = run_until_connected(tmp_path)
    proc.kill()
    proc.communicate(timeout=10)
    seen = watcher.stop()
    assert len(seen) >= 8  # redis-server, services, zones, bot processes
    assert no_survivors(seen) == []
