"""The live view: a rich dashboard on a terminal, plain log lines otherwise."""

from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tessera.demo.timeline import Timeline

STATE_STYLE = {
    "ACTIVE": "green",
    "DRAINING": "yellow",
    "STANDBY": "dim",
    "STARTING": "cyan",
    "DRAINED": "dim",
}
EVENT_STYLE = {
    "Split": "bold magenta",
    "Merge": "bold cyan",
    "Drained": "yellow",
    "DrainTimeout": "red",
    "Instance": "bold green",
    "InstanceEnd": "green",
}


def _bounds(b: tuple[float, float, float, float] | None) -> str:
    return "-" if b is None else f"x {b[0]:.0f}..{b[2]:.0f}  z {b[1]:.0f}..{b[3]:.0f}"


def render(tl: Timeline, *, bots: int, duration_s: float, output: str) -> Group:
    """The dashboard for the latest sample."""
    if not tl.samples:
        return Group(Text("starting..."))
    s = tl.samples[-1]
    packets, handoffs = tl.rates()
    head = Text.assemble(
        ("Tessera demo  ", "bold"),
        f"t={s.t:5.1f}/{duration_s:.0f}s  phase ",
        (s.phase or "-", "bold"),
        f"  bots {s.bots_connected}/{bots}  disconnects ",
        (str(s.disconnects), "bold red" if s.disconnects else "bold green"),
        f"  rtt p50 {s.rtt_ms:.0f} ms\nrelay {packets:,.0f} pkt/s  "
        f"handoffs {handoffs:,.0f}/s ({s.relay.reroutes} total)",
    )
    zones = Table(expand=True, box=None, header_style="bold")
    for col, just in (
        ("zone", "left"),
        ("phase", "left"),
        ("bounds (m)", "left"),
        ("players", "right"),
        ("tick p99", "right"),
    ):
        zones.add_column(col, justify=just)  # type: ignore[arg-type]
    for z in s.zones:
        zones.add_row(
            z.name,
            Text(
                z.state + (f" ({z.drain_remaining} left)" if z.state == "DRAINING" else ""),
                STATE_STYLE.get(z.state, ""),
            ),
            f"instance of match {z.instance[:8]}" if z.instance else _bounds(z.bounds),
            str(z.players),
            f"{z.tick_p99_ms:.1f} ms",
        )
    events = Text()
    for i, e in enumerate(tl.events[-8:]):
        events.append(("\n" if i else "") + f"{e.t:6.1f}s  ")
        events.append(f"{e.decision:<12}", EVENT_STYLE.get(e.decision, ""))
        events.append(f" {e.reason}")
    lost, dups = len(tl.lost()), len(tl.duplicated())
    foot = Text.assemble(
        f"splits {tl.splits}  merges {tl.merges}  "
        f"drains {tl.drains_started} started / {tl.drains_finished} finished  ",
        "invariants: ",
        (
            f"{len(tl.scans)} scans, lost {lost}, duplicated {dups}",
            "bold red" if lost or dups else "green",
        ),
        f"\noutput: {output}",
    )
    return Group(
        head,
        Panel(zones, title="zones", title_align="left"),
        Panel(events or Text("none yet", "dim"), title="scaling events", title_align="left"),
        foot,
    )


def line(tl: Timeline, *, bots: int) -> str:
    """One plain log line for the latest sample (no terminal)."""
    if not tl.samples:
        return "starting"
    s = tl.samples[-1]
    packets, handoffs = tl.rates()
    zones = " ".join(
        f"{z.name}[{z.state[:3]} {z.players}p p99={z.tick_p99_ms:.1f}ms]"
        for z in s.zones
        if z.state != "STANDBY"
    )
    return (
        f"t={s.t:.0f}s phase={s.phase} bots={s.bots_connected}/{bots} disconnects={s.disconnects} "
        f"rtt={s.rtt_ms:.0f}ms splits={tl.splits} merges={tl.merges} "
        f"handoffs={s.relay.reroutes} ({handoffs:.0f}/s) "
        f"relay={packets:.0f}pkt/s zones: {zones}"
    )
