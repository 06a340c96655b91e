"""The default game: no components, systems or actions of its own, so a zone runs
only the built-in ones (NPC behaviour, movement, combat) exactly as without modules."""

from tessera.game.module import Module

GAME = Module(name="tessera.game.default")
