"""The tick pipeline on plain data: inputs, lag-compensated combat, death, NPCs, snapshots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.client.prediction import Motion, Predictor
from tessera.common.config import Env
from tessera.game import Component, Module, Replication
from tessera.v1 import zone_pb2
from tessera.wire.geometry import Rect
from tessera.wire.snapshot import SnapshotReceiver
from tessera.zone import inputs
from tessera.zone.config import ZoneConfig
from tessera.zone.entities import DEAD, GHOST, PLAYER, Record
from tessera.zone.simulation import Frame, Growth, Simulation
from tessera.zone.snapshot import Acks

Kind = zone_pb2.PlayerEvent.Kind


def make(**env: str) -> Simulation:
    cfg = ZoneConfig.from_env(Env({"TESSERA_ZONE_BOUNDS": "-100,-100,100,100", **env}))
    assert cfg.bounds is not None
    return Simulation(cfg, area=cfg.bounds)


def inp(player: str, seq: int, **kw: float) -> inputs.Input:
    if "interp_delay_ms" in kw:
        kw["interp_ms"] = kw.pop("interp_delay_ms")
    return inputs.Input(player, seq, **kw)  # type: ignore[arg-type]


def test_inputs_are_dropped_by_reason_without_touching_state() -> None:
    sim = make()
    sim.add_player(entity_id=1, player_id="a", pos=(0, 0, 0), team=0)
    assert sim.submit(inp("ghost", 1), 0.0) == inputs.UNKNOWN_PLAYER
    assert sim.submit(inp("a", 1, move_x=math.nan), 0.0) == inputs.NAN
    assert sim.submit(inp("a", 2, move_z=1.0), 0.0) is None
    assert sim.submit(inp("a", 2, move_z=-1.0), 0.0) == inputs.DUPLICATE
    assert sim.submit(inp("a", 1, move_z=-1.0), 0.0) == inputs.OUT_OF_ORDER
    assert sim.ents.seen_seq[0] == 2 and sim.ents.queued[0] == 1
    assert sim.ents.q_values[0, 0, :2].tolist() == [0.0, 1.0]
    assert sim.counts["drop:nan"] == 1 and sim.counts["drop:duplicate"] == 1
    assert [e.detail for e in sim.events] == ["nan"]
    sim.submit(inp("a", 3, move_x=math.inf), 0.0)  # told at most once per second
    assert [e.detail for e in sim.events] == ["nan"] and sim.counts["drop:nan"] == 2


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_client_predicts_the_zone_however_the_network_bunches_its_inputs(seed: int) -> None:
    """One input sent per tick, each late by 0-2 ticks (in order): the zone applies
    one per tick, so the SDK's prediction of every input is the zone's position for
    it, and the client's own position is corrected at most twice (a tick with nothing
    buffered steps on the last intent; the zone's newest applying rule did 14-17)."""
    sim = make()
    sim.add_player(entity_id=1, player_id="a", pos=(0, 0, 0), team=0)
    limits = sim.cfg.limits
    predictor = Predictor(Motion(max_speed=limits.max_speed, accel=limits.accel))
    predictor.reconcile(sim.ents.pos[0].copy(), 0, sim.ents.vel[0].copy())
    rng = np.random.default_rng(seed)
    due: list[tuple[int, inputs.Input]] = []  # (arrival tick, input)
    errors: list[float] = []
    corrections = 0
    for tick in range(1, 61):
        move_x, yaw = 0.3 * math.sin(tick / 5), 0.05 * tick  # turning, strafing
        predictor.apply(tick, move_x, 1.0, yaw, sim.cfg.dt)
        arrive = max([tick + int(rng.integers(0, 3))] + [t for t, _ in due[-1:]])
        due.append((arrive, inp("a", tick, move_x=move_x, move_z=1.0, yaw=yaw)))
        for _, one in [d for d in due if d[0] == tick]:
            assert sim.submit(one, sim.now_s) is None
        due = [d for d in due if d[0] > tick]
        sim.step()
        e = sim.ents
        before = predictor.position
        assert before is not None
        error = predictor.reconcile(e.pos[0].copy(), int(e.last_seq[0]), e.vel[0].copy())
        after = predictor.position
        assert after is not None
        corrections += float(np.hypot(*(after - before)[[0, 2]])) > 0.01
        if error is not None:
            errors.append(error)
    assert len(errors) >= 55 and max(errors) < 1e-9 and corrections <= 2


