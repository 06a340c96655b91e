"""The event sink takes declared events for players only."""

from __future__ import annotations

import pytest

from tessera.game import Events, ModuleError


def sink() -> Events:
    return Events(frozenset({"won"}), lambda row: "alice" if row == 0 else "")


def test_a_declared_event_to_a_player_is_kept() -> None:
    events = sink()
    events.send(0, "won", amount=3, other=7)
    assert events.sent == [("alice", "won", 3.0, 7)]


def test_an_undeclared_event_raises() -> None:
    with pytest.raises(ModuleError, match="'lost' is not declared"):
        sink().send(0, "lost")


def test_an_event_to_a_non_player_raises() -> None:
    with pytest.raises(ModuleError, match="row 1 is not a player"):
        sink().send(1, "won")
