"""Compiled kernels: golden payload hashes, the tier rule, interest, NPC chase and
movement and the input buffer against numpy oracles, and the whole encode path over entity counts
0..cap and degenerate positions."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from tessera.common.config import Env
from tessera.wire.geometry import Rect
from tessera.wire.snapshot import COLUMNS, SnapshotReceiver, X, Z
from tessera.zone import inputs, kernels
from tessera.zone.config import ZoneConfig
from tessera.zone.entities import INPUT_QUEUE, Entities
from tessera.zone.interest import Due, Tiers, Views, due, visible
from tessera.zone.movement import Limits, integrate
from tessera.zone.simulation import Simulation, warm_up
from tessera.zone.snapshot import PAD, SnapshotEncoder


def scenario(*, players: int, npcs: int, ticks: int, cap: int, every: int, seed: int) -> str:
    """SHA-256 of every payload of a fixed-seed run: players walk and turn at random
    (some attack), each acknowledging its snapshots three ticks late."""
    cfg = ZoneConfig.from_env(
        Env(
            {
                "TESSERA_ZONE_BOUNDS": "-150,-150,150,150",
                "TESSERA_AOI_CAP": str(cap),
                "TESSERA_SNAPSHOT_EVERY": str(every),
                "TESSERA_TICK_BUDGET_MS": "1000",
            }
        )
    )
    assert cfg.bounds is not None
    sim = Simulation(cfg, area=cfg.bounds, seed=seed)
    rng = np.random.default_rng(seed)
    sim.spawn_npcs(list(range(10_000, 10_000 + npcs)))
    names = [f"p{i}" for i in range(players)]
    for i, name in enumerate(names):
        x, z = rng.uniform(-60, 60, 2)
        sim.add_player(entity_id=i + 1, player_id=name, pos=(x, 0.0, z), team=i % 3)
        sim.attach(name)
    h = hashlib.sha256()
    pending: list[tuple[list[str], list[int], list[int]]] = []
    clock = 1000.0
    for t in range(ticks):
        yaw = rng.uniform(0, 2 * np.pi, players)
        move = rng.uniform(-1, 1, (players, 2))
        act = np.where(rng.random(players) < 0.05, 2, 0)
        batch = [
            inputs.Input(name, t + 1, move[i, 0], move[i, 1], yaw[i], 0.0, int(act[i]), 80.0, 100.0)
            for i, name in enumerate(names)
        ]
        sim.submit_many(inputs.Inputs.of(batch), clock + t * cfg.dt)
        frame = sim.step()
        for p in frame.batch.payloads:
            h.update(len(p).to_bytes(4, "little") + p)
        pending.append((frame.players, frame.batch.stream.tolist(), frame.batch.sequence.tolist()))
        if len(pending) > 3:
            who, streams, seqs = pending.pop(0)
            for player, stream, seq in zip(who, streams, seqs, strict=True):
                sim.ack(player, stream, seq)
    return h.hexdigest()


# Digests of the numpy encoder this kernel code replaced (git a6e8a68), run with
# the same scenario: the payloads are byte for byte what they were.
GOLDEN = {
    (40, 30, 45, 100, 1): "2205aed39e3eb84e222b1fe43774a0a80cd1b4e4aa0725d18f4b00b31978f7e0",
    (60, 0, 45, 16, 2): "3ccb43f0d8dfdc5f1517577a96abb72044b5ed1c406880802d7f16e6bf5489fd",
    (25, 60, 40, 1024, 1): "7a270fee5b66273e879788900798b890b5f75cb398ff8672b18af52d8682e131",
}


@pytest.mark.parametrize(("players", "npcs", "ticks", "cap", "every"), list(GOLDEN))
def test_payloads_match_the_golden_digests(
    players: int, npcs: int, ticks: int, cap: int, every: int
) -> None:
    digest = scenario(players=players, npcs=npcs, ticks=ticks, cap=cap, every=every, seed=5)
    assert digest == GOLDEN[players, npcs, ticks, cap, every]


def due_oracle(
    dist2: np.ndarray, rows: np.ndarray, ids: np.ndarray, beat: int, tiers: Tiers
) -> np.ndarray:
    """The numpy tier rule the compiled schedule replaced (interest.due at git a6e8a68)."""
    phase = (ids + np.uint64(beat)).astype(np.int64)
    code = ((phase % tiers.mid_every == 0) | ((phase % tiers.far_every == 0) << 1)).astype(np.uint8)
    pair = code[rows]
    out: np.ndarray = (dist2 <= tiers.near**2) | (pair >= 2)
    out |= (dist2 <= tiers.mid**2) & ((pair & 1) != 0)
    return out


CAP = 12


def take_due(views: Views, plan: Due) -> np.ndarray:
    """Apply the tier schedule as a tick does (through the encoder, whose rows
    0..C-1 are the clients' view rows); the slots holding an entity."""
    encoder = SnapshotEncoder(views.cap)
    for _ in range(plan.clients.size):
        encoder.open()
    encoder.encode_due(views, plan, last_input_seq=np.zeros(plan.clients.size, np.int64))
    return plan.valid


coord = st.floats(-300.0, 300.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 3 * CAP),
    clients=st.integers(0, 4),
    one_point=st.booleans(),
    beat=st.integers(0, 50),
    seed=st.integers(0, 2**32 - 1),
    x=coord,
    z=coord,
)
def test_the_tier_schedule_matches_the_numpy_oracle(
    *, n: int, clients: int, one_point: bool, beat: int, seed: int, x: float, z: float
) -> None:
    rng = np.random.default_rng(seed)
    tiers = Tiers(cap=CAP)
    pos = np.zeros((n, 3))
    pos[:, 0] = x if one_point else rng.uniform(-300, 300, n)
    pos[:, 2] = z if one_point else rng.uniform(-300, 300, n)
    ids = rng.choice(2**40 - 2, n, replace=False).astype(np.uint64) if n else np.zeros(0, np.uint64)
    table = rng.integers(-1000, 1000, (n, COLUMNS)).astype(np.int32)
    views = Views(CAP, COLUMNS, PAD)
    rows = np.full((clients, CAP), -1, np.int64)
    for c in range(clients):
        views.reset(c)
        k = int(rng.integers(0, min(n, CAP) + 1))
        rows[c, :k] = rng.choice(n, k, replace=False) if k else []
    views.rows[:clients] = rows
    views.known[:clients] = rng.random((clients, CAP)) < 0.5
    views.sent[:clients] = rng.integers(-5, 5, (clients, CAP, COLUMNS))
    sent_before = views.sent[:clients].copy()
    known_before = views.known[:clients].copy()
    viewers = rng.uniform(-300, 300, (clients, 2))
    c_rows = np.arange(clients)
    plan = due(
        views, c_rows, viewers=viewers, pos=pos, entity_ids=ids, table=table, beat=beat, tiers=tiers
    )
    valid = take_due(views, plan)
    assert np.array_equal(valid, rows >= 0)
    safe = np.where(valid, rows, 0)
    if n:
        dx = pos[safe, 0] - viewers[:, 0, None]
        dz = pos[safe, 2] - viewers[:, 1, None]
        fresh = due_oracle(dx * dx + dz * dz, safe, ids, beat, tiers) | ~known_before
        expected = np.where((fresh & valid)[:, :, None], table[safe], sent_before)
    else:
        expected = sent_before
    assert np.array_equal(views.sent[:clients], expected)
    assert np.array_equal(views.known[:clients], valid)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 40),
    one_point=st.booleans(),
    cap=st.sampled_from([1, 7, 8, 40]),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_payload_decodes_to_the_zone_state(
    n: int, one_point: bool, cap: int, seed: int
) -> None:
    """Entity counts from an empty zone to past the cap, all at one point or spread:
    each client's decoded table holds exactly its view's entities at their values."""
    cfg = ZoneConfig.from_env(
        Env({"TESSERA_ZONE_BOUNDS": "-100,-100,100,100", "TESSERA_AOI_CAP": str(cap)})
    )
    assert cfg.bounds is not None
    sim = Simulation(cfg, area=cfg.bounds, seed=seed)
    rng = np.random.default_rng(seed)
    receivers: dict[str, SnapshotReceiver] = {}
    for i in range(n):
        x, z = (5.0, 5.0) if one_point else tuple(rng.uniform(-99, 99, 2))
        sim.add_player(entity_id=i + 1, player_id=f"p{i}", pos=(x, 0.0, z), team=0)
        if i % 3 == 0:
            sim.attach(f"p{i}")
            receivers[f"p{i}"] = SnapshotReceiver()
    for _ in range(6):
        frame = sim.step()
        b = frame.batch
        for i, player in enumerate(frame.players):
            rec = receivers[player]
            rec.apply(int(b.stream[i]), int(b.sequence[i]), int(b.baseline[i]), b.payloads[i])
            sim.ack(player, int(b.stream[i]), rec.ack())
            row = sim.attached[player]
            members = sim.views.rows[row] >= 0
            table = rec.table()
            assert sorted(table.ids.tolist()) == sorted(sim.views.ids[row][members].tolist())
            assert len(table) <= cap
            assert np.array_equal(table.rows, sim.views.sent[row][members])
            assert np.isfinite(table.positions(sim.quant)).all()
            if one_point and len(table):
                assert (table.rows[:, X] == table.rows[0, X]).all()
                assert (table.rows[:, Z] == table.rows[0, Z]).all()