def test_more_than_twice_the_tick_rate_is_dropped() -> None:
    sim = make(TESSERA_TICK_HZ="30")
    sim.add_player(entity_id=1, player_id="a", pos=(0, 0, 0), team=0)
    sim.ents.tokens_at[0] = 0.0
    accepted = 0
    for i in range(600):  # 600 inputs spread over 5 s = 120/s, twice the allowed 60/s
        accepted += sim.submit(inp("a", i + 1), 1.0 + i / 120) is None
    assert 290 <= accepted <= 320  # 60/s for 5 s plus the half-second burst
    assert sim.counts["drop:rate"] == 600 - accepted


def test_speed_hack_is_clamped_and_reported() -> None:
    sim = make()
    sim.add_player(entity_id=1, player_id="a", pos=(0, 0, 0), team=0)
    assert sim.submit(inp("a", 1, move_z=50.0), 0.0) is None
    frame = sim.step()
    assert [(e.kind, e.amount) for e in frame.events] == [(Kind.SPEED_CLAMPED, 49.0)]
    for _ in range(59):
        sim.step()
    assert sim.ents.pos[0, 2] <= sim.cfg.limits.max_speed * 2.0 + 1e-6
    assert sim.counts["speed_clamped"] == 1 and sim.ents.extra[1].speed_clamps == 1


def test_ranged_hit_is_validated_at_the_attackers_view_time() -> None:
    sim = make(TESSERA_MAX_REWIND_MS="250")
    sim.add_player(entity_id=1, player_id="shooter", pos=(0, 0, 0), team=0)
    sim.add_player(entity_id=2, player_id="runner", pos=(-3, 0, 20), team=0)
    sim.submit(inp("runner", 1, move_x=1.0), 0.0)  # strafes east at 6 m/s
    runner = sim.ents.index[2]
    while sim.ents.pos[runner, 0] < 1.0:  # until clear of the aim line (radius 0.6 m)
        sim.step()
    # The shooter aims straight north, where it saw the runner ~200 ms ago.
    sim.submit(inp("shooter", 1, actions=2, rtt_ms=100, interp_delay_ms=150), 0.0)
    frame = sim.step()
    assert sim.ents.health[runner] == 100.0 - sim.cfg.weapons.ranged_damage
    assert {(e.player_id, e.kind) for e in frame.events} >= {
        ("shooter", Kind.HIT_DEALT),
        ("runner", Kind.HIT_TAKEN),
    }
    # Without latency there is no rewind, and the same shot misses.
    for _ in range(10):
        sim.step()
    sim.submit(inp("shooter", 2, actions=2, rtt_ms=0, interp_delay_ms=0.001), 0.0)
    sim.step()
    assert sim.ents.health[runner] == pytest.approx(100.0 - sim.cfg.weapons.ranged_damage)


def test_death_respawn_and_team_immunity() -> None:
    sim = make()
    sim.add_player(entity_id=1, player_id="a", pos=(0, 0, 0), team=1)
    sim.add_player(entity_id=2, player_id="b", pos=(0, 0, 1.5), team=2)
    sim.add_player(entity_id=3, player_id="c", pos=(0, 0, -1.5), team=1)
    died_at = None
    for seq in range(1, 200):
        sim.submit(inp("a", seq, actions=1), seq / 10)
        frame = sim.step()
        if any(e.kind == Kind.DIED for e in frame.events):
            died_at = sim.tick
            break
    assert died_at is not None
    b = sim.ents.index[2]
    assert sim.ents.flags[b] & DEAD and sim.ents.health[b] == 0.0
    assert sim.ents.health[sim.ents.index[3]] == 100.0  # same team: never hit
    respawned = False
    for _ in range(int(sim.cfg.weapons.respawn_s * sim.cfg.tick_hz) + 2):
        respawned |= any(e.kind == Kind.RESPAWNED for e in sim.step().events)
    assert respawned and not sim.ents.flags[b] & DEAD and sim.ents.health[b] == 100.0


def test_npcs_wander_chase_and_show_up_in_snapshots() -> None:
    sim = make(TESSERA_AOI_CAP="16")
    sim.spawn_npcs(list(range(100, 110)))
    sim.add_player(entity_id=1, player_id="a", pos=(0, 0, 0), team=0)
    npc = sim.ents.index[100]
    sim.ents.pos[npc] = (5.0, 0.0, 0.0)
    sim.ents.home[npc] = (5.0, 0.0)
    sim.attach("a")
    rec = SnapshotReceiver()
    start = sim.ents.pos[:, [0, 2]].copy()
    for _ in range(30):
        frame = sim.step()
        b = frame.batch
        rec.apply(int(b.stream[0]), int(b.sequence[0]), int(b.baseline[0]), b.payloads[0])
        sim.ack("a", int(b.stream[0]), int(b.sequence[0]))
    assert np.linalg.norm(sim.ents.pos[npc, [0, 2]]) < 3.0  # chased the player
    moved = np.linalg.norm(sim.ents.pos[:, [0, 2]] - start, axis=1)
    assert (moved > 0.5).sum() >= 5
    assert 100 in rec.table().ids.tolist() and 1 in rec.table().ids.tolist()
    assert sim.ents.health[sim.ents.index[1]] < 100.0  # and hit it


