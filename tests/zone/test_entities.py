"""Entity storage: ids, swap-remove, growth, durable state round trip, match context."""

from __future__ import annotations

import pytest

from tessera.v1 import zone_pb2
from tessera.zone.entities import DEAD, NPC, Entities, enter_match, export_state, spawn_state


def test_swap_remove_keeps_index_consistent_and_grows() -> None:
    ents = Entities(capacity=2)
    for i in range(10):
        ents.add(100 + i, NPC, (float(i), 0.0, 0.0))
    assert ents.capacity >= 10 and len(ents) == 10
    ents.remove(100)
    ents.remove(105)
    assert len(ents) == 8
    for eid, row in ents.index.items():
        assert int(ents.id[row]) == eid
        assert ents.pos[row, 0] == eid - 100
    with pytest.raises(ValueError, match="exists"):
        ents.add(101, NPC, (0.0, 0.0, 0.0))


def test_players_are_found_by_account_and_forgotten_on_remove() -> None:
    ents = Entities()
    ents.add_player(7, "ann", (1.0, 0.0, 2.0), team=3)
    assert ents.row_of_player("ann") == 0 and ents.team[0] == 3
    with pytest.raises(ValueError, match="already"):
        ents.add_player(8, "ann", (0.0, 0.0, 0.0))
    ents.remove(7)
    assert ents.row_of_player("ann") is None and not ents.extra


def test_export_then_spawn_round_trips_durable_state() -> None:
    ents = Entities()
    row = ents.add_player(42, "bo", (3.0, 1.0, -4.0), health=55.0, flags=DEAD, last_seq=9)
    ents.extra[42].blob = b"inv"
    ents.extra[42].data_version, ents.extra[42].speed_clamps, ents.extra[42].teleports = 6, 2, 1
    ents.extra[42].kills, ents.extra[42].deaths = 5, 4
    ents.extra[42].hits_dealt, ents.extra[42].hits_taken = 30, 20
    state = export_state(ents, row, zone="z", epoch=3)
    assert state.kind == zone_pb2.ENTITY_KIND_PLAYER and state.epoch == 3
    other = Entities()
    new = spawn_state(other, state, now_s=10.0)
    assert other.players["bo"] == 42
    assert tuple(other.pos[new]) == (3.0, 1.0, -4.0)
    assert other.health[new] == 55.0 and other.last_seq[new] == 9
    assert other.flags[new] & DEAD and other.respawn_at[new] == 10.0
    assert other.extra[42].blob == b"inv"
    # The row version, the anti-cheat tallies and the stats travel with the entity.
    extra = other.extra[42]
    assert (extra.data_version, extra.speed_clamps, extra.teleports) == (6, 2, 1)
    assert (extra.kills, extra.deaths, extra.hits_dealt, extra.hits_taken) == (5, 4, 30, 20)


def test_a_match_context_replaces_the_team_and_travels_with_the_entity() -> None:
    ents = Entities()
    ents.add(5, NPC, (0.0, 0.0, 0.0))
    row = ents.add_player(42, "bo", (0.0, 0.0, 0.0), team=7)
    enter_match(ents, 42, match_id="m-1", team=2, role="tank")
    assert ents.team[row] == 2 and ents.team[ents.index[5]] == 0
    assert (ents.extra[42].match_id, ents.extra[42].role) == ("m-1", "tank")
    state = export_state(ents, row, zone="inst-m-1", epoch=1)
    assert (state.team, state.match_id, state.role) == (2, "m-1", "tank")
    other = Entities()
    new = spawn_state(other, state, now_s=0.0)
    assert other.team[new] == 2
    assert (other.extra[42].match_id, other.extra[42].role) == ("m-1", "tank")
    # The next match replaces all three.
    enter_match(other, 42, match_id="m-2", team=1, role="")
    assert (other.team[new], other.extra[42].match_id, other.extra[42].role) == (1, "m-2", "")
