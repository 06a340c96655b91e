"""What a tick tells one player: the event kinds and the :class:`Event` record.

The kinds are the values of ``tessera.v1.PlayerEvent.Kind``; the core uses the
plain numbers and the shell copies them into ``PlayerEvent`` messages.
"""

from __future__ import annotations

from dataclasses import dataclass

SPEED_CLAMPED = 1
TELEPORT_REJECTED = 2
INPUT_DROPPED = 3
HIT_DEALT = 4
HIT_TAKEN = 5
DIED = 6
RESPAWNED = 7
GAME = 8  # a game module's event (tessera.zone.game): detail is its name


@dataclass(frozen=True)
class Event:
    """Something to tell one player (becomes a PlayerEvent)."""

    player_id: str
    kind: int
    other: int = 0
    amount: float = 0.0
    detail: str = ""
