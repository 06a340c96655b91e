"""Ticket validation: every refusal names the field and a stable reason."""

from __future__ import annotations

import pytest

from tessera.matchmaking.modes import DEFAULT_MODES
from tessera.matchmaking.ticket import InvalidTicket, candidate, validate
from tessera.v1 import matchmaking_pb2 as pb

MODES = {m.name: m for m in DEFAULT_MODES}


def request(**kwargs: object) -> pb.CreateTicketRequest:
    base: dict[str, object] = {
        "mode": "5v5",
        "players": [pb.TicketPlayer(player_id="alice")],
        "regions": [pb.RegionLatency(region="eu-west", latency_ms=20.0)],
    }
    base.update(kwargs)
    return pb.CreateTicketRequest(**base)  # type: ignore[arg-type]


def test_valid_solo_and_party() -> None:
    assert validate(request(), MODES, "alice").name == "5v5"
    party = [pb.TicketPlayer(player_id=p) for p in ("alice", "bob", "carol")]
    assert validate(request(players=party), MODES, "alice").max_party == 5


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"mode": "chess"}, "UNKNOWN_MODE", "mode"),
        ({"players": []}, "EMPTY_PARTY", "players"),
        (
            {"players": [pb.TicketPlayer(player_id=f"p{i}") for i in range(6)]},
            "PARTY_TOO_LARGE",
            "players",
        ),
        (
            {"players": [pb.TicketPlayer(player_id="alice"), pb.TicketPlayer(player_id="alice")]},
            "DUPLICATE_PLAYER",
            "players[1].player_id",
        ),
        ({"players": [pb.TicketPlayer(player_id="")]}, "BAD_PLAYER_ID", "players[0].player_id"),
        (
            {"players": [pb.TicketPlayer(player_id="a\x1fb")]},
            "BAD_PLAYER_ID",
            "players[0].player_id",
        ),
        (
            {"players": [pb.TicketPlayer(player_id="alice", role="tank")]},
            "UNKNOWN_ROLE",
            "players[0].role",
        ),
        ({"regions": []}, "NO_REGION", "regions"),
        (
            {"regions": [pb.RegionLatency(region="EU West", latency_ms=1)]},
            "BAD_REGION",
            "regions[0].region",
        ),
        (
            {"regions": [pb.RegionLatency(region="eu", latency_ms=float("nan"))]},
            "BAD_LATENCY",
            "regions[0].latency_ms",
        ),
        (
            {"regions": [pb.RegionLatency(region="eu", latency_ms=1e308)]},
            "BAD_LATENCY",
            "regions[0].latency_ms",
        ),
        (
            {"regions": [pb.RegionLatency(region="eu"), pb.RegionLatency(region="eu")]},
            "DUPLICATE_REGION",
            "regions[1].region",
        ),
        (
            {"number_attributes": {"elo": float("inf")}},
            "NON_FINITE_ATTRIBUTE",
            "number_attributes['elo']",
        ),
        (
            {"string_attributes": {"map": "x" * 300}},
            "BAD_ATTRIBUTE",
            "string_attributes['map']",
        ),
        (
            {"string_attributes": {f"k{i}": "v" for i in range(40)}},
            "TOO_MANY_ATTRIBUTES",
            "string_attributes",
        ),
    ],
)
def test_refusals(changes: dict[str, object], reason: str, field: str) -> None:
    with pytest.raises(InvalidTicket) as err:
        validate(request(**changes), MODES, "alice")
    assert (err.value.reason, err.value.field) == (reason, field)
    assert not err.value.permission
    assert str(err.value)


def test_caller_must_lead_the_ticket() -> None:
    party = [pb.TicketPlayer(player_id="bob"), pb.TicketPlayer(player_id="alice")]
    with pytest.raises(InvalidTicket) as err:
        validate(request(players=party), MODES, "alice")
    assert err.value.permission
    assert err.value.reason == "NOT_TICKET_OWNER"


def test_a_trusted_back_end_creates_for_any_players_under_the_same_rules() -> None:
    party = [pb.TicketPlayer(player_id="bob"), pb.TicketPlayer(player_id="alice")]
    assert validate(request(players=party), MODES, None).name == "5v5"
    with pytest.raises(InvalidTicket) as err:
        validate(request(players=[*party, party[0]]), MODES, None)
    assert err.value.reason == "DUPLICATE_PLAYER"


def test_roles_of_role_modes_are_accepted() -> None:
    players = [pb.TicketPlayer(player_id="alice", role="healer")]
    assert validate(request(mode="5v5-roles", players=players), MODES, "alice")


def test_candidate_sorts_regions_and_aggregates_party_rating() -> None:
    ticket = pb.Ticket(
        id="t1",
        mode="5v5",
        players=[pb.TicketPlayer(player_id="a"), pb.TicketPlayer(player_id="b", role="dps")],
        regions=[pb.RegionLatency(region="us", latency_ms=80), pb.RegionLatency(region="eu")],
        created_at_ms=5.0,
    )
    c = candidate(ticket, (20.0, 30.0))
    assert c.regions == (("eu", 0.0), ("us", 80.0))
    assert c.rating == 25.0 and c.total == 50.0 and c.size == 2
    assert c.roles == ("", "dps")


def test_only_served_regions_when_they_are_configured() -> None:
    served = frozenset({"eu-west", "us-east"})
    assert validate(request(), MODES, "alice", served).name == "5v5"
    assert validate(request(regions=[pb.RegionLatency(region="mars")]), MODES, "alice")
    with pytest.raises(InvalidTicket) as err:
        validate(request(regions=[pb.RegionLatency(region="mars")]), MODES, "alice", served)
    assert (err.value.reason, err.value.field) == ("UNKNOWN_REGION", "regions[0].region")
    assert "eu-west, us-east" in str(err.value)
