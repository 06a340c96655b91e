"""CPU used by a process and everything below it, summed by role (benchmarks).

Sampled from /proc: each call of :meth:`TreeCpu.sample` reads every descendant's
user + system CPU seconds and keeps the last reading of a process that has since
exited, so a zone merged away mid-run still counts what it used up to its last
sample. A process is known by its pid and start time (a pid can be reused)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

CLOCK_HZ = os.sysconf("SC_CLK_TCK")

# (role, a string its command line contains), first match wins.
ROLES: tuple[tuple[str, str], ...] = (
    ("zone", "tessera.zone"),
    ("relay", "tessera.relay"),
    ("probe", "tessera.load.probe"),
    ("bots", "tessera.load"),
    ("auth", "tessera.auth"),
    ("redis", "redis-server"),
    ("postgres", "postgres"),
)


def children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out.setdefault(ppid, []).append(int(entry))
    return out


def descendants(root: int) -> list[int]:
    tree, out, todo = children(), [], [root]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stat(pid: int) -> tuple[int, float]:
    """A process's start time (clock ticks after boot) and CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[19]), (int(fields[11]) + int(fields[12])) / CLOCK_HZ


def role(pid: int, roles: Sequence[tuple[str, str]] = ROLES) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            cmd = f.read()
    except OSError:
        return "other"
    return next((name for name, part in roles if part in cmd), "other")


class TreeCpu:
    """CPU seconds by role of ``root`` (role ``root_role``) and its descendants."""

    def __init__(
        self, root: int, root_role: str = "bench", roles: Sequence[tuple[str, str]] = ROLES
    ) -> None:
        self.root = root
        self.root_role = root_role
        self.roles = roles
        self._last: dict[tuple[int, int], tuple[str, float]] = {}
        self._lock = threading.Lock()  # sampled from a worker thread, read from another

    def sample(self) -> None:
        readings = []
        for pid in [self.root, *descendants(self.root)]:
            try:
                started, used = stat(pid)
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile: its last reading stays
            readings.append((pid, started, used))
        with self._lock:
            for pid, started, used in readings:
                known = self._last.get((pid, started))
                if known:
                    name = known[0]
                else:
                    name = self.root_role if pid == self.root else role(pid, self.roles)
                self._last[(pid, started)] = (name, max(used, known[1] if known else 0.0))

    def totals(self) -> dict[str, float]:
        """CPU seconds by role up to the last sample."""
        out: dict[str, float] = {}
        with self._lock:
            for name, used in self._last.values():
                out[name] = out.get(name, 0.0) + used
        return out


def cores(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores by role between two :meth:`TreeCpu.totals` readings ``seconds`` apart."""
    return {
        name: round((after[name] - before.get(name, 0.0)) / seconds, 3) for name in sorted(after)
    }
