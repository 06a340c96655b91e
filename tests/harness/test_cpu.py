"""CPU by role of a process tree, read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tessera.harness.cpu import TreeCpu, cores, descendants, role

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n{rest}"


def start(seconds: float, tag: str, rest: str = "") -> subprocess.Popen[bytes]:
    """A child that burns ``seconds`` of CPU, then runs ``rest``; ``tag`` names it."""
    code = f"# {tag}\n" + BURN.format(s=seconds, rest=rest)
    return subprocess.Popen([sys.executable, "-c", code])


def test_roles_come_from_the_command_line() -> None:
    child = start(0.0, "tessera.relay", "time.sleep(5)")
    try:
        assert child.pid in descendants(os.getpid())
        assert role(child.pid) == "relay"
        assert role(child.pid, [("x", "no such text")]) == "other"
    finally:
        child.kill()
        child.wait()
    assert role(child.pid) == "other"  # gone


def test_a_process_that_exited_keeps_its_last_reading() -> None:
    tag = f"burner-{os.getpid()}"  # this test's child only: session servers are children too
    cpu = TreeCpu(os.getpid(), root_role="me", roles=[("burner", tag)])
    cpu.sample()
    before = cpu.totals()
    child = start(0.3, tag, "time.sleep(0.5)")
    time.sleep(0.05)
    while child.poll() is None:
        cpu.sample()
        time.sleep(0.05)
    cpu.sample()  # the child is gone: its last reading stays
    after = cpu.totals()
    assert "burner" not in before and 0.2 <= after["burner"] <= 1.0
    assert after["me"] >= before["me"]
    rates = cores(before, after, 2.0)
    assert rates["burner"] == round(after["burner"] / 2.0, 3)
