"""cpu_seconds: a process's user + system CPU read from /proc; ServiceProcess
starts a child in the parent's session unless asked for one of its own;
ForkedProcess forks one from a template with its own environment and stderr,
stops it like a started one and never lets it outlive its supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tessera.common.process import ForkedProcess, ServiceProcess, cpu_seconds

BURN = """
import sys, time
while time.process_time() < 0.2:
    pass
print("burnt", flush=True)
sys.stdin.read()
"""


def test_it_agrees_with_the_process_own_clock() -> None:
    before = time.process_time()
    read = cpu_seconds(os.getpid())
    after = time.process_time()
    # /proc counts in clock ticks (10 ms), so allow a tick either side.
    assert before - 0.02 <= read <= after + 0.02


def test_it_counts_what_another_process_burnt() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "burnt\n"
        assert 0.18 <= cpu_seconds(child.pid) < 5.0
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("session", [False, True])
def test_a_child_gets_a_session_of_its_own_only_when_asked(tmp_path: Path, session: bool) -> None:
    script = tmp_path / "idle.py"
    script.write_text("import time\ntime.sleep(60)\n")
    child = ServiceProcess(str(script), session=session).start()
    try:
        assert (os.getsid(child.pid) == child.pid) is session
        assert (os.getsid(child.pid) == os.getsid(0)) is not session
    finally:
        child.terminate()


ZONE_TEMPLATE = "tessera.zone.prefork"  # a process has one fork server: the runtime's

IDLE_THEN_FAIL = """
import os, sys, time
print("child of", os.getppid(), os.environ["GREETING"], file=sys.stderr, flush=True)
time.sleep(float(os.environ.get("SLEEP", "60")))
raise SystemExit(3)
"""


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_forked_child_gets_its_environment_and_stderr_and_reports_its_exit(
    tmp_path: Path,
) -> None:
    script = tmp_path / "child.py"
    script.write_text(IDLE_THEN_FAIL)
    child = ForkedProcess(str(script), {"GREETING": "hello", "SLEEP": "0"}, preload=ZONE_TEMPLATE)
    child.start()
    assert child.proc is not None
    assert child.proc.wait(timeout=30) == 3
    child.terminate()
    template = int(child.lines[0].split()[2])
    assert child.lines[0] == f"child of {template} hello"
    assert template != os.getpid() and parent_of(template) == os.getpid()
    assert "forkserver" in Path(f"/proc/{template}/cmdline").read_text()


def test_a_forked_child_is_terminated_or_killed_like_a_started_one(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(IDLE_THEN_FAIL)
    first = ForkedProcess(str(script), {"GREETING": "a"}, preload=ZONE_TEMPLATE).start()
    second = ForkedProcess(str(script), {"GREETING": "b"}, preload=ZONE_TEMPLATE).start()
    assert first.alive() and second.alive()
    assert first.terminate() == -signal.SIGTERM
    second.kill()
    assert not first.alive() and not second.alive()
    assert second.proc is not None and second.proc.poll() == -signal.SIGKILL


SUPERVISOR = """
import sys, time
from tessera.common.process import ForkedProcess
child = ForkedProcess(sys.argv[1], {"GREETING": "x"}, preload="json").start()
while not child.lines:  # it runs
    time.sleep(0.01)
print(child.pid, flush=True)
sys.stdin.read()
"""


def test_forked_children_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(IDLE_THEN_FAIL)
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert supervisor.stdout is not None
    pid = int(supervisor.stdout.readline())
    assert Path(f"/proc/{pid}").exists()
    supervisor.kill()
    supervisor.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
