"""cpu_seconds: a process's user + system CPU read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tessera.common.process import cpu_seconds

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
