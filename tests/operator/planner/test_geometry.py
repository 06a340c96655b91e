"""Cuts, the partition check and sibling pairs (tessera.operator.planner.geometry)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.operator.planner.geometry import (
    Pair,
    cut_text,
    pairs_by_zone,
    partition_errors,
    sibling_pairs,
    split_rect,
)
from tessera.operator.planner.model import Desired, ZoneView
from tessera.wire.geometry import Rect

from .conftest import WORLD, ready, siblings


@pytest.mark.parametrize(
    ("rect", "xs", "zs", "expected"),
    [
        # Longer axis x, median of the samples.
        (
            Rect(0, 0, 1000, 500),
            [100, 200, 300],
            [0, 0, 0],
            (Rect(0, 0, 200, 500), Rect(200, 0, 1000, 500)),
        ),
        # Longer axis z.
        (
            Rect(0, 0, 500, 1000),
            [0, 0],
            [700, 900],
            (Rect(0, 0, 500, 800), Rect(0, 800, 500, 1000)),
        ),
        # No samples: the middle.
        (Rect(0, 0, 1000, 1000), [], [], (Rect(0, 0, 500, 1000), Rect(500, 0, 1000, 1000))),
        # Median too close to the edge: clamped to the minimum size (100).
        (
            Rect(0, 0, 1000, 1000),
            [1, 2, 3],
            [5, 5, 5],
            (Rect(0, 0, 100, 1000), Rect(100, 0, 1000, 1000)),
        ),
        # Cut on a whole metre.
        (
            Rect(0, 0, 1000, 400),
            [333.3, 333.4],
            [0, 0],
            (Rect(0, 0, 333, 400), Rect(333, 0, 1000, 400)),
        ),
        # Longer axis too small for two halves: the shorter one.
        (Rect(0, 0, 199, 150), [], [], None),
        (Rect(0, 0, 210, 150), [], [], (Rect(0, 0, 105, 150), Rect(105, 0, 210, 150))),
    ],
)
def test_split_rect(
    rect: Rect, xs: list[float], zs: list[float], expected: tuple[Rect, Rect] | None
) -> None:
    assert split_rect(rect, 100, xs, zs) == expected


def test_split_rect_falls_back_to_the_shorter_axis() -> None:
    assert split_rect(Rect(0, 0, 150, 140), 70, [], []) == (
        Rect(0, 0, 75, 140),
        Rect(75, 0, 150, 140),
    )
    assert split_rect(Rect(0, 0, 150, 300), 100, [], []) == (
        Rect(0, 0, 150, 150),
        Rect(0, 150, 150, 300),
    )
    assert split_rect(Rect(0, 0, 150, 199), 100, [], []) is None


@pytest.mark.parametrize(
    ("a", "b", "union"),
    [
        (Rect(0, 0, 5, 10), Rect(5, 0, 10, 10), Rect(0, 0, 10, 10)),
        (Rect(5, 0, 10, 10), Rect(0, 0, 5, 10), Rect(0, 0, 10, 10)),
        (Rect(0, 0, 10, 5), Rect(0, 5, 10, 10), Rect(0, 0, 10, 10)),
        (Rect(0, 0, 5, 10), Rect(5, 0, 10, 9), None),
        (Rect(0, 0, 5, 10), Rect(6, 0, 10, 10), None),
        (Rect(0, 0, 5, 5), Rect(5, 5, 10, 10), None),
    ],
)
def test_union(a: Rect, b: Rect, union: Rect | None) -> None:
    assert a.union(b) == union


@pytest.mark.parametrize(
    ("rects", "problem"),
    [
        ([WORLD], None),
        ([Rect(0, 0, 512, 1024), Rect(512, 0, 1024, 1024)], None),
        ([Rect(0, 0, 512, 1024)], "belong to no zone"),
        ([Rect(0, 0, 600, 1024), Rect(512, 0, 1024, 1024)], "belong to several zones"),
        ([Rect(0, 0, 2048, 1024)], "outside the world"),
    ],
)
def test_partition_errors(rects: list[Rect], problem: str | None) -> None:
    errors = partition_errors(WORLD, rects)
    if problem is None:
        assert errors == []
    else:
        assert any(problem in e for e in errors), errors


@pytest.mark.parametrize(
    ("low", "high", "text"),
    [
        (Rect(0, 0, 512, 1024), Rect(512, 0, 1024, 1024), "x=512"),
        (Rect(0, 0, 1024, 300), Rect(0, 300, 1024, 1024), "z=300"),
        (Rect(10, 20, 15.5, 40), Rect(15.5, 20, 30, 40), "x=15.5"),
    ],
)
def test_cut_text(low: Rect, high: Rect, text: str) -> None:
    assert cut_text(low, high) == text


def test_sibling_pairs_finds_the_child_and_its_parent() -> None:
    parent, child = siblings(3, 4)
    assert sibling_pairs({z.name: z for z in (parent, child)}) == [Pair(child, parent, WORLD)]


def _pairs(*zones: ZoneView) -> list[Pair]:
    return sibling_pairs({z.name: z for z in zones})


@pytest.mark.parametrize(
    ("parent_change", "child_change"),
    [
        ({"desired": Desired.DRAINING}, {}),  # not both active
        ({}, {"desired": Desired.DRAINING}),
        ({}, {"bounds": None}),
        ({"bounds": None}, {}),
        ({"depth": 2}, {}),  # the parent was split again since
        ({}, {"depth": 2}),  # the child was split again since
        ({"depth": 0}, {"depth": 0, "split_depth": 0}),  # no split between them
        ({"managed": False}, {}),  # hand-made zones are not merged
        ({}, {"managed": False}),
        ({"instance": "m1"}, {}),  # instance zones stand outside the tree
        ({}, {"instance": "m1"}),
        ({}, {"bounds": Rect(512, 0, 1024, 1000)}),  # no rectangle together
        ({}, {"parent": "earth-9"}),  # the parent is gone
        ({}, {"parent": None}),
    ],
)
def test_sibling_pairs_excludes(
    parent_change: dict[str, object], child_change: dict[str, object]
) -> None:
    parent, child = siblings(3, 4)
    assert _pairs(replace(parent, **parent_change), replace(child, **child_change)) == []  # type: ignore[arg-type]


def test_sibling_pairs_of_a_deeper_tree() -> None:
    # earth-0 split into earth-0 | earth-1, then earth-1 into earth-1 | earth-2:
    # only the latest split (earth-2 from earth-1) may merge back.
    zones = [
        ready("earth-0", Rect(0, 0, 512, 1024), depth=1),
        ready("earth-1", Rect(512, 0, 1024, 512), parent="earth-0", depth=2, split_depth=1),
        ready("earth-2", Rect(512, 512, 1024, 1024), parent="earth-1", depth=2, split_depth=2),
    ]
    (pair,) = _pairs(*zones)
    assert (pair.child.name, pair.parent.name) == ("earth-2", "earth-1")
    assert pair.union == Rect(512, 0, 1024, 1024)


NAMES = [f"earth-{i}" for i in range(6)]
# A parent's half, its sibling halves on either side (so a parent can pair with
# two children), and a rectangle that pairs with none of them.
RECTS = [
    Rect(0, 0, 512, 1024),
    Rect(512, 0, 1024, 1024),
    Rect(-512, 0, 0, 1024),
    Rect(0, 0, 512, 512),
]
zone_sets = st.lists(
    st.builds(
        lambda name, parent, depth, born, rect: ready(
            name, rect, parent=parent, depth=depth, split_depth=born
        ),
        st.sampled_from(NAMES),
        st.sampled_from([None, *NAMES]),
        st.integers(0, 2),
        st.integers(0, 2),
        st.sampled_from(RECTS),
    ),
    max_size=8,
)


@given(zone_sets)
def test_pairs_by_zone_is_the_pairs_each_zone_is_in(zones: list[ZoneView]) -> None:
    by_name = {z.name: z for z in zones}
    pairs = sibling_pairs(by_name)
    index = pairs_by_zone(pairs)
    assert set(index) <= set(by_name)
    for name in by_name:
        # The brute-force search it replaces: every pair, in order, that holds the zone.
        assert index.get(name, []) == [p for p in pairs if name in (p.child.name, p.parent.name)]


def test_pairs_by_zone_of_a_parent_with_two_children() -> None:
    parent = ready("earth-0", RECTS[0], depth=1)
    right = ready("earth-1", RECTS[1], parent="earth-0", depth=1, split_depth=1)
    left = ready("earth-2", RECTS[2], parent="earth-0", depth=1, split_depth=1)
    pairs = _pairs(parent, right, left)
    assert [p.child.name for p in pairs_by_zone(pairs)["earth-0"]] == ["earth-1", "earth-2"]
    assert pairs_by_zone(pairs)["earth-2"] == [Pair(left, parent, Rect(-512, 0, 512, 1024))]
