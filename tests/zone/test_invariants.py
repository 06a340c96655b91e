"""The ownership invariants over zone statuses and the routing table."""

from __future__ import annotations

from tessera.zone.invariants import check


def status(ids: list[int], players: list[str]) -> list[tuple[int, str]]:
    return list(zip(ids, players, strict=True))


def routes(**zones: str) -> dict[str, str]:
    return zones


def test_clean_world() -> None:
    r = check({"a": status([1, 2], ["p1", ""]), "b": status([3], ["p3"])}, routes(p1="a", p3="b"))
    assert r.ok and (r.entities, r.players) == (3, 2)


def test_duplicates_lost_and_misrouted_are_reported() -> None:
    zones = {"a": status([1, 9], ["p1", ""]), "b": status([1, 9], ["p1", ""])}
    r = check(zones, routes(p1="a", p2="b"))
    assert r.duplicates == [1, 9] and r.lost == ["p2"] and not r.ok
    r = check({"a": status([1], ["p1"])}, routes(p1="b"))
    assert r.misrouted == ["p1"]
    r = check({"a": status([1], ["p1"])}, routes(p1="a"), expected_players={"p1", "p7"})
    assert r.lost == ["p7"]


def test_players_of_a_zone_that_did_not_answer_are_not_known_lost() -> None:
    r = check({"a": status([1], ["p1"])}, routes(p1="a", p2="b", p3="c"), unreachable=["b"])
    assert r.lost == ["p3"] and r.unreachable == ["b"] and not r.ok
    r = check({"a": status([1], ["p1"])}, routes(p1="a"), {"p1", "p9"}, unreachable=["b"])
    assert r.lost == ["p9"]  # no route at all: lost whatever the zones say
