"""The error of the game-module API."""


class ModuleError(ValueError):
    """A module that cannot be loaded, declares something invalid, or (in a system
    or handler) sends an event it did not declare."""
