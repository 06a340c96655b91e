"""Combat geometry, the position history, rewind limits and combat applied to entities."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_an_attack_that_waited_in_the_input_buffer_rewinds_that_much_further() -> None:
    ents = Entities()
    ents.add_player(1, "a", (0.0, 0.0, 0.0), rtt_ms=100.0, interp_ms=100.0)
    ents.add(2, NPC, (0.0, 0.0, 0.0), rtt_ms=100.0, interp_ms=100.0, waited=2)
    tick = {"tick_ms": 1000 / 30, "max_rewind_ms": 250.0}
    assert combat._rewind(ents, 0, **tick) == 4
    ents.waited[0] = 2
    assert combat._rewind(ents, 0, **tick) == 6
    ents.waited[0] = 9
    assert combat._rewind(ents, 0, **tick) == 7  # still capped
    assert combat._rewind(ents, 1, **tick) == 0  # NPCs see the present


def hit_of(attack: int, origin: np.ndarray, targets: np.ndarray) -> int | None:
    """The index of the target an attack at yaw 0, pitch 0 hits, all eligible."""
    hit = combat.resolve(
        attacker=0,
        attack=attack,
        origin=origin,
        yaw=0.0,
        pitch=0.0,
        candidate_ids=np.arange(targets.shape[0], dtype=np.uint64),
        candidate_pos=targets,
        eligible=np.ones(targets.shape[0], np.bool_),
        weapons=W,
    )
    return None if hit is None else hit.target


def test_melee_cone_and_range() -> None:
    """Within 2.5 m and 60 degrees of the facing (+z): the nearest such target."""
    targets = np.array([[0.0, 0, 2.0], [0.0, 0, -2.0], [2.0, 0, 0.5], [0.0, 0, 3.0], [1.0, 0, 1.0]])
    assert hit_of(combat.MELEE, np.zeros(3), targets) == 4  # at 1.41 m, before 0 at 2 m
    assert hit_of(combat.MELEE, np.zeros(3), targets[[0, 1, 2, 3]]) == 0
    assert hit_of(combat.MELEE, np.zeros(3), targets[[1, 2, 3]]) is None  # behind, aside, far


def test_ray_hits_nearest_sphere_only_in_front() -> None:
    feet = np.array([[0.0, 0.5, 10.0], [0.0, 0.5, 5.0], [0.0, 0.5, -5.0], [3.0, 0.5, 5.0]])
    assert hit_of(combat.RANGED, np.zeros(3), feet) == 1
    assert hit_of(combat.RANGED, np.zeros(3), feet[[0, 2, 3]]) == 0
    assert hit_of(combat.RANGED, np.zeros(3), feet[[2, 3]]) is None  # behind, beside the ray
    far = np.array([[0.0, 0.5, W.ranged_range + W.ranged_radius + 0.01]])
    assert hit_of(combat.RANGED, np.zeros(3), far) is None


def resolve_oracle(
    attack: int, origin: np.ndarray, *, yaw: float, pitch: float, pos: np.ndarray, ok: np.ndarray
) -> int:
    """The numpy rule kernels.aim replaced (combat.resolve at git a62f0e4): the index hit, or -1."""
    if pos.shape[0] == 0 or not ok.any():
        return -1
    if attack == combat.MELEE:
        d = pos[:, [0, 2]] - origin[[0, 2]]
        dist = np.linalg.norm(d, axis=1)
        facing = np.array([math.sin(yaw), math.cos(yaw)])
        cos_angle = (d @ facing) / np.maximum(dist, 1e-9)
        in_cone = (cos_angle >= math.cos(W.melee_half_angle)) | (dist < 0.3)
        hits = (dist <= W.melee_range) & in_cone & ok
        return int(np.argmin(np.where(hits, dist, np.inf))) if hits.any() else -1
    eye = origin + np.array([0.0, combat.EYE_HEIGHT, 0.0])
    oc = pos + np.array([0.0, combat.BODY_CENTER, 0.0]) - eye
    ray = np.array(
        [math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)]
    )
    along = oc @ ray
    inside = W.ranged_radius**2 - (np.einsum("ij,ij->i", oc, oc) - along**2)
    t = along - np.sqrt(np.maximum(inside, 0.0))
    t = np.where((inside >= 0) & (along >= 0), np.maximum(t, 0.0), np.inf)
    t = np.where(ok & (t <= W.ranged_range), t, np.inf)
    best = int(np.argmin(t))
    return best if math.isfinite(float(t[best])) else -1


@settings(max_examples=150, deadline=None)
@given(
    attack=st.sampled_from([combat.MELEE, combat.RANGED]),
    n=st.integers(0, 40),
    spread=st.sampled_from([0.0, 1.0, 3.0, 70.0]),
    yaw=st.floats(-4.0, 4.0),
    pitch=st.floats(-1.5, 1.5),
    seed=st.integers(0, 2**32 - 1),
)
def test_aim_matches_the_numpy_oracle(
    *, attack: int, n: int, spread: float, yaw: float, pitch: float, seed: int
) -> None:
    """Empty and ineligible sets, every target at one point (spread 0), crowds
    and far-flung targets: the kernel hits what the numpy rule hit."""
    rng = np.random.default_rng(seed)
    origin = rng.uniform(-5, 5, 3)
    pos = origin + rng.uniform(-spread, spread, (n, 3)) * np.array([1.0, 0.2, 1.0])
    ok = rng.random(n) < 0.8
    want = resolve_oracle(attack, origin, yaw=yaw, pitch=pitch, pos=pos, ok=ok)
    hit = combat.resolve(
        attacker=7,
        attack=attack,
        origin=origin,
        yaw=yaw,
        pitch=pitch,
        candidate_ids=np.arange(100, 100 + n, dtype=np.uint64),
        candidate_pos=pos,
        eligible=ok,
        weapons=W,
    )
    assert (-1 if hit is None else int(hit.target) - 100) == want
    if hit is not None:
        assert hit.attack == attack and hit.attacker == 7


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


def test_stats_tally_hits_kills_and_deaths_on_the_players() -> None:
    ents, history = arena()
    a, b = ents.extra[1], ents.extra[2]
    ents.actions[0] = combat.MELEE
    fight(ents, history, 10.0, [], Counter())
    assert (a.hits_dealt, a.hits_taken, b.hits_dealt, b.hits_taken) == (1, 0, 0, 1)
    counts: Counter[str] = Counter()
    combat.take_hit(ents, 1, 1, 150.0, now=11.0, respawn_s=3.0, events=[], counts=counts)
    assert (a.kills, a.deaths, b.kills, b.deaths) == (1, 0, 0, 1)
    assert (a.hits_dealt, b.hits_taken) == (2, 2)
    ents.flags[1] &= ~DEAD
    ents.health[1] = MAX_HEALTH
    combat.take_hit(ents, 1, 3, 150.0, now=12.0, respawn_s=3.0, events=[], counts=counts)
    assert (a.kills, b.deaths, b.hits_taken) == (1, 2, 3)  # an NPC's kill credits nobody
    ents.flags[1] = GHOST  # alive again, now owned by a neighbour
    ents.actions[0] = combat.MELEE
    fight(ents, history, 20.0, [], Counter())  # forwarded: dealt here, taken over there
    assert (a.hits_dealt, b.hits_taken, a.kills) == (3, 3, 1)
