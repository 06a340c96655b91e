"""The game-module API a studio's package imports (docs/GAME.md).

It imports nothing of the zone service: the zone imports it.
"""

from tessera.game.errors import ModuleError
from tessera.game.module import (
    DEFAULT,
    Action,
    Argument,
    Component,
    Module,
    Replication,
    System,
    load,
)
from tessera.game.rules import Rules
from tessera.game.view import DEAD, GHOST, NPC, PLAYER, Events, View

__all__ = [
    "DEAD",
    "DEFAULT",
    "GHOST",
    "NPC",
    "PLAYER",
    "Action",
    "Argument",
    "Component",
    "Events",
    "Module",
    "ModuleError",
    "Replication",
    "Rules",
    "System",
    "View",
    "load",
]
