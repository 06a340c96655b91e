"""The dashboard renders the latest sample; the plain line says the same."""

from __future__ import annotations

from rich.console import Console

from tessera.demo import dashboard
from tessera.demo.monitor import RelaySample, ZoneSample
from tessera.demo.timeline import Sample, Scan, Timeline


def timeline() -> Timeline:
    tl = Timeline()
    zones = [
        ZoneSample("demo-0", "ACTIVE", (0, 0, 1000, 2000), 140, 4.5, 0, "a"),
        ZoneSample("demo-1", "DRAINING", (1000, 0, 2000, 2000), 3, 2.0, 3, "b"),
        ZoneSample("demo-2", "STANDBY", None, 0, 0.5, 0, "c"),
        ZoneSample(
            "inst-0a1b2c3d", "ACTIVE", (0, 0, 2000, 2000), 2, 1.0, 0, "d", instance="0a1b2c3d9f"
        ),
    ]
    tl.samples = [
        Sample(0.0, "spread", zones, 143, 0, RelaySample(143, 0, 0, 0)),
        Sample(1.0, "converge", zones, 143, 0, RelaySample(143, 4000, 0, 12), 3.4),
    ]
    tl.add_events(
        0.5, [{"decision": "Split", "zone": "demo-0", "reason": "split demo-0 at x=1000"}]
    )
    tl.scans = [Scan(1.0, [], [], [])]
    return tl


def test_render() -> None:
    console = Console(width=120, record=True)
    console.print(dashboard.render(timeline(), bots=150, duration_s=150, output="demo-output/x"))
    text = console.export_text()
    for expected in (
        "phase converge",
        "bots 143/150",
        "rtt p50 3 ms",
        "4,000 pkt/s",
        "handoffs 12/s",
        "demo-1",
        "DRAINING (3 left)",
        "x 0..1000  z 0..2000",
        "4.5 ms",
        "Split",
        "split demo-0 at x=1000",
        "lost 0, duplicated 0",
        "demo-output/x",
        "inst-0a1b2c3d",
        "instance of match 0a1b2c3d",
    ):
        assert expected in text, expected
    empty = Console(width=80, record=True)
    empty.print(dashboard.render(Timeline(), bots=1, duration_s=1, output=""))
    assert "starting" in empty.export_text()


def test_line() -> None:
    line = dashboard.line(timeline(), bots=150)
    assert line.startswith("t=1s phase=converge bots=143/150 disconnects=0 rtt=3ms splits=1")
    assert "demo-0[ACT 140p p99=4.5ms]" in line and "demo-2" not in line
    assert dashboard.line(Timeline(), bots=1) == "starting"
