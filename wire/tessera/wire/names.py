"""World, zone and match names: DNS labels, as Kubernetes and the wire require; a
game module's path (TESSERA_GAME_MODULE, from the World to the zone); and the
names of the anti-cheat tallies (``EntityState`` fields, Redis keys, the cheat
policy's weights)."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# A Python module path (a game module: spec.game.module, TESSERA_GAME_MODULE).
MODULE_PATH = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
# The per-player anti-cheat tallies zones keep, by reason.
CHEAT_REASONS = ("speed_clamps", "teleports")


def check_name(kind: str, name: str) -> str:
    """Validate a world or zone name (a DNS label); raise ValueError otherwise."""
    if NAME_RE.fullmatch(name) is None:
        raise ValueError(f"{kind} name {name!r} must be a DNS label (a-z, 0-9, '-', <= 63)")
    return name
