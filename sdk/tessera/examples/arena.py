"""The demo's arena as a game module (docs/GAME.md, "The arena"): two teams, first
to 3 kills within 90 s, a draw when time is up with equal scores.

It declares only rules: the zone's combat counts the kills, the framework tells
the players the start, each score and the end, and the instance zone reports the
result to matchmaking itself.

Its parameters come from the zone's environment when the module loads (a World
sets them in ``spec.zoneTemplate.env``); a bad value stops the zone, naming the
variable (:data:`PARAMETERS`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from tessera.game import Module, ModuleError, Rules

# Each parameter: its variable and default.
PARAMETERS = {
    "win_score": ("TESSERA_ARENA_WIN_KILLS", 3.0),
    "time_limit_s": ("TESSERA_ARENA_TIME_LIMIT_S", 90.0),
    "start_timeout_s": ("TESSERA_ARENA_START_TIMEOUT_S", 20.0),
}


def rules(environ: Mapping[str, str]) -> Rules:
    """The arena's rules with the parameters set in ``environ``."""
    values = {}
    for field, (variable, default) in PARAMETERS.items():
        raw = environ.get(variable, "")
        try:
            value = float(raw) if raw else default
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            raise ModuleError(f"{variable}={raw!r}: want a finite number >= 0")
        values[field] = value
    try:
        return Rules(
            mode="arena",
            teams=2,
            start_timeout_s=values["start_timeout_s"],
            time_limit_s=values["time_limit_s"],
            win_score=values["win_score"],
        )
    except ModuleError as err:
        names = ", ".join(variable for variable, _ in PARAMETERS.values())
        raise ModuleError(f"{err} (from {names})") from None


GAME = Module(name="arena", rules=rules(os.environ))