def test_warm_up_compiles_every_signature_a_tick_uses() -> None:
    """After warm_up, a busy zone's input batches and ticks (NPCs chasing, combat,
    deltas, view changes, a lowered AOI cap) compile nothing new: no tick ever waits for the JIT."""
    dispatchers: list[Any] = [
        kernels.admit,
        kernels.encode_due,
        kernels.aim,
        kernels.consume,
        kernels.integrate,
        kernels.nearest,
        kernels.refill,
        kernels.refresh_views,
        kernels.swap_removed,
        kernels.visible,
    ]
    warm_up(ZoneConfig.from_env(Env({})))
    before = [list(d.signatures) for d in dispatchers]
    assert all(before)
    scenario(players=30, npcs=20, ticks=20, cap=16, every=1, seed=9)
    assert [list(d.signatures) for d in dispatchers] == before


def refresh_oracle(views: Views, clients: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> None:
    """The numpy Views.refresh that refresh_views replaced (git a6e8a68)."""
    order = np.argsort(ids, axis=1)
    ids = np.take_along_axis(ids, order, axis=1)
    rows = np.take_along_axis(rows, order, axis=1)
    old_ids = views.ids[clients]
    changed = np.any(ids != old_ids, axis=1) | np.any(rows != views.rows[clients], axis=1)
    if not changed.any():
        return
    clients, ids, rows, old_ids = clients[changed], ids[changed], rows[changed], old_ids[changed]
    c, k = ids.shape
    rowkey = (np.arange(c, dtype=np.uint64) << np.uint64(40))[:, None]
    hay = (rowkey | old_ids).ravel()
    needles = (rowkey | ids).ravel()
    pos = np.minimum(np.searchsorted(hay, needles), hay.size - 1)
    found = (hay[pos] == needles) & views.known[clients].ravel()[pos]
    views.sent[clients] = views.sent[clients].reshape(c * k, -1)[pos].reshape(c, k, -1)
    views.known[clients] = found.reshape(c, k) & (ids != views.pad)
    views.ids[clients] = ids
    views.rows[clients] = rows
    views.version[clients] += 1


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 3 * CAP),
    clients=st.integers(1, 4),
    rounds=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_refresh_views_matches_the_numpy_oracle(
    n: int, clients: int, rounds: int, seed: int
) -> None:
    """Members carried over keep their sent values and stay known; everything
    else the oracle decides too (slots the oracle leaves unknown may differ in
    their stale sent values, which nothing reads)."""
    rng = np.random.default_rng(seed)
    ids_all = np.append(rng.choice(2**40 - 2, n, replace=False).astype(np.uint64), PAD)
    got, want = Views(CAP, COLUMNS, PAD), Views(CAP, COLUMNS, PAD)
    for c in range(clients):
        got.reset(c)
        want.reset(c)
    for _ in range(rounds):
        sub = rng.choice(clients, int(rng.integers(1, clients + 1)), replace=False)
        idx = np.full((sub.size, CAP), n, np.int64)
        for i in range(sub.size):
            k = int(rng.integers(0, min(n, CAP) + 1))
            idx[i, :k] = rng.choice(n, k, replace=False) if k else []
        if rng.random() < 0.3:
            idx = np.repeat(idx[:1], sub.size, axis=0)  # all see the same (one point)
        idx = np.take_along_axis(idx, np.argsort(ids_all[idx], axis=1), axis=1)
        rows = np.where(idx < n, idx, -1)
        got.refresh(sub, rows, ids_all[:-1])
        refresh_oracle(want, sub, ids_all[idx], rows)
        fresh = rng.integers(-9, 9, (clients, CAP, COLUMNS)).astype(np.int32)
        for v in (got, want):
            shown = v.rows[:clients] >= 0  # sent once: now known, with fresh values
            v.known[:clients] |= shown
            v.sent[:clients][shown] = fresh[shown]
        assert np.array_equal(got.ids, want.ids)
        assert np.array_equal(got.rows, want.rows)
        assert np.array_equal(got.known, want.known)
        assert np.array_equal(got.version, want.version)
        assert np.array_equal(got.sent[got.known], want.sent[want.known])


