"""A zone's tick loop for a game module, without network (docs/GAME.md, tutorial step 2).

It runs the zone's own :class:`~tessera.zone.simulation.Simulation` with the
module: add players, push inputs and actions, step ticks, read components and the
events each player was sent. Unlike the rest of tessera.game it imports the zone.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tessera.common.config import Env
from tessera.game.module import Module
from tessera.game.rules import Outcome
from tessera.zone import inputs
from tessera.zone.config import ZoneConfig
from tessera.zone.entities import enter_match
from tessera.zone.events import Event
from tessera.zone.simulation import Simulation


class GameTest:
    """One zone (``bounds`` in the world's coordinates) running ``module``;
    ``env`` sets more ``TESSERA_*`` zone settings (docs/ZONE.md). With ``match``
    it is that match's instance zone, and players join the match."""

    def __init__(
        self,
        module: Module,
        *,
        bounds: str = "-500,-500,500,500",
        env: Mapping[str, str] | None = None,
        match: str = "",
    ) -> None:
        settings = {"TESSERA_WORLD_BOUNDS": bounds, "TESSERA_ZONE_BOUNDS": bounds, **(env or {})}
        if match:
            settings["TESSERA_ZONE_INSTANCE"] = match
        self.cfg = ZoneConfig.from_env(Env(settings))
        self.sim = Simulation(self.cfg, area=self.cfg.world_bounds, module=module)
        self.events: list[Event] = []  # everything sent to players, in order
        self._next_id = 1

    def add_player(
        self, player_id: str, x: float = 0.0, z: float = 0.0, *, team: int = 0, role: str = ""
    ) -> int:
        """Spawn a player at (x, z) (in an instance zone, joining its match on
        ``team`` with ``role``, as the matchmaker's Join does); returns its entity id."""
        eid, self._next_id = self._next_id, self._next_id + 1
        self.sim.add_player(entity_id=eid, player_id=player_id, pos=(x, 0.0, z), team=team)
        if self.cfg.instance:
            enter_match(self.sim.ents, eid, match_id=self.cfg.instance, team=team, role=role)
        return eid

    def remove_player(self, player_id: str) -> None:
        """A player leaves the zone."""
        self.sim.remove_player(player_id)

    def move(self, player_id: str, x: float, z: float) -> None:
        """Put a player at (x, z) (a test's shortcut past movement's speed limit)."""
        self.sim.ents.pos[self._row(player_id)] = (x, 0.0, z)

    def input(self, one: inputs.Input) -> str | None:
        """Apply one input as the zone would; returns the drop reason or None."""
        return self.sim.submit(one, self.sim.now_s)

    def act(self, player_id: str, action_id: int, *args: float) -> str | None:
        """Send one game action as a client would; returns the drop reason or None."""
        return self.sim.act(player_id, action_id, list(args), self.sim.now_s)

    def step(self, ticks: int = 1) -> None:
        """Run ``ticks`` ticks, keeping their events."""
        for _ in range(ticks):
            self.events += self.sim.step().events

    def component(self, player_id: str, name: str) -> float:
        """A player's value of component ``name``."""
        return float(self.sim.ents.columns[name][self._row(player_id)])

    def sent(self, player_id: str, name: str) -> list[Event]:
        """The game events ``name`` sent to a player so far."""
        return [e for e in self.events if e.player_id == player_id and e.detail == name]

    @property
    def outcome(self) -> Outcome | None:
        """How the instance's match ended (None while it runs)."""
        return self.sim.game.outcome

    @property
    def counts(self) -> Mapping[str, int]:
        """The zone's counters since the start (drops, errors, ...)."""
        return self.sim.counts

    def column(self, name: str) -> np.ndarray:
        """Component ``name`` of every entity (rows 0..n-1)."""
        return self.sim.ents.columns[name][: self.sim.ents.n]

    def _row(self, player_id: str) -> int:
        row = self.sim.ents.row_of_player(player_id)
        if row is None:
            raise KeyError(f"no player {player_id!r}")
        return row
