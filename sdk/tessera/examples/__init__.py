"""Example game modules (docs/GAME.md); ``TESSERA_GAME_MODULE=tessera.examples.<name>``."""