def test_a_batch_of_acks_sets_the_baselines_of_attached_players() -> None:
    sim = make()
    for i, name in enumerate(("a", "b")):
        sim.add_player(entity_id=i + 1, player_id=name, pos=(0, 0, 0), team=0)
        sim.attach(name)
    b = sim.step().batch
    stream = b.stream.astype(np.int64)
    acks = Acks(["a", "nobody", "b", "b"], stream[[0, 0, 1, 1]], np.array([1, 1, 1, 9]))
    assert sim.ack_many(acks) == 2  # not an unknown player, nor a snapshot not yet sent
    assert not sim.step().batch.full.any()


def test_adopt_restores_state_clamped_into_the_area() -> None:
    sim = make()
    state = Record(
        entity_id=77,
        kind=PLAYER,
        player_id="h",
        position=(500.0, 0.0, -20.0),
        health=40.0,
        last_input_seq=12,
    )
    row = sim.adopt(state, epoch=4, now=0.0)
    assert sim.ents.pos[row, 0] < 100.0 and sim.ents.pos[row, 2] == -20.0
    assert sim.ents.extra[77].epoch == 4 and sim.ents.extra[77].restored
    assert sim.submit(inp("h", 12), 0.0) == inputs.DUPLICATE
    # The client's first packet to its new zone resends its newest inputs: a handed-off
    # player starts with a joining player's burst, so none is dropped for the rate.
    assert [sim.submit(inp("h", s), 0.0) for s in (13, 14, 15, 16)] == [None] * 4
    assert sim.export_player("h", "z").health == 40.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_corrupt_record_is_adopted_with_finite_state(bad: float) -> None:
    """NaN or inf in a checkpoint or handoff record never reaches entity state (nor
    the kernels): the entity spawns inside the area, still, facing 0, at full health."""
    sim = make()
    state = Record(
        entity_id=78,
        kind=PLAYER,
        player_id="c",
        position=(bad, 0.0, 3.0),
        velocity=(1.0, bad, 0.0),
        yaw=bad,
        health=bad,
    )
    row = sim.adopt(state, epoch=1, now=0.0)
    e = sim.ents
    a = sim.area
    assert np.isfinite(e.pos[row]).all()
    assert a.min_x <= e.pos[row, 0] < a.max_x and a.min_z <= e.pos[row, 2] < a.max_z
    assert e.vel[row].tolist() == [0.0, 0.0, 0.0] and e.yaw[row] == 0.0
    assert e.health[row] == 100.0
    sim.attach("c")
    frame = sim.step()
    assert frame.batch.entities.tolist() == [1]


_INTENTS = ("last_seq", "move", "yaw", "pitch", "actions", "rtt_ms", "interp_ms", "tokens")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), duplicates=st.booleans())
def test_submit_many_matches_one_at_a_time(seed: int, duplicates: bool) -> None:
    rng = np.random.default_rng(seed)
    one, many = make(), make()
    names = [f"p{i}" for i in range(6)]
    for sim in (one, many):
        for i, name in enumerate(names):
            sim.add_player(entity_id=i + 1, player_id=name, pos=(0.0, 0.0, 0.0), team=0)
        sim.ents.tokens[:] = 1.2  # a nearly empty bucket, so the rate limit is exercised
    specials = [math.nan, math.inf, -7.0, 1.5, 0.0, 3.0, 2 * math.pi + 1.0]
    now = 100.0
    for tick in range(8):
        now += float(rng.choice([0.0, 0.0, 0.001, 0.034, 1.0]))
        chosen = rng.choice(names, int(rng.integers(1, 7)), replace=duplicates)
        batch = []
        for name in chosen.tolist():
            vals = rng.uniform(-1.2, 1.2, 6)
            odd = rng.random(6) < 0.1
            vals[odd] = rng.choice(specials, int(odd.sum()))
            batch.append(
                inputs.Input(
                    player_id=name,
                    sequence=int(rng.integers(0, 4) + 2 * tick),
                    move_x=vals[0],
                    move_z=vals[1],
                    yaw=vals[2] * 5,
                    pitch=vals[3],
                    rtt_ms=abs(vals[4]) * 200,
                    interp_ms=float(rng.choice([0.0, 100.0, -1.0])),
                    actions=int(rng.choice([0, 1, 2, 4, 8])),
                    client_time_ms=vals[5],
                )
            )
        for item in batch:
            one.submit(item, now)
        many.submit_many(inputs.Inputs.of(batch), now)
        for name in _INTENTS:
            np.testing.assert_array_equal(getattr(many.ents, name), getattr(one.ents, name))
        assert many.counts == one.counts
        assert many.events == one.events
    assert one.counts["accepted"] > 0