def kdtree_oracle(
    xz: np.ndarray, viewers: np.ndarray, boost: np.ndarray, cap: int
) -> list[set[int]]:
    """The cKDTree interest.visible that kernels.visible replaced (git 15eb3dc):
    its sets, which are arbitrary only among equal distances or scores."""
    n, c = len(xz), len(viewers)
    k = min(n, cap + cap // 4)
    if c == 0 or n == 0:
        return [set() for _ in range(c)]
    dist, idx = cKDTree(xz).query(viewers, k=k, distance_upper_bound=Tiers().far)
    dist, idx = np.asarray(dist).reshape(c, k), np.asarray(idx).reshape(c, k)
    if k > cap:
        found = idx < n
        score = np.where(found, dist - boost[np.minimum(idx, n - 1)], np.inf)
        keep = np.argpartition(score, cap - 1, axis=1)[:, :cap]
        idx = np.take_along_axis(idx, keep, axis=1)
    return [{r for r in row.tolist() if r < n} for row in idx]


def exact_oracle(
    xz: np.ndarray, viewers: np.ndarray, boost: np.ndarray, cap: int
) -> list[set[int]]:
    """The rule in numpy, brute force: within the far radius, the nearest
    ``cap + cap // 4`` by (distance, row), then ``cap`` by (distance - boost, row)."""
    out = []
    for vx, vz in viewers:
        dx, dz = xz[:, 0] - vx, xz[:, 1] - vz
        d2 = dx * dx + dz * dz
        rows = np.flatnonzero(d2 < Tiers().far ** 2)
        dist = np.sqrt(d2[rows])
        order = np.lexsort((rows, dist))[: cap + cap // 4]
        rows, dist = rows[order], dist[order]
        out.append(set(rows[np.lexsort((rows, dist - boost[rows]))[:cap]].tolist()))
    return out


LAYOUTS = ["spread", "one point", "cell borders", "far outside", "two far clusters"]


def layout(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "spread":
        return rng.uniform(-300, 300, (n, 2))
    if kind == "one point":
        return np.full((n, 2), rng.uniform(-300, 300))
    if kind == "cell borders":  # on multiples of the grid cell: ties and rounding edges
        return rng.integers(-8, 8, (n, 2)) * 25.0
    if kind == "far outside":  # beyond any zone's bounds: the grid widens its cells
        return rng.uniform(-1e7, 1e7, (n, 2))
    return np.where(rng.random((n, 1)) < 0.5, -5e5, 5e5) + rng.uniform(-150, 150, (n, 2))


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 4 * CAP),
    viewers=st.integers(0, 5),
    kind=st.sampled_from(LAYOUTS),
    cap=st.sampled_from([1, 4, CAP]),
    combat=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_visible_matches_the_numpy_and_kdtree_oracles(
    *, n: int, viewers: int, kind: str, cap: int, combat: bool, seed: int
) -> None:
    """Entity counts 0..4x the cap on spread, coincident, grid-border and far-flung
    positions: the grid kernel picks exactly the brute-force rule's set (ties by
    row), which is the old cKDTree code's set wherever that one is not a tie."""
    rng = np.random.default_rng(seed)
    xz = layout(kind, n, rng)
    ids = rng.choice(2**40 - 2, n, replace=False).astype(np.uint64) if n else np.zeros(0, np.uint64)
    boost = np.where(rng.random(n) < 0.3, 30.0, 0.0) if combat else np.zeros(n)
    at = (
        xz[rng.integers(0, n, viewers)]
        if n and kind != "far outside"
        else rng.uniform(-300, 300, (viewers, 2))
    )
    width = cap + 3
    rows = visible(xz, at, boost, ids, tiers=Tiers(cap=cap), width=width)
    assert rows.shape == (viewers, width)
    got = [{r for r in row.tolist() if r >= 0} for row in rows]
    assert got == exact_oracle(xz, at, boost, cap)
    for row in rows:
        members = row[row >= 0]
        assert (row[members.size :] == -1).all()
        assert (np.diff(ids[members].astype(np.int64)) > 0).all()
    if kind == "spread":
        assert got == kdtree_oracle(xz, at, boost, cap)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 4 * CAP),
    queries=st.integers(0, 6),
    kind=st.sampled_from(LAYOUTS),
    radius=st.sampled_from([0.0, 2.0, 15.0, 25.0, 400.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_nearest_matches_the_numpy_and_kdtree_oracles(
    *, n: int, queries: int, kind: str, radius: float, seed: int
) -> None:
    """Player counts 0..4x the cap on spread, coincident, grid-border and far-flung
    positions: the grid kernel finds the brute-force nearest (the lowest row on a
    tie) strictly within the radius, which is the cKDTree query NPC chase used
    (git 89a1018) wherever that one is not a tie."""
    rng = np.random.default_rng(seed)
    xz = layout(kind, n, rng)
    on = xz[rng.integers(0, n, queries)] if n else np.zeros((0, 2))
    at = np.concatenate([on, rng.uniform(-300, 300, (queries, 2))])  # near and away
    row = np.empty(len(at), np.int64)
    dist = np.empty(len(at))
    kernels.nearest(xz, at, radius, row, dist)
    for i, (qx, qz) in enumerate(at):
        d = np.sqrt((xz[:, 0] - qx) ** 2 + (xz[:, 1] - qz) ** 2)
        want = int(np.argmin(d)) if n and d.min() < radius else -1
        assert row[i] == want
        assert dist[i] == (d[want] if want >= 0 else np.inf)
    if n and kind == "spread" and radius > 0:
        kd_dist, kd_row = cKDTree(xz).query(at, k=1, distance_upper_bound=radius)
        assert np.array_equal(np.where(np.isfinite(kd_dist), kd_row, -1), row)
        assert np.allclose(kd_dist, dist)


def integrate_oracle(
    pos: np.ndarray, vel: np.ndarray, desired: np.ndarray, jump: np.ndarray, area: Rect
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The numpy movement.integrate that kernels.integrate replaced (git 89a1018)."""
    lim, dt = Limits(), 1 / 30
    vel = vel.copy()
    ground = vel[:, [0, 2]]
    dv = desired - ground
    dv_len = np.linalg.norm(dv, axis=1)
    max_dv = lim.accel * dt
    scale = np.where(dv_len > max_dv, max_dv / np.maximum(dv_len, 1e-12), 1.0)
    ground = ground + dv * scale[:, None]
    speed = np.linalg.norm(ground, axis=1)
    over = speed > lim.max_speed
    ground[over] *= (lim.max_speed / speed[over])[:, None]
    vel[:, 0], vel[:, 2] = ground[:, 0], ground[:, 1]
    vel[:, 1] = np.where(jump & (pos[:, 1] <= 0.0), lim.jump_speed, vel[:, 1])
    vel[:, 1] -= lim.gravity * dt
    new = pos + vel * dt
    landed = new[:, 1] <= 0.0
    new[landed, 1] = 0.0
    vel[landed, 1] = 0.0
    for axis, lo, hi in ((0, area.min_x, area.max_x), (2, area.min_z, area.max_z)):
        top = np.nextafter(hi, lo)
        new[:, axis] = np.clip(
            new[:, axis], np.minimum(lo, pos[:, axis]), np.maximum(top, pos[:, axis])
        )
    max_step = lim.max_speed * dt
    step = new[:, [0, 2]] - pos[:, [0, 2]]
    length = np.linalg.norm(step, axis=1)
    clamped = length > max_step * (1 + 1e-9)
    k = max_step / np.where(clamped, length, 1.0)
    new[clamped, 0] = pos[clamped, 0] + step[clamped, 0] * k[clamped]
    new[clamped, 2] = pos[clamped, 2] + step[clamped, 1] * k[clamped]
    return new, vel, np.where(clamped, length - max_step, 0.0)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 4 * CAP),
    kind=st.sampled_from(["spread", "one point", "outside", "airborne"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_integrate_matches_the_numpy_oracle(*, n: int, kind: str, seed: int) -> None:
    """Entity counts 0..4x the cap, spread, all at one point, outside a shrunk
    area or in the air, at any speed: bit for bit the numpy step it replaced."""
    rng = np.random.default_rng(seed)
    area = Rect(-50.0, -50.0, 50.0, 50.0)
    pos = np.zeros((n, 3))
    pos[:, [0, 2]] = rng.uniform(-49, 49, (n, 2)) if kind != "one point" else rng.uniform(-49, 49)
    if kind == "outside":
        pos[:, [0, 2]] *= 3.0
    if kind == "airborne":
        pos[:, 1] = rng.uniform(0, 3, n)
    vel = rng.normal(0, 10, (n, 3))
    desired = rng.normal(0, 8, (n, 2))
    jump = rng.random(n) < 0.3
    got = integrate(pos, vel, desired, jump, limits=Limits(), dt=1 / 30, area=area)
    for have, want in zip(got, integrate_oracle(pos, vel, desired, jump, area), strict=True):
        assert np.array_equal(have, want)


def consume_oracle(ents: Entities, hz: int) -> None:
    """The input buffer's rule in numpy (inputs.consume before its kernel)."""
    rows = np.flatnonzero(ents.queued[: ents.n] > 0)
    if not rows.size:
        return
    queued, held = ents.queued[rows], ents.held_ticks[rows]
    drain = (queued > 1) & (queued <= inputs.HOLD + 1) & (held >= inputs.DRAIN_S * hz)
    take = np.maximum(1, queued - inputs.HOLD) + drain
    newest = take - 1
    ents.last_seq[rows] = ents.q_seq[rows, newest]
    ents.waited[rows] = ents.q_wait[rows, newest]
    v = ents.q_values[rows, newest]
    ents.move[rows] = v[:, :2]
    ents.yaw[rows], ents.pitch[rows], ents.rtt_ms[rows], ents.interp_ms[rows] = v[:, 2:].T
    taken = np.arange(INPUT_QUEUE) < take[:, None]
    ents.actions[rows] |= np.bitwise_or.reduce(np.where(taken, ents.q_actions[rows], 0), axis=1)
    left = queued - take
    for r, t, k in zip(rows.tolist(), take.tolist(), left.tolist(), strict=True):
        for arr in (ents.q_seq, ents.q_values, ents.q_actions, ents.q_wait):
            arr[r, :k] = arr[r, t : t + k].copy()
        ents.q_wait[r, :k] += 1
    ents.queued[rows] = left
    ents.held_ticks[rows] = np.where((left > 0) & ~drain, held + 1, 0)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 40),
    seed=st.integers(0, 2**32 - 1),
    ticks=st.integers(1, 4),
)
def test_the_input_buffer_kernel_matches_its_oracle(n: int, seed: int, ticks: int) -> None:
    rng = np.random.default_rng(seed)
    ents = Entities(max(n, 1))
    for i in range(n):
        ents.add_player(i + 1, f"p{i}", (0.0, 0.0, 0.0))
    ents.queued[:n] = rng.integers(0, INPUT_QUEUE + 1, n)
    ents.held_ticks[:n] = rng.integers(0, 40, n)
    ents.q_seq[:n] = rng.integers(1, 1000, (n, INPUT_QUEUE))
    ents.q_values[:n] = rng.normal(size=(n, INPUT_QUEUE, 6))
    ents.q_actions[:n] = rng.integers(0, 8, (n, INPUT_QUEUE))
    ents.q_wait[:n] = rng.integers(0, 40, (n, INPUT_QUEUE))
    ents.actions[:n] = rng.integers(0, 8, n)
    want = copy.deepcopy(ents)
    for _ in range(ticks):
        inputs.consume(ents, hz=30)
        consume_oracle(want, 30)
    names = ("queued", "held_ticks", "last_seq", "waited", "move", "yaw", "pitch", "actions")
    for name in names:
        assert np.array_equal(getattr(ents, name)[:n], getattr(want, name)[:n]), name
    for r in range(n):  # what stays buffered; slots past it are free
        k = int(ents.queued[r])
        assert np.array_equal(ents.q_seq[r, :k], want.q_seq[r, :k])
        assert np.array_equal(ents.q_values[r, :k], want.q_values[r, :k])
        assert np.array_equal(ents.q_wait[r, :k], want.q_wait[r, :k])


def test_a_single_bit_is_indexed() -> None:
    bits = [kernels._bit_index(np.uint64(1) << np.uint64(b)) for b in range(64)]
    assert bits == list(range(64))


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 40),
    shape=st.sampled_from([(0,), (7,), (3, 5), (16, 4)]),
    seed=st.integers(0, 2**32 - 1),
)
def test_swap_removed_matches_the_numpy_rule(n: int, shape: tuple[int, ...], seed: int) -> None:
    """One pass does what the two numpy masks did (git 5821b5e), on 1-d and flattened
    2-d tables, for the last row removed too; an empty table is left alone."""
    rng = np.random.default_rng(seed)
    table = rng.integers(-1, n, shape).astype(np.int64)
    row = int(rng.integers(0, n))
    for last in {row, n - 1}:
        got, want = table.copy(), table.copy()
        want[want == row] = -1
        if last != row:
            want[want == last] = row
        kernels.swap_removed(got.reshape(-1), row, last)
        assert np.array_equal(got, want)
