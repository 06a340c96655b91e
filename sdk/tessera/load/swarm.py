"""A bot swarm: bots split over worker processes (``tessera.load.worker``).

Each worker is a :class:`ServiceProcess` (it dies with this process); its
figures arrive as JSON lines on its stderr and :meth:`Swarm.report` adds up
the latest line of every worker.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from tessera.common.process import ServiceProcess
from tessera.load.report import Report, combine
from tessera.load.worker import BotSettings, WorkerConfig


@dataclass(kw_only=True)
class SwarmConfig(BotSettings):
    """The whole swarm; bots are numbered 0..bots-1 and split over ``processes``."""

    bots: int
    processes: int = 2
    start_delay_s: float = 1.0


def shares(bots: int, processes: int) -> list[tuple[int, int]]:
    """(first bot, count) per process, as even as possible."""
    processes = max(1, min(processes, bots))
    base, extra = divmod(bots, processes)
    out, first = [], 0
    for i in range(processes):
        n = base + (1 if i < extra else 0)
        out.append((first, n))
        first += n
    return out


def latest_stats(proc: ServiceProcess, msg: str = "stats") -> dict[str, Any]:
    """The newest JSON line with ``"msg": msg`` a worker (or the probe) printed
    ({} before the first)."""
    for line in reversed(list(proc.lines)):
        if f'"{msg}"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("msg") == msg:
            return record
    return {}


class Swarm:
    """Start, watch and stop the worker processes."""

    def __init__(self, cfg: SwarmConfig) -> None:
        self.cfg = cfg
        self.procs: list[ServiceProcess] = []
        self.start_at = 0.0

    def start(self) -> None:
        """Start every worker (from the calling thread: children die with it)."""
        cfg = self.cfg
        self.start_at = time.time() + cfg.start_delay_s
        for index, (first, n) in enumerate(shares(cfg.bots, cfg.processes)):
            shared = {f.name: getattr(cfg, f.name) for f in fields(BotSettings)}
            wcfg = WorkerConfig(
                **shared, bots=n, first=first, total=cfg.bots, start_at=self.start_at
            )
            arg = json.dumps({**asdict(wcfg), "index": index})
            proc = ServiceProcess("tessera.load.worker", args=[arg], name=f"bots-{index}")
            self.procs.append(proc.start())
        for proc in self.procs:
            proc.wait_serving()

    def elapsed_fraction(self) -> float:
        return min(1.0, max(0.0, (time.time() - self.start_at) / self.cfg.duration_s))

    def finished(self) -> bool:
        return all(not p.alive() for p in self.procs)

    def report(self) -> Report:
        return combine([latest_stats(p) for p in self.procs], len(self.procs))

    def stop(self, timeout_s: float = 15.0) -> list[int]:
        """SIGTERM every worker (their bots log out), wait; the exit codes."""
        for proc in self.procs:
            if proc.alive() and proc.proc is not None:
                proc.proc.terminate()
        return [p.terminate(timeout_s) for p in self.procs]

    def wait(self, timeout_s: float) -> bool:
        """Wait until every worker has exited by itself; True if they did."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.finished():
                return True
            time.sleep(0.1)
        return self.finished()

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.proc is not None]