def test_snapshot_clients_follow_attach_detach_and_row_moves() -> None:
    """The per-client arrays a tick reads stay true when entities swap rows
    (a removal moves the last row into the hole) and players come and go."""
    sim = make()
    for i, name in enumerate("abcd"):
        sim.add_player(entity_id=i + 1, player_id=name, pos=(float(i), 0.0, 0.0), team=0)
    for name in "bcd":
        sim.attach(name)
    sim.remove_player("a")  # d's entity moves into a's row
    sim.detach("b")
    frame = sim.step()
    assert sorted(frame.players) == ["c", "d"]
    for name in ("c", "d"):
        row = sim.attached[name]
        assert sim.viewer[row] == sim.ents.index[sim.ents.players[name]]
    assert sim.viewer[sim.viewer >= 0].size == 2 and not sim.fresh.any()
    sim.attach("b")  # re-attached: a fresh stream, in the next snapshot
    frame = sim.step()
    assert sorted(frame.players) == ["b", "c", "d"]
    assert frame.batch.full[frame.players.index("b")]


def test_reserved_snapshot_state_serves_a_burst_of_attaches_unchanged() -> None:
    """A zone adopting many players grows its per-client state once (reserve), not
    on each attach; what the players receive is the same as without it."""
    sims = [make(), make()]
    sims[1].reserve(40)
    arrays = sims[1].encoder.ids, sims[1].views.ids, sims[1].viewer
    for sim in sims:
        for i in range(40):
            pos = (float(i % 8) * 20 - 80, 0.0, float(i // 8) * 20 - 80)
            sim.add_player(entity_id=i + 1, player_id=f"p{i}", pos=pos, team=0)
            sim.attach(f"p{i}")
    assert (sims[1].encoder.ids, sims[1].views.ids, sims[1].viewer) == arrays
    assert sims[0].encoder.ids.shape[0] == 64  # grown on attach: 16 -> 32 -> 64
    frames = [sim.step() for sim in sims]
    assert frames[0].players == frames[1].players and len(frames[0].players) == 40
    for i in range(40):
        tables = [
            SnapshotReceiver().apply(
                int(f.batch.stream[i]), int(f.batch.sequence[i]), 0, f.batch.payloads[i]
            )
            for f in frames
        ]
        assert bool(frames[1].batch.full[i])
        np.testing.assert_array_equal(tables[0].table.ids, tables[1].table.ids)
        np.testing.assert_array_equal(tables[0].table.rows, tables[1].table.rows)


def test_rows_allocated_ahead_keep_what_the_zone_did_before_they_were_installed() -> None:
    """The zone allocates client rows on a worker thread and installs them later:
    players attached and snapshots acknowledged in between are carried over, and
    every client decodes the same as from a zone that grew by doubling on attach."""
    sims = [make(), make()]
    smaller, growth = sims[1].allocate(20), sims[1].allocate(64)
    assert sims[1].encoder.rows == 16  # nothing of the zone's changed yet
    receivers: list[dict[str, SnapshotReceiver]] = [{}, {}]

    def play(first: int, last: int, ticks: int) -> list[Frame]:
        for sim in sims:
            for i in range(first, last):
                pos = (float(i % 8) * 20 - 80, 0.0, float(i // 8) * 20 - 80)
                sim.add_player(entity_id=i + 1, player_id=f"p{i}", pos=pos, team=0)
                sim.attach(f"p{i}")
        frames: list[Frame] = []
        for _ in range(ticks):
            frames = [sim.step() for sim in sims]
            for sim, frame, got in zip(sims, frames, receivers, strict=True):
                b = frame.batch
                for i, player in enumerate(frame.players):
                    rec = got.setdefault(player, SnapshotReceiver())
                    rec.apply(
                        int(b.stream[i]), int(b.sequence[i]), int(b.baseline[i]), b.payloads[i]
                    )
                    assert sim.ack(player, int(b.stream[i]), int(b.sequence[i]))
        return frames

    play(0, 12, 3)
    sims[1].install(growth)
    assert (sims[1].encoder.rows, sims[1].encoder.spare) == (64, 52)
    assert sims[1].views.ids.shape[0] == 64 and sims[1].viewer.size >= 64
    frames = play(12, 40, 3)
    assert sims[1].encoder.rows == 64 and sims[0].encoder.rows == 64  # 16 -> 32 -> 64
    assert frames[0].players == frames[1].players and len(frames[0].players) == 40
    kept = [frames[1].players.index(f"p{i}") for i in range(12)]
    assert not frames[1].batch.full[kept].any()  # deltas on baselines kept through the install
    for player in frames[0].players:
        a, b = (got[player].tables[got[player].latest] for got in receivers)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.rows, b.rows)

    sims[1].install(smaller)  # allocated too, installed last: smaller than what is held
    assert sims[1].encoder.rows == 64 and sims[1].views.ids.shape[0] == 64
    assert sims[1].allocate(10) == Growth(10, None, None)


def test_a_tick_sends_replicated_components_clamped_and_counted() -> None:
    """A module's replicated component reaches a player's snapshots from the zone's
    own tick: the near-only one for the near entity, the all-tier one for both; a
    value beyond its bits arrives clamped and is counted."""
    module = Module(
        name="kit",
        components=(
            Component("charge", "int16", replicate=Replication(1.0, 8, ("near",))),
            Component("heat", "float32", replicate=Replication(0.5, 16)),
        ),
    )
    cfg = ZoneConfig.from_env(Env({"TESSERA_ZONE_BOUNDS": "-100,-100,100,100"}))
    sim = Simulation(cfg, area=Rect(-100, -100, 100, 100), module=module)
    sim.add_player(entity_id=1, player_id="a", pos=(0, 0, 0), team=0)
    sim.add_player(entity_id=2, player_id="b", pos=(70, 0, 0), team=0)
    sim.attach("a")
    charge, heat = sim.ents.columns["charge"], sim.ents.columns["heat"]
    charge[:2], heat[:2] = (300, -4), (2.5, 7.0)
    rec = SnapshotReceiver(schema=sim.replicated)
    frame = sim.step()
    b = frame.batch
    rec.apply(int(b.stream[0]), int(b.sequence[0]), int(b.baseline[0]), b.payloads[0])
    table = rec.table()
    assert table.components(table.index(1), sim.replicated) == {"charge": 127.0, "heat": 2.5}
    assert table.components(table.index(2), sim.replicated) == {"heat": 7.0}
    assert sim.counts["replication_clamped:charge"] == 1
    assert "replication_clamped:heat" not in sim.counts
    sim.ents.flags[sim.ents.index[2]] |= GHOST  # now a neighbour's: its values are not ours
    sim.ack("a", int(b.stream[0]), int(b.sequence[0]))
    for _ in range(6):  # a mid entity refreshes every 3rd tick
        b = sim.step().batch
        rec.apply(int(b.stream[0]), int(b.sequence[0]), int(b.baseline[0]), b.payloads[0])
        sim.ack("a", int(b.stream[0]), int(b.sequence[0]))
    table = rec.table()
    assert table.components(table.index(2), sim.replicated) == {}
    assert table.components(table.index(1), sim.replicated) == {"charge": 127.0, "heat": 2.5}


def resident_bytes(array: np.ndarray) -> int:
    """How much of the memory mappings that hold ``array`` is in RAM (/proc/self/smaps;
    a huge-page advice splits one allocation into several mappings)."""
    first, last = array.ctypes.data, array.ctypes.data + array.nbytes
    inside, rss = False, 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(part, 16) for part in head.split("-"))
            inside = start < last and first < end
        elif inside and head == "Rss:":
            rss += int(line.split()[1]) * 1024
    return rss


def test_reserved_snapshot_state_is_in_ram_before_any_tick_writes_it() -> None:
    """A zone reserves while the offers of players handed to it are held: the
    pages' first-touch faults (huge pages: milliseconds each on a busy machine)
    happen then, not in the first tick that sends those players full snapshots."""
    sim = make()
    sim.reserve(400)
    for array in (sim.encoder.vals, sim.encoder.valid, sim.views.sent):
        assert array.nbytes > 1 << 18  # large enough to be a mapping of its own
        assert resident_bytes(array) >= array.nbytes
