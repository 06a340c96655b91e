"""The PNG picture of a run: the zone layout at key moments (small multiples,
players as dots) over a time series of players per zone, with the ends of arena
matches marked and how they ended (``arena_note``) under the title."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

from tessera.demo.timeline import Timeline, key_moments

COLOURS = plt.get_cmap("tab10")


def draw(
    tl: Timeline, path: Path, *, world_m: float, title: str = "", arena_note: str = ""
) -> Path:
    """Write the picture to ``path``."""
    moments = key_moments(tl)
    # Instance zones (one per arena match) share one line: players in any of them.
    names = sorted({z.name for s in tl.samples for z in s.zones if not z.instance})
    colour = {n: COLOURS(i % 10) for i, n in enumerate(names)}
    cols = max(1, len(moments))
    fig = plt.figure(figsize=(max(12.0, 2.8 * cols), 6.8), dpi=100)
    grid = fig.add_gridspec(2, cols, height_ratios=[1.0, 0.9])
    for col, index in enumerate(moments):
        s = tl.samples[index]
        ax = fig.add_subplot(grid[0, col])
        ax.set_xlim(0, world_m)
        ax.set_ylim(0, world_m)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
        for z in s.zones:
            if z.bounds is None or z.instance or z.state not in ("ACTIVE", "DRAINING"):
                continue
            x0, z0, x1, z1 = z.bounds
            ax.add_patch(
                Rectangle(
                    (x0, z0),
                    x1 - x0,
                    z1 - z0,
                    fill=True,
                    alpha=0.15,
                    color=colour[z.name],
                    linestyle="--" if z.state == "DRAINING" else "-",
                )
            )
            ax.add_patch(
                Rectangle((x0, z0), x1 - x0, z1 - z0, fill=False, lw=1.2, color=colour[z.name])
            )
            ax.text(
                x0 + 10,
                z1 - 10,
                f"{z.name}\n{z.players}p",
                fontsize=6,
                va="top",
                color=colour[z.name],
            )
            ax.scatter(z.xs, z.zs, s=2, color=colour[z.name])
        ax.set_title(f"t={s.t:.0f}s  {s.phase}", fontsize=8)
    ax = fig.add_subplot(grid[1, :])
    times = [s.t for s in tl.samples]
    for name in names:
        series = [next((z.players for z in s.zones if z.name == name), 0) for s in tl.samples]
        ax.plot(times, series, label=name, color=colour[name], lw=1.2)
    instanced = [sum(z.players for z in s.zones if z.instance) for s in tl.samples]
    if any(instanced):
        ax.plot(times, instanced, label="in instance zones", color="grey", lw=1.0, ls="--")
    ax.plot(
        times,
        [s.bots_connected for s in tl.samples],
        label="bots connected",
        color="black",
        lw=1,
        ls=":",
    )
    for e in tl.events:
        if e.decision in ("Split", "Merge"):
            ax.axvline(e.t, color="magenta" if e.decision == "Split" else "teal", lw=0.8, alpha=0.6)
            ax.text(
                e.t, ax.get_ylim()[1] * 0.98, e.decision.lower(), fontsize=6, rotation=90, va="top"
            )
        elif e.decision == "InstanceEnd":  # an arena match's instance ends
            ax.axvline(e.t, color="grey", lw=0.8, ls="--", alpha=0.6)
            ax.text(e.t, ax.get_ylim()[1] * 0.6, "match end", fontsize=6, rotation=90, va="top")
    ax.set_xlabel("seconds")
    ax.set_ylabel("players per zone")
    ax.legend(fontsize=6, ncol=4, loc="upper right")
    heading = title or "Tessera demo: zones splitting and merging under load"
    fig.suptitle(heading + (f"\narena: {arena_note}" if arena_note else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
