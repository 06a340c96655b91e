"""Combat geometry, the position history and rewind limits."""

from __future__ import annotations

import math

import numpy as np

from tessera.zone import combat

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
