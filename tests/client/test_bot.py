"""Bot movement patterns and fighting."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from tessera.client.bot import (
    ACTION_MELEE,
    ACTION_RANGED,
    Arms,
    Bot,
    BotState,
    attack,
    follow_the_crowd,
    hotspot,
    nearest,
    random_walk,
    towards,
    waypoints,
)
from tessera.client.client import GameClient, Intent
from tessera.client.transport import UdpTransport
from tessera.client.world import Frame, WorldView
from tessera.wire.snapshot import COLUMNS, EntityTable, Quantization, X


def state(seed: int = 1) -> BotState:
    return BotState(random.Random(seed))


def test_towards_unit_speed_and_slowing_on_arrival() -> None:
    far = towards(np.zeros(3), (10.0, 0.0, 0.0))
    assert (far.move_x, far.move_z) == pytest.approx((1.0, 0.0))
    near = towards(np.zeros(3), (0.0, 0.0, 0.5))
    assert near.move_z == pytest.approx(0.5)
    assert towards(np.zeros(3), (0.0, 0.0, 0.0)).move_x == 0.0


def test_random_walk_is_unit_and_deterministic_per_seed() -> None:
    a, b = state(7), state(7)
    moves_a = [random_walk(a, np.zeros(3), []) for _ in range(60)]
    moves_b = [random_walk(b, np.zeros(3), []) for _ in range(60)]
    assert moves_a == moves_b
    assert all(math.hypot(m.move_x, m.move_z) == pytest.approx(1.0) for m in moves_a)
    assert len({(round(m.move_x, 3), round(m.move_z, 3)) for m in moves_a}) > 1


def test_waypoints_advance_when_reached() -> None:
    pattern = waypoints([(10.0, 0.0), (10.0, 10.0)])
    s = state()
    first = pattern(s, np.zeros(3), [])
    assert first.move_x == pytest.approx(1.0)
    second = pattern(s, np.array([10.0, 0.0, 0.2]), [])
    assert s.waypoint == 1 and second.move_z == pytest.approx(1.0)


def test_follow_the_crowd_heads_for_the_centroid() -> None:
    intent = follow_the_crowd(state(), np.zeros(3), [np.array([4.0, 0, 0]), np.array([4.0, 0, 2])])
    assert intent.move_x > 0.9 and intent.move_z > 0.2


def test_hotspot_targets_stay_within_radius() -> None:
    pattern = hotspot((50.0, 50.0), radius_m=5.0)
    s = state()
    for _ in range(100):
        pattern(s, np.zeros(3), [])
        assert math.hypot(s.extra["tx"] - 50.0, s.extra["tz"] - 50.0) <= 5.0
    intent = pattern(s, np.zeros(3), [])
    assert intent.move_x > 0.5 and intent.move_z > 0.5


def facing(intent: Intent) -> tuple[float, float]:
    """The world-frame move of an intent (the zone's rotation by yaw)."""
    s, c = math.sin(intent.yaw), math.cos(intent.yaw)
    return intent.move_x * c + intent.move_z * s, -intent.move_x * s + intent.move_z * c


def test_attack_faces_the_target_and_keeps_the_walk() -> None:
    arms = Arms()
    walk = Intent(move_x=0.6, move_z=0.8)
    me = np.zeros(3)
    assert attack(me, walk, None, arms) == walk
    assert attack(me, walk, np.array([0.0, 0.0, 41.0]), arms) == walk  # out of range
    close = attack(me, walk, np.array([1.0, 0.0, 1.0]), arms)
    assert close.actions == ACTION_MELEE
    assert close.yaw == pytest.approx(math.pi / 4)
    assert facing(close) == pytest.approx((0.6, 0.8))
    far = attack(me, walk, np.array([-30.0, 0.0, 0.0]), arms)
    assert far.actions == ACTION_RANGED
    assert far.yaw == pytest.approx(-math.pi / 2)
    assert facing(far) == pytest.approx((0.6, 0.8))
    # Aimed from eye height (1.5 m) at the body centre (1 m): 0.5 m down over 30 m.
    assert math.tan(far.pitch) == pytest.approx(-0.5 / 30.0)


def test_ranged_aim_hits_the_zone_s_target_sphere() -> None:
    """The aim ray (the zone's formula) passes within the body radius of the target."""
    me, target = np.array([5.0, 0.0, 5.0]), np.array([25.0, 0.0, -10.0])
    aim = attack(me, Intent(), target, Arms())
    d = np.array(
        [
            math.sin(aim.yaw) * math.cos(aim.pitch),
            math.sin(aim.pitch),
            math.cos(aim.yaw) * math.cos(aim.pitch),
        ]
    )
    oc = target + np.array([0.0, 1.0, 0.0]) - (me + np.array([0.0, 1.5, 0.0]))
    miss = np.linalg.norm(oc - (oc @ d) * d)
    assert miss < 1e-9


def test_nearest_skips_itself() -> None:
    positions = np.array([[0.0, 0, 0], [5.0, 0, 0], [0.0, 9, 2], [-3.0, 0, -3]])
    assert nearest(positions, 0) == 2  # on the ground: height does not count
    assert nearest(positions, 1) == 0
    assert nearest(positions[:1], 0) is None


def test_fighting_duty_cycle() -> None:
    arms = Arms(duty=0.4, cycle_s=10.0)
    share = np.mean([arms.fighting(t / 10, 0.3) for t in range(1000)])
    assert share == pytest.approx(0.4, abs=0.01)
    assert arms.fighting(0.0, 0.0) and not arms.fighting(5.0, 0.0)
    assert arms.fighting(5.0, 0.55)  # another phase, another window


def test_bot_looks_once_per_decoded_snapshot_and_attacks_the_nearest() -> None:
    client = GameClient(UdpTransport(), input_hz=30.0, predict=False)
    world = client.world = WorldView(Quantization(), entity_id=7)
    step = Quantization().position_step_m
    rows = np.zeros((3, COLUMNS), np.int32)
    rows[:, X] = [0, round(1.5 / step), round(20 / step)]  # entities 7 (self), 8, 9
    world.frames.append(Frame(0.0, 1, EntityTable(np.array([7, 8, 9], np.uint64), rows)))
    world.applied = 1
    bot = Bot(client, lambda s, p, o: Intent(move_z=1.0), arms=Arms(duty=1.0))
    intent = bot(client)
    assert bot.position is not None and bot.target is not None
    assert bot.target[0] == pytest.approx(1.5, abs=step)
    assert intent.actions == ACTION_MELEE and intent.yaw == pytest.approx(math.pi / 2)
    world.frames[-1].table.rows[1, X] = round(30 / step)  # moved, but not a new snapshot
    bot(client)
    assert bot.target[0] == pytest.approx(1.5, abs=step)
    world.applied = 2
    assert bot(client).actions == ACTION_RANGED and bot.target[0] == pytest.approx(20, abs=step)
    assert Bot(client, random_walk)(client).actions == 0  # without arms: no attack
