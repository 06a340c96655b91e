"""The ownership invariants over zone statuses and the routing table."""

from __future__ import annotations

from tessera.zone.invariants import check, moved, persisting


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


def test_only_violations_seen_in_every_scan_persist() -> None:
    # p2 is in flight in the first scan and arrived by the second; p3 is lost in
    # both; entity 9 is duplicated only in the second; p4 is misrouted in both.
    first = check(
        {"a": status([1, 5], ["p1", "p4"]), "b": status([], [])},
        routes(p1="a", p2="b", p3="b", p4="b"),
    )
    second = check(
        {"a": status([1, 9, 5], ["p1", "", "p4"]), "b": status([2, 9], ["p2", ""])},
        routes(p1="a", p2="b", p3="b", p4="b"),
    )
    assert first.lost == ["p2", "p3"] and second.duplicates == [9]
    r = persisting(first, second)
    assert (r.lost, r.duplicates, r.misrouted) == (["p3"], [], ["p4"]) and not r.ok
    assert persisting(second, check({"a": status([1], ["p1"])}, routes(p1="a"))).ok


def test_a_handoff_between_two_zone_reads_is_not_judged_by_that_scan() -> None:
    # Zones are read one after another: p1 went a -> b after a was read and
    # before b was (in both); p2 went b -> a the other way round (in neither).
    before = {"p1": "a|1", "p2": "b|1", "p3": "a|1", "p4": "a|1"}
    after = {"p1": "b|2", "p2": "a|2", "p3": "a|1", "p4": "a|1"}
    zones = {"a": status([1, 3], ["p1", "p3"]), "b": status([1], ["p1"])}
    routes = {p: r.split("|")[0] for p, r in after.items()}
    naive = check(zones, routes)
    assert naive.duplicates == [1] and naive.lost == ["p2", "p4"]
    r = check(zones, routes, moved=moved(before, after))
    # p4's route did not change: it is lost whatever the timing; p1 and p2 wait
    # for the next scan.
    assert (r.duplicates, r.lost, r.misrouted, r.moved) == ([], ["p4"], [], ["p1", "p2"])
    assert not r.ok


def test_a_player_in_two_zones_with_a_steady_route_is_a_duplicate() -> None:
    steady = {"p1": "a|1"}
    r = check(
        {"a": status([1], ["p1"]), "b": status([1], ["p1"])},
        {"p1": "a"},
        moved=moved(steady, steady),
    )
    assert r.duplicates == [1] and not r.ok


def test_a_player_whose_commit_waits_in_its_zone_s_inbox_is_in_transit() -> None:
    # p2's COMMIT waits in b's inbox (b busy); p3's waits in c's, but its route
    # names b (a stale COMMIT): lost; p4 is in transit and also in a zone: fine.
    zones = {"a": status([1, 4], ["p1", "p4"]), "b": status([], [])}
    steady = routes(p1="a", p2="b", p3="b", p4="a")
    r = check(zones, steady, committed={"p2": "b", "p3": "c", "p4": "a"})
    assert (r.in_transit, r.lost) == (["p2"], ["p3"]) and not r.ok
    r = check(zones, steady, committed={"p2": "b", "p3": "b"})
    assert r.ok and r.in_transit == ["p2", "p3"]


def test_moved_are_the_players_whose_route_changed_appeared_or_went() -> None:
    assert moved(
        {"p1": "a|1", "p2": "a|1", "p3": "b|4"}, {"p1": "a|2", "p2": "a|1", "p4": "c|1"}
    ) == {
        "p1",
        "p3",
        "p4",
    }
    assert moved({}, {}) == set()
