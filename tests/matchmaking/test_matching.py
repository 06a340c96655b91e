"""Match functions: windows, regions, team balance, parties, roles, partial matches, backfill."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from tessera.matchmaking import matching
from tessera.matchmaking.matching import Candidate, OpenBackfill, Proposal, Seat
from tessera.matchmaking.modes import Curve, Mode

DUEL = Mode(name="duel", skill_window=Curve(((0.0, 2.0), (10.0, 12.0))))
FIVES = Mode(name="5v5", team_size=5, max_party=5, skill_window=Curve(((0.0, 100.0),)))
ROLES = Mode(
    name="roles",
    team_size=5,
    max_party=5,
    roles={"tank": 1, "healer": 1, "dps": 3},
    skill_window=Curve(((0.0, 100.0),)),
)

_ids = itertools.count()


def ticket(
    rating: float | list[float] = 25.0,
    *,
    created: float = 0.0,
    regions: tuple[tuple[str, float], ...] = (("eu", 20.0),),
    roles: tuple[str, ...] | None = None,
    strings: dict[str, str] | None = None,
    numbers: dict[str, float] | None = None,
    mode: str = "duel",
) -> Candidate:
    ratings = tuple(rating) if isinstance(rating, list) else (rating,)
    n = next(_ids)
    return Candidate(
        id=f"t{n}",
        mode=mode,
        players=tuple(f"p{n}-{i}" for i in range(len(ratings))),
        roles=roles or ("",) * len(ratings),
        ratings=ratings,
        regions=regions,
        strings=strings or {},
        created_at_ms=created,
        numbers=numbers or {},
    )


def assigned(proposals: list[Proposal]) -> list[str]:
    return [i for p in proposals for i in p.ticket_ids]


def test_duel_pairs_nearest_ratings() -> None:
    a, b, c, d = ticket(10), ticket(30), ticket(11), ticket(31)
    proposals = matching.match_teams([a, b, c, d], 0.0, DUEL)
    pairs = {frozenset(p.ticket_ids) for p in proposals}
    assert pairs == {frozenset({a.id, c.id}), frozenset({b.id, d.id})}
    assert all(p.rating_gap == pytest.approx(1.0) for p in proposals)


def test_skill_window_widens_with_waiting_time() -> None:
    a, b = ticket(10, created=0.0), ticket(18, created=0.0)
    assert matching.match_teams([a, b], 1_000.0, DUEL) == []
    # After 6 s the window is 2 + 6 = 8 >= 8.
    (proposal,) = matching.match_teams([a, b], 6_000.0, DUEL)
    assert set(proposal.ticket_ids) == {a.id, b.id}


def test_regions_separate_pools_until_widening() -> None:
    mode = Mode(name="duel", region_widen_after_s=5.0, max_latency_ms=100.0)
    eu = ticket(25, regions=(("eu", 10.0), ("us", 90.0)))
    us = ticket(25, regions=(("us", 10.0),))
    assert matching.match_teams([eu, us], 1_000.0, mode) == []
    (proposal,) = matching.match_teams([eu, us], 6_000.0, mode)
    assert proposal.region == "us"


def test_region_above_latency_cap_is_never_searched() -> None:
    mode = Mode(name="duel", region_widen_after_s=0.0, max_latency_ms=100.0)
    eu = ticket(25, regions=(("eu", 10.0), ("us", 180.0)))
    us = ticket(25, regions=(("us", 10.0),))
    assert matching.match_teams([eu, us], 60_000.0, mode) == []


def test_match_attributes_split_pools() -> None:
    mode = Mode(name="duel", match_attributes=("map",))
    a = ticket(25, strings={"map": "dust"})
    b = ticket(25, strings={"map": "ice"})
    c = ticket(25, strings={"map": "dust"})
    (proposal,) = matching.match_teams([a, b, c], 0.0, mode)
    assert set(proposal.ticket_ids) == {a.id, c.id}


def test_oldest_ticket_anchors_first() -> None:
    old = ticket(20, created=0.0)
    young1, young2 = ticket(20.5, created=9_000.0), ticket(20.6, created=9_000.0)
    (proposal,) = matching.match_teams([young1, young2, old], 10_000.0, DUEL)
    assert old.id in proposal.ticket_ids


def test_five_v_five_balances_teams() -> None:
    rng = random.Random(7)
    tickets = [ticket(rng.uniform(10, 40), mode="5v5") for _ in range(10)]
    (proposal,) = matching.match_teams(tickets, 0.0, FIVES)
    teams = Counter(s.team for s in proposal.seats)
    assert teams == {0: 5, 1: 5}
    by_id = {t.id: t for t in tickets}
    sums = [sum(by_id[s.ticket_id].rating for s in proposal.seats if s.team == k) for k in (0, 1)]
    assert proposal.rating_gap == pytest.approx(abs(sums[0] - sums[1]))
    # Exhaustive: no split of these ten players into 5 + 5 has a smaller gap.
    ratings = [t.rating for t in tickets]
    best = min(
        abs(2 * sum(ratings[i] for i in combo) - sum(ratings))
        for combo in itertools.combinations(range(10), 5)
    )
    assert proposal.rating_gap == pytest.approx(best)


def test_parties_stay_together() -> None:
    party3 = ticket([20, 21, 22], mode="5v5")
    party2 = ticket([30, 30], mode="5v5")
    solos = [ticket(25, mode="5v5") for _ in range(5)]
    (proposal,) = matching.match_teams([party3, party2, *solos], 0.0, FIVES)
    for party in (party3, party2):
        teams = {s.team for s in proposal.seats if s.ticket_id == party.id}
        assert len(teams) == 1
    assert Counter(s.team for s in proposal.seats) == {0: 5, 1: 5}


def test_unpackable_parties_do_not_match() -> None:
    # 3 + 3 + 3 + 1 = 10 players but no split into 5 + 5.
    tickets = [ticket([25] * 3, mode="5v5") for _ in range(3)] + [ticket(25, mode="5v5")]
    assert matching.match_teams(tickets, 0.0, FIVES) == []


def test_roles_fill_composition() -> None:
    tanks = [ticket(25, roles=("tank",), mode="roles") for _ in range(2)]
    healers = [ticket(25, roles=("healer",), mode="roles") for _ in range(2)]
    flex = [ticket(25, mode="roles") for _ in range(6)]
    (proposal,) = matching.match_teams([*tanks, *healers, *flex], 0.0, ROLES)
    for team in (0, 1):
        roles = Counter(s.role for s in proposal.seats if s.team == team)
        assert roles == {"tank": 1, "healer": 1, "dps": 3}
    wanted = {t.players[0]: t.roles[0] for t in tanks + healers}
    assert all(s.role == wanted[s.player_id] for s in proposal.seats if s.player_id in wanted)


def test_too_many_of_one_role_cannot_match() -> None:
    tanks = [ticket(25, roles=("tank",), mode="roles") for _ in range(10)]
    assert matching.match_teams(tanks, 0.0, ROLES) == []


def test_partial_match_after_waiting() -> None:
    mode = Mode(name="ffa", teams=4, team_size=1, min_team_size=1, partial_after_s=5.0)
    mode_min = Mode(
        name="br", teams=1, team_size=8, min_team_size=3, partial_after_s=5.0, max_party=2
    )
    tickets = [ticket(25, created=0.0) for _ in range(3)]
    assert matching.match_teams(tickets, 1_000.0, mode_min) == []
    (proposal,) = matching.match_teams(tickets, 6_000.0, mode_min)
    assert len(proposal.seats) == 3
    # Four single-player teams need four tickets; three never make a match.
    assert matching.match_teams(tickets, 60_000.0, mode) == []
    four = [*tickets, ticket(25)]
    (ffa,) = matching.match_teams(four, 0.0, mode)
    assert sorted(s.team for s in ffa.seats) == [0, 1, 2, 3]


def test_greedy_balance_for_more_teams() -> None:
    mode = Mode(name="trios", teams=3, team_size=3, max_party=3)
    group = [ticket(r) for r in (10, 20, 30, 11, 21, 31, 12, 22, 32)]
    teams = matching.balance(group, mode, 3)
    assert teams is not None
    assert [sum(t.size for t in team) for team in teams] == [3, 3, 3]
    assert matching.team_gap(teams) < 10


def test_no_ticket_in_two_proposals_property() -> None:
    rng = random.Random(3)
    mode = Mode(
        name="5v5",
        team_size=5,
        max_party=5,
        region_widen_after_s=1.0,
        skill_window=Curve(((0.0, 3.0), (5.0, 30.0))),
    )
    tickets = [
        ticket(
            [rng.gauss(25, 6) for _ in range(rng.choice([1, 1, 1, 2, 3, 5]))],
            created=rng.uniform(0, 10_000),
            regions=tuple(
                sorted(
                    ((r, rng.uniform(5, 120)) for r in rng.sample(["eu", "us", "ap"], 2)),
                    key=lambda x: x[1],
                )
            ),
            mode="5v5",
        )
        for _ in range(300)
    ]
    proposals = matching.match_teams(tickets, 10_000.0, mode)
    ids = assigned(proposals)
    assert len(ids) == len(set(ids))
    assert len(proposals) > 10
    valid, refused = matching.valid_proposals(proposals, tickets, mode)
    assert refused == 0 and len(valid) == len(proposals)


def test_fill_backfills_takes_oldest_fitting_tickets() -> None:
    backfill = OpenBackfill("b1", "5v5", "eu", {0: 1, 1: 2}, 0.0)
    old_pair = ticket([25, 25], created=0.0, mode="5v5")
    old_solo = ticket(25, created=1.0, mode="5v5")
    far = ticket(25, created=0.0, regions=(("us", 10.0),), mode="5v5")
    young = ticket(25, created=5.0, mode="5v5")
    (proposal,) = matching.fill_backfills([backfill], [young, far, old_solo, old_pair], 10.0, FIVES)
    assert proposal.backfill_id == "b1"
    assert set(proposal.ticket_ids) == {old_pair.id, old_solo.id}
    assert Counter(s.team for s in proposal.seats) == {1: 2, 0: 1}


def test_valid_proposals_refuses_bad_output() -> None:
    a, b = ticket(25), ticket(25)
    good = Proposal(
        "duel", "eu", (a.id, b.id), (Seat(a.id, a.players[0], 0), Seat(b.id, b.players[0], 1)), 0.0
    )
    unknown = Proposal("duel", "eu", ("nope",), (Seat("nope", "x", 0),), 0.0)
    missing_seat = Proposal("duel", "eu", (a.id,), (), 0.0)
    bad_team = Proposal("duel", "eu", (a.id,), (Seat(a.id, a.players[0], 5),), 0.0)
    valid, refused = matching.valid_proposals(
        [unknown, missing_seat, bad_team, good, good], [a, b], DUEL
    )
    assert valid == [good]
    assert refused == 4


def test_resolve_imports_dotted_functions() -> None:
    assert matching.resolve("teams") is matching.match_teams
    assert matching.resolve("tessera.matchmaking.matching:match_teams") is matching.match_teams
    with pytest.raises(ValueError, match="unknown match function"):
        matching.resolve("nope")
    with pytest.raises(ValueError, match="cannot be imported"):
        matching.resolve("tessera.nope:f")


def test_share_deals_each_ticket_to_one_replica_and_rotates() -> None:
    tickets = [ticket(25, created=1_000.0) for _ in range(300)]

    def owners(now_ms: float) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(3):
            for t in matching.share(tickets, now_ms, i, 3, 200.0):
                assert t.id not in out
                out[t.id] = i
        return out

    first = owners(1_050.0)
    assert set(first) == {t.id for t in tickets}
    assert all(n > 60 for n in Counter(first.values()).values())
    assert owners(1_150.0) == first
    moved = owners(1_250.0)
    assert set(moved) == set(first)
    assert 100 < sum(first[i] != moved[i] for i in first) < 300
    # Old tickets are open to every replica; one replica sees everything.
    late = 1_000.0 + 200.0 * matching.OPEN_AFTER_ROTATIONS
    assert all(len(matching.share(tickets, late, i, 3, 200.0)) == 300 for i in range(3))
    assert matching.share(tickets, 0.0, 0, 1, 200.0) == tickets


def test_number_spreads_bound_attributes_within_a_match() -> None:
    mode = Mode(name="duel", number_spreads={"level": 5.0})

    low, high, near = (ticket(25, numbers={"level": n}) for n in (10.0, 30.0, 13.0))
    (proposal,) = matching.match_teams([low, high, near], 0.0, mode)
    assert set(proposal.ticket_ids) == {low.id, near.id}
    assert matching.match_teams([low, high], 0.0, mode) == []
