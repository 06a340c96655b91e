"""The PNG: small multiples and a time series, from a synthetic timeline."""

from __future__ import annotations

from pathlib import Path

from tessera.demo import picture
from tessera.demo.monitor import RelaySample, ZoneSample
from tessera.demo.timeline import Sample, Timeline


def test_draw_writes_a_png(tmp_path: Path) -> None:
    tl = Timeline()
    for t in range(30):
        a = ZoneSample(
            "a",
            "ACTIVE",
            (0, 0, 500, 1000) if t >= 10 else (0, 0, 1000, 1000),
            20,
            2.0,
            0,
            "x",
            [100.0 + t, 200.0],
            [300.0, 400.0],
        )
        b = ZoneSample("b", "ACTIVE", (500, 0, 1000, 1000), 10, 2.0, 0, "y", [700.0], [700.0])
        arena = ZoneSample("inst-1", "ACTIVE", (0, 0, 1000, 1000), 2, 1.0, 0, "z", instance="m1")
        zones = [a, b, arena] if t >= 10 else [a]
        tl.samples.append(Sample(float(t), "spread", zones, 30, 0, RelaySample(30, 0, 0, 0)))
    tl.add_events(9.0, [{"decision": "Split", "zone": "a", "reason": "split"}])
    tl.add_events(25.0, [{"decision": "InstanceEnd", "zone": "inst-1", "reason": "reported"}])
    note = "1 reported by the arena zone itself (1 on kills; last score 3-1)"
    out = picture.draw(tl, tmp_path / "w.png", world_m=1000, arena_note=note)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
