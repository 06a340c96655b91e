"""Synthetic players: hotspots and steering on plain data, the flag through records,
snapshots encoded and acknowledged in the tick, and real zone processes: a synthetic
player handed from one zone to the other stays synthetic and keeps moving; the
Join that creates one is refused unless the zone allows it and no relay serves it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from tessera.common.config import Env
from tessera.common.store import Client
from tessera.harness.synthetic import spawn
from tessera.harness.tokens import LOCAL
from tessera.harness.zones import World, ZoneSpec
from tessera.v1 import common_pb2, zone_pb2
from tessera.wire.geometry import Rect
from tessera.zone import audit, ghosts, synthetic
from tessera.zone.config import ZoneConfig
from tessera.zone.entities import DEAD, SYNTHETIC, Entities, export_state, spawn_state
from tessera.zone.simulation import Simulation
from tessera.zone.store import ZoneStore

WORLD = Rect(-200, -200, 200, 200)
STILL = synthetic.Hotspots(count=1, speed=0.0, spread=0.0, seed=11)  # at (101, 0.6)


def test_hotspots_are_the_same_for_every_caller_and_drift_with_time() -> None:
    hot = synthetic.Hotspots(count=3, speed=5.0, seed=7)
    now = synthetic.centres(WORLD, hot, 100.0)
    assert now.shape == (3, 2)
    assert np.array_equal(now, synthetic.centres(WORLD, hot, 100.0))
    later = synthetic.centres(WORLD, hot, 110.0)
    moved = np.hypot(*(later - now).T)
    assert (moved > 1.0).all() and (moved < 5.0 * 10.0 * 1.5).all(), moved
    # Always over the middle 70 % of the world.
    for t in np.linspace(0, 10_000, 50):
        c = synthetic.centres(WORLD, hot, float(t))
        assert (np.abs(c) <= 0.35 * 400 + 1e-9).all()


def test_each_player_keeps_its_attractor_and_offset() -> None:
    hot = synthetic.Hotspots(count=4, speed=0.0, spread=30.0, seed=1)
    ids = np.arange(1, 2001, dtype=np.uint64)
    where = synthetic.targets(ids, WORLD, hot, 0.0)
    centre = synthetic.centres(WORLD, hot, 0.0)[(ids % np.uint64(4)).astype(np.int64)]
    distance = np.hypot(*(where - centre).T)
    assert distance.max() <= 30.0 + 1e-9
    assert distance.std() > 3.0  # spread out, not piled on the centre
    assert np.array_equal(where, synthetic.targets(ids, WORLD, hot, 0.0))


def test_steering_heads_for_the_target_and_stops_there() -> None:
    ground = np.array([[0.0, 0.0], [10.0, 10.0], [5.0, 0.0]])
    target = np.array([[0.0, 50.0], [10.0, 10.5], [0.0, 0.0]])
    move, yaw = synthetic.steer(ground, target)
    assert move.tolist() == [[0.0, 1.0], [0.0, 0.0], [0.0, 1.0]]
    assert yaw[0] == pytest.approx(0.0) and yaw[2] == pytest.approx(-np.pi / 2)


def test_the_flag_travels_with_the_record_and_never_leaves_in_ghost_rows() -> None:
    ents = Entities()
    ents.add_player(5, "s", (1.0, 0.0, 2.0), flags=SYNTHETIC | DEAD)
    record = export_state(ents, 0, zone="west", epoch=3)
    assert record.flags & SYNTHETIC
    again = Entities()
    row = spawn_state(again, record, now_s=0.0)
    assert again.flags[row] == SYNTHETIC | DEAD
    batch = ghosts.encode(
        ids=ents.id[:1],
        pos=ents.pos[:1],
        vel=ents.vel[:1],
        yaw=ents.yaw[:1],
        health=ents.health[:1],
        team=ents.team[:1],
        kind=ents.kind[:1],
        flags=ents.flags[:1],
        map_version=1,
        sent_ms=0.0,
    )
    _version, _sent, rows = ghosts.decode(batch)
    assert int(rows["flags"][0]) == DEAD


def sim(**env: str) -> Simulation:
    cfg = ZoneConfig.from_env(
        Env(
            {
                "TESSERA_ZONE_BOUNDS": "-200,-200,200,200",
                "TESSERA_WORLD_BOUNDS": "-200,-200,200,200",
                "TESSERA_HOTSPOTS": "1",
                "TESSERA_HOTSPOT_SPEED_MPS": "0",
                "TESSERA_HOTSPOT_SPREAD_M": "0",
                "TESSERA_HOTSPOT_SEED": "11",
                **env,
            }
        )
    )
    assert cfg.bounds is not None
    return Simulation(cfg, area=cfg.bounds)


def test_a_synthetic_player_walks_to_its_hotspot_with_its_snapshots_acknowledged() -> None:
    s = sim()
    s.add_player(entity_id=1, player_id="syn", pos=(-50.0, 0.0, 0.0), team=0, synthetic=True)
    s.add_player(entity_id=2, player_id="real", pos=(-50.0, 0.0, 5.0), team=0)
    assert "syn" in s.attached and "real" not in s.attached
    s.attach("real")  # a real client that acknowledges nothing
    fulls = []
    sent = 0
    for _ in range(30):
        frame = s.step()
        at = frame.players.index("syn")
        fulls.append(bool(frame.batch.full[at]))
        assert frame.batch.full[1 - at]  # the real client's: never acknowledged
        sent += len(frame.batch.payloads[at])
    assert fulls[0] and not any(fulls[2:])  # acknowledged: deltas after the first
    assert s.counts["synthetic_snapshots"] == 30 and s.counts["synthetic_bytes"] == sent
    row, real = s.ents.index[1], s.ents.index[2]
    assert s.ents.pos[row, 0] > -50.0 + 1.0  # walking east, to (101, 0.6)
    assert s.ents.pos[real, 0] == -50.0  # the real player has no inputs: stays


FAST = {
    "TESSERA_MAX_SPEED_MPS": "60",
    "TESSERA_ACCEL_MPS2": "600",
    "TESSERA_SYNTHETIC": "true",
    "TESSERA_HOTSPOTS": "1",
    "TESSERA_HOTSPOT_SPEED_MPS": "0",
    "TESSERA_HOTSPOT_SPREAD_M": "0",
    "TESSERA_HOTSPOT_SEED": "11",
}
WEST, EAST = Rect(-200, -200, 0, 200), Rect(0, -200, 200, 200)


@pytest.fixture
async def world(redis_url: str, redis: Client) -> AsyncIterator[World]:
    w = World(redis, redis_url, env=FAST)
    w.world_bounds = WORLD
    yield w
    w.stop()


@pytest.mark.integration
async def test_handed_off_it_stays_synthetic_and_keeps_moving(world: World) -> None:
    await world.start_all([ZoneSpec("west", WEST), ZoneSpec("east", EAST)])
    store = ZoneStore(world.redis, world=world.world, zone="probe")
    west = world.procs["west"].grpc_address
    assert await spawn({"west": (west, Rect(-190, -10, -170, 10))}, ["syn-1"]) == ["syn-1"]
    xs = []
    async with asyncio.timeout(60):
        while True:
            state = (await store.load_checkpoints(["syn-1"]))["syn-1"]
            assert state.flags & SYNTHETIC, state
            if state.zone == "east":
                xs.append(state.position.x)
                if len(xs) >= 2 and xs[-1] > xs[0] + 5.0:
                    break
            await asyncio.sleep(0.2)
    report = await audit.settle(
        world.redis, world.world, world.addresses(), {"syn-1"}, channel=LOCAL.channel
    )
    assert report.ok and report.players == 1, report
    east = await world.status("east", entities=True)
    assert list(east.entity_players) == ["syn-1"]


@pytest.mark.integration
async def test_players_sent_to_a_zone_that_went_away_are_skipped(world: World) -> None:
    await world.start_all([ZoneSpec("west", WEST)])
    west = world.procs["west"].grpc_address
    store = ZoneStore(world.redis, world=world.world, zone="probe")
    with socket.socket() as bound:  # bound, not listening: a zone merged away since the look
        bound.bind(("127.0.0.1", 0))
        gone = f"127.0.0.1:{bound.getsockname()[1]}"
        zones = {
            "west": (west, Rect(-190, -10, -170, 10)),
            "gone": (gone, Rect(-190, 20, -170, 40)),
        }
        players = [f"syn-gone-{i}" for i in range(12)]
        joined = await spawn(zones, players, attempts=2)
    assert joined and set(joined) < set(players)  # some went west, the rest were skipped
    routes = {p: await store.route(p) for p in players}
    assert {p for p, r in routes.items() if r is not None and r.zone == "west"} == set(joined)
    assert all(routes[p] is None for p in set(players) - set(joined))


@pytest.mark.integration
async def test_the_spawn_control_refuses_without_the_setting_or_with_a_relay(
    redis_url: str, redis: Client
) -> None:
    w = World(redis, redis_url, env={"TESSERA_SYNTHETIC": "false"})
    try:
        await w.start_all([ZoneSpec("off", Rect(-100, -100, 100, 100))])
        channel, stub = w.stub("off")
        async with channel:
            request = zone_pb2.JoinRequest(player_id="p", spawn=common_pb2.Vec3(), synthetic=True)
            with pytest.raises(grpc.aio.AioRpcError) as off:
                await stub.Join(request)
            assert off.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "TESSERA_SYNTHETIC" in str(off.value.details())
        w.env["TESSERA_SYNTHETIC"] = "true"
        await w.start("on", Rect(100, -100, 200, 100))
        channel, stub = w.stub("on")
        async with channel:
            relayed = zone_pb2.JoinRequest(player_id="p", relay_id="relay-0", synthetic=True)
            with pytest.raises(grpc.aio.AioRpcError) as by_relay:
                await stub.Join(relayed)
            assert by_relay.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # A player the world knows (here: a real one) is never made synthetic.
            await stub.Join(zone_pb2.JoinRequest(player_id="real", relay_id="relay-0"))
            again = zone_pb2.JoinRequest(player_id="real", synthetic=True)
            with pytest.raises(grpc.aio.AioRpcError) as known:
                await stub.Join(again)
            assert known.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert (await w.status("off")).players == 0
        assert (await w.status("on")).players == 1
    finally:
        w.stop()
