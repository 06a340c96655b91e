"""Combat geometry, the position history, rewind limits and combat applied to entities."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from tessera.zone import combat
from tessera.zone.entities import DEAD, GHOST, MAX_HEALTH, NPC, Entities, Extra
from tessera.zone.events import DIED, HIT_DEALT, HIT_TAKEN, RESPAWNED, Event

W = combat.Weapons()


def test_history_keeps_one_row_per_tick_and_falls_back_to_oldest() -> None:
    h = combat.History(length=4, capacity=1)
    for tick in range(1, 7):
        h.record(tick, np.arange(tick, dtype=np.uint64), np.full((tick, 3), float(tick)))
    ids, pos = h.at(6)
    assert ids.size == 6 and pos[0, 0] == 6.0
    ids, pos = h.at(4)
    assert ids.size == 4 and pos[0, 0] == 4.0
    ids, pos = h.at(1)  # gone: oldest held is tick 3
    assert ids.size == 3 and pos[0, 0] == 3.0


def test_rewind_is_latency_plus_interpolation_capped() -> None:
    assert combat.rewind_ticks(100.0, 100.0, tick_ms=1000 / 30, max_rewind_ms=250.0) == 4
    assert combat.rewind_ticks(2000.0, 100.0, tick_ms=1000 / 30, max_rewind_ms=250.0) == 7
    assert combat.rewind_ticks(0.0, 0.0, tick_ms=1000 / 30, max_rewind_ms=250.0) == 0


def test_melee_cone_and_range() -> None:
    targets = np.array([[0.0, 0, 2.0], [0.0, 0, -2.0], [2.0, 0, 0.5], [0.0, 0, 3.0], [1.0, 0, 1.0]])
    hits = combat.melee_targets(np.zeros(3), 0.0, targets, W)
    assert hits.tolist() == [True, False, False, False, True]


def test_ray_hits_nearest_sphere_only_in_front() -> None:
    centers = np.array([[0.0, 1.5, 10.0], [0.0, 1.5, 5.0], [0.0, 1.5, -5.0], [3.0, 1.5, 5.0]])
    t = combat.ray_distances(np.array([0.0, 1.5, 0.0]), 0.0, 0.0, centers, 0.6)
    assert t[1] < t[0] < math.inf and math.isinf(t[2]) and math.isinf(t[3])
    assert t[1] == np.float64(4.4)


def test_resolve_uses_the_given_rewound_positions() -> None:
    ids = np.array([1, 2, 3], np.uint64)
    past = np.array([[0.0, 0, 0.0], [0.0, 0, 20.0], [0.0, 0, 30.0]])
    eligible = np.array([False, True, True])
    hit = combat.resolve(
        attacker=1,
        attack=combat.RANGED,
        origin=past[0],
        yaw=0.0,
        pitch=0.0,
        candidate_ids=ids,
        candidate_pos=past,
        eligible=eligible,
        weapons=W,
    )
    assert hit is not None and hit.target == 2 and hit.damage == W.ranged_damage
    moved = past.copy()
    moved[1, 0] = 5.0  # target 2 stepped aside: the shot goes on to 3
    hit = combat.resolve(
        attacker=1,
        attack=combat.RANGED,
        origin=past[0],
        yaw=0.0,
        pitch=0.0,
        candidate_ids=ids,
        candidate_pos=moved,
        eligible=eligible,
        weapons=W,
    )
    assert hit is not None and hit.target == 3


def test_regeneration_only_out_of_combat() -> None:
    health = np.array([50.0, 50.0, 99.99, 0.0])
    dead = np.array([False, False, False, True])
    combat_at = np.array([0.0, 8.0, 0.0, 0.0])
    out = combat.regenerate(health, dead, combat_at, now_s=10.0, dt=1.0, weapons=W, max_health=100)
    assert out.tolist() == [55.0, 50.0, 100.0, 0.0]


def arena() -> tuple[Entities, combat.History]:
    """Player 1 facing north at the origin, player 2 one metre in front, NPC 3 behind."""
    ents = Entities()
    ents.add_player(1, "a", (0.0, 0.0, 0.0))
    ents.add_player(2, "b", (0.0, 0.0, 1.0))
    ents.add(3, NPC, (0.0, 0.0, -10.0))
    ents.extra[3] = Extra()
    history = combat.History(4)
    history.record(1, ents.id[: ents.n], ents.pos[: ents.n])
    return ents, history


def fight(
    ents: Entities,
    history: combat.History,
    now: float,
    events: list[Event],
    counts: Counter[str],
) -> list[combat.Forwarded]:
    alive = (ents.flags[: ents.n] & DEAD) == 0
    return combat.fight(
        ents,
        alive,
        tick=1,
        now=now,
        tick_ms=1000 / 30,
        history=history,
        weapons=W,
        max_rewind_ms=250.0,
        events=events,
        counts=counts,
    )


def test_fight_applies_melee_once_per_cooldown() -> None:
    ents, history = arena()
    ents.actions[0] = combat.MELEE
    events: list[Event] = []
    counts: Counter[str] = Counter()
    assert fight(ents, history, 10.0, events, counts) == []
    assert ents.health[1] == 100.0 - W.melee_damage and ents.melee_ready[0] == 10.5
    assert [(e.player_id, e.kind, e.other, e.detail) for e in events] == [
        ("a", HIT_DEALT, 2, "melee"),
        ("b", HIT_TAKEN, 1, "melee"),
    ]
    fight(ents, history, 10.1, events, counts)  # still cooling down
    assert counts["hits"] == 1 and ents.health[1] == 100.0 - W.melee_damage


def test_hits_on_ghosts_are_forwarded_not_applied() -> None:
    ents, history = arena()
    ents.flags[1] |= GHOST
    ents.actions[0] = combat.MELEE
    events: list[Event] = []
    out = fight(ents, history, 0.0, events, Counter())
    assert out == [combat.Forwarded(2, 1, combat.MELEE, W.melee_damage, 0.0, 0.0)]
    assert [(e.player_id, e.kind, e.detail) for e in events] == [("a", HIT_DEALT, "melee")]
    assert ents.health[1] == 100.0


def test_take_hit_kills_then_recover_respawns_at_home() -> None:
    ents, _ = arena()
    ents.home[1] = (5.0, 6.0)
    events: list[Event] = []
    counts: Counter[str] = Counter()
    combat.take_hit(ents, 1, 3, 150.0, now=2.0, respawn_s=3.0, events=events, counts=counts)
    assert ents.flags[1] & DEAD and ents.health[1] == 0.0 and ents.respawn_at[1] == 5.0
    assert [(e.kind, e.other) for e in events] == [(HIT_TAKEN, 3), (DIED, 3)]  # NPCs get no events
    assert counts["deaths"] == 1
    ghost = np.zeros(ents.n, bool)
    combat.recover(ents, ghost, now=4.9, dt=0.1, weapons=W, events=events)
    assert ents.flags[1] & DEAD
    combat.recover(ents, ghost, now=5.0, dt=0.1, weapons=W, events=events)
    assert not ents.flags[1] & DEAD and ents.health[1] == MAX_HEALTH
    assert ents.pos[1].tolist() == [5.0, 0.0, 6.0] and events[-1].kind == RESPAWNED


def test_recover_leaves_ghosts_alone() -> None:
    ents, _ = arena()
    ents.health[:3] = 50.0
    ghost = np.array([False, True, False])
    combat.recover(ents, ghost, now=100.0, dt=1.0, weapons=W, events=[])
    assert ents.health[:3].tolist() == [55.0, 50.0, 55.0]
