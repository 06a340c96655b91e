"""The demo's arena as a game module (docs/GAME.md, "The arena"): two teams, first
to 3 kills within 90 s, a draw when time is up with equal scores.

It declares only rules: the zone's combat counts the kills, the framework tells
the players the start, each score and the end, and the instance zone reports the
result to matchmaking itself.
"""

from tessera.game import Module, Rules

GAME = Module(
    name="arena",
    rules=Rules(mode="arena", teams=2, start_timeout_s=20.0, time_limit_s=90.0, win_score=3),
)
