"""The RSS tripwire: a process that outgrows its limit aborts with the watcher's stack."""

from __future__ import annotations

import signal
import subprocess
import sys

from tessera.harness import tripwire

# Sets the limit 200 MB above what the process holds, then allocates 20 MB a
# step for at most 2 GB (the watcher checks every 10 ms).
GROW = """
import sys, time
from tessera.harness import tripwire
tripwire.abort_above(tripwire.resident_bytes() + 200 * 2**20, every_s=0.01)
held = []
for _ in range(int(sys.argv[1])):
    held.append(bytearray(20 * 2**20))
    time.sleep(0.02)
print("survived", len(held))
"""


def grow(steps: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", GROW, str(steps)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_process_over_its_limit_aborts_with_the_stacks() -> None:
    out = grow(100)
    assert out.returncode == -signal.SIGABRT, out.stdout + out.stderr
    assert "survived" not in out.stdout
    assert "Fatal Python error: Aborted" in out.stderr
    assert "tripwire.py" in out.stderr and "_watch" in out.stderr


def test_a_process_under_its_limit_runs_on() -> None:
    out = grow(5)  # 100 MB, half the margin
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "survived 5"


def test_resident_bytes_grows_with_what_is_held() -> None:
    before = tripwire.resident_bytes()
    block = bytearray(64 * 2**20)
    assert tripwire.resident_bytes() - before >= 60 * 2**20
    del block
