"""cpu_seconds: a process's user + system CPU read from /proc; ServiceProcess
starts a child in the parent's session unless asked for one of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tessera.common.process import ServiceProcess, cpu_seconds

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
