"""The swarm's figures: the workers' latest stats lines added up (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np


@dataclass
class Counters:
    """Counts each worker reports and the report adds up."""

    bots: int = 0
    connected: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    logouts: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class Report(Counters):
    """Totals over every worker."""

    phase: str = ""
    rtt_ms_p50: float = 0.0
    rtt_ms_p99: float = 0.0
    prediction_error_p95_m_median: float = 0.0
    prediction_error_p95_m_max: float = 0.0
    bytes_per_s_per_bot: float = 0.0
    disconnect_reasons: dict[str, int] = field(default_factory=dict)
    # Combat events the bots received, by kind.
    events: dict[str, int] = field(default_factory=dict)
    workers_done: int = 0
    workers: int = 0
    predicting: bool = False

    @property
    def ok(self) -> bool:
        """No bot lost its connection and every bot that tried got in."""
        return self.disconnects == 0 and self.connect_failures == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """A readable multi-line report."""
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.disconnect_reasons.items()))
        events = ", ".join(f"{k}={v}" for k, v in sorted(self.events.items()))
        return "\n".join(
            [
                f"bots               {self.bots} ({self.workers} processes)",
                f"connects           {self.connects} (failures {self.connect_failures})",
                f"disconnects        {self.disconnects}" + (f" ({reasons})" if reasons else ""),
                f"logouts            {self.logouts}",
                f"rtt                p50 {self.rtt_ms_p50:.1f} ms, p99 {self.rtt_ms_p99:.1f} ms",
                "prediction error   "
                + (
                    f"p95 per bot: median {self.prediction_error_p95_m_median:.3f} m, "
                    f"max {self.prediction_error_p95_m_max:.3f} m"
                    if self.predicting
                    else "- (the bots do not predict)"
                ),
                f"bytes/s per bot    {self.bytes_per_s_per_bot:.0f} (in+out)",
                f"combat events      {events or '-'}",
            ]
        )


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def combine(stats: Iterable[Mapping[str, Any]], workers: int) -> Report:
    """Add up the latest stats line of each worker."""
    out = Report(workers=workers)
    rtt: list[float] = []
    pred: list[float] = []
    rate: list[float] = []
    for s in stats:
        for counter in fields(Counters):
            name = counter.name
            setattr(out, name, getattr(out, name) + int(s.get(name, 0)))
        out.phase = str(s.get("phase", out.phase)) or out.phase
        out.workers_done += 1 if s.get("done") else 0
        rtt += [float(v) for v in s.get("rtt_ms", []) if v > 0]
        pred += [float(v) for v in s.get("pred_p95_m", [])]
        rate += [float(v) for v in s.get("bytes_per_s", [])]
        for reason, n in dict(s.get("reasons", {})).items():
            out.disconnect_reasons[reason] = out.disconnect_reasons.get(reason, 0) + int(n)
        for kind, n in dict(s.get("events", {})).items():
            out.events[kind] = out.events.get(kind, 0) + int(n)
    out.rtt_ms_p50, out.rtt_ms_p99 = _pct(rtt, 50), _pct(rtt, 99)
    out.predicting = bool(pred)
    out.prediction_error_p95_m_median = _pct(pred, 50)
    out.prediction_error_p95_m_max = max(pred, default=0.0)
    out.bytes_per_s_per_bot = float(np.mean(rate)) if rate else 0.0
    return out
