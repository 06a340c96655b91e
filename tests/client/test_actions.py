"""Game actions by name: encoded from the schema the zone announces, in the order
and ranges the zone checks; bad names and arguments raise before anything is sent."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.client.actions import ActionError, encode
from tessera.game import Action, Argument, Module
from tessera.game.view import Events, View
from tessera.zone.game import arguments
from tessera.zone.messages import game_schema


def nothing(view: View, row: int, args: Mapping[str, float], events: Events) -> None:
    """A handler that is never run here."""


MOVE = Action(
    7,
    "build",
    nothing,
    arguments=(Argument("kind", 0, 3, integer=True), Argument("x", -10.0, 10.0)),
)
GAME = Module(name="studio.game", actions=(MOVE, Action(9, "wave", nothing)), events=("built",))
SCHEMA = game_schema(GAME)


def test_the_schema_carries_what_a_client_needs() -> None:
    assert SCHEMA.module == "studio.game" and list(SCHEMA.events) == ["built"]
    build = SCHEMA.actions[0]
    assert (build.id, build.name) == (7, "build")
    assert [(a.name, a.low, a.high, a.integer) for a in build.arguments] == [
        ("kind", 0.0, 3.0, True),
        ("x", -10.0, 10.0, False),
    ]


def test_arguments_go_in_declared_order_by_name_or_id() -> None:
    by_name = encode(SCHEMA, "build", {"x": -2.5, "kind": 3})
    assert (by_name.id, list(by_name.args)) == (7, [3.0, -2.5])
    assert encode(SCHEMA, 7, {"kind": 1, "x": 0}) == encode(SCHEMA, "build", {"kind": 1, "x": 0})
    assert list(encode(SCHEMA, "wave", {}).args) == []


@pytest.mark.parametrize(
    ("name", "args", "error"),
    [
        ("fly", {}, "declares no action 'fly'; it has build (7), wave (9)"),
        (8, {}, "declares no action 8"),
        ("build", {"kind": 1}, "missing ['x']"),
        ("build", {"kind": 1, "x": 0, "y": 0}, "unknown ['y']"),
        ("build", {"kind": 4, "x": 0}, "kind=4, want a whole number in [0, 3]"),
        ("build", {"kind": 1.5, "x": 0}, "kind=1.5, want a whole number"),
        ("build", {"kind": 1, "x": float("nan")}, "x=nan, want a number in [-10, 10]"),
    ],
)
def test_bad_actions_raise_with_what_is_declared(
    name: str | int, args: dict[str, float], error: str
) -> None:
    with pytest.raises(ActionError, match=re.escape(error)):
        encode(SCHEMA, name, args)


@given(
    kind=st.integers(0, 3),
    x=st.floats(-10.0, 10.0, allow_nan=False),
)
def test_what_a_client_encodes_the_zone_accepts_unchanged(kind: int, x: float) -> None:
    action = encode(SCHEMA, "build", {"x": x, "kind": kind})
    assert arguments(MOVE, list(action.args)) == {"kind": kind, "x": x}
