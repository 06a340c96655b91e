"""Area of interest: cap, radius, priority and tier refresh rates."""

from __future__ import annotations

import numpy as np

from tessera.wire.snapshot import COLUMNS, PRESENT, Replicated, decode, width
from tessera.zone.interest import Tiers, Views, due, visible
from tessera.zone.snapshot import PAD, SnapshotEncoder, tier_bits


def seen(xz: np.ndarray, viewer: np.ndarray, boost: np.ndarray, tiers: Tiers) -> list[int]:
    ids = np.arange(len(xz), dtype=np.uint64) + np.uint64(100)
    rows = visible(xz, viewer[None], boost, ids, tiers=tiers, width=tiers.cap)
    return [r for r in rows[0].tolist() if r >= 0]


def test_nearest_within_far_radius_up_to_the_cap() -> None:
    pts = np.array([[0.0, 0.0], [10.0, 0.0], [30.0, 0.0], [250.0, 0.0], [5.0, 0.0]])
    assert seen(pts, pts[0], np.zeros(5), Tiers(cap=3)) == [0, 1, 4]
    assert seen(pts, pts[0], np.zeros(5), Tiers(cap=8)) == [0, 1, 2, 4]  # 250 m is too far


def test_recent_combat_outranks_a_closer_idle_entity() -> None:
    pts = np.array([[float(d), 0.0] for d in range(10)])
    boost = np.zeros(10)
    boost[9] = 30.0
    assert seen(pts, pts[0], boost, Tiers(cap=8)) == [0, 1, 2, 3, 4, 5, 6, 9]


def test_rows_come_in_ascending_id_order_padded() -> None:
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    ids = np.array([30, 10, 20], np.uint64)
    rows = visible(pts, pts[:2], np.zeros(3), ids, tiers=Tiers(cap=3), width=5)
    assert rows.tolist() == [[1, 2, 0, -1, -1], [1, 2, 0, -1, -1]]


def test_an_empty_zone_or_no_viewers() -> None:
    none = visible(
        np.zeros((0, 2)),
        np.zeros((2, 2)),
        np.zeros(0),
        np.zeros(0, np.uint64),
        tiers=Tiers(),
        width=4,
    )
    assert (none == -1).all() and none.shape == (2, 4)
    pts = np.zeros((3, 2))
    assert visible(
        pts, np.zeros((0, 2)), np.zeros(3), np.arange(3, dtype=np.uint64), tiers=Tiers(), width=4
    ).shape == (0, 4)


def test_tiers_refresh_every_tick_third_and_sixth() -> None:
    """Three viewers see the same six entities at 10, 70 and 150 m; over six beats
    the near view is refreshed every beat, mid every third and far every sixth."""
    tiers = Tiers()
    views = Views(6, COLUMNS, PAD)
    ids = np.arange(6, dtype=np.uint64) + np.uint64(1000)
    pos = np.zeros((6, 3))
    pos[:, 0] = np.arange(6) * 1e-3
    viewers = np.array([[-10.0, 0.0], [-70.0, 0.0], [-150.0, 0.0]])
    clients = np.arange(3)
    encoder = SnapshotEncoder(6)  # the schedule runs inside the encoder, as in a tick
    for c in clients.tolist():
        views.reset(c)
        assert encoder.open() == c
    views.refresh(clients, np.arange(6)[None, :].repeat(3, 0), ids)
    views.known[:3] = True  # already sent once: only the tiers decide
    counts = np.zeros(3)
    for beat in range(6):
        table = np.full((6, COLUMNS), beat + 1, np.int32)
        plan = due(
            views,
            clients,
            viewers=viewers,
            pos=pos,
            entity_ids=ids,
            table=table,
            beat=beat,
            tiers=tiers,
        )
        encoder.encode_due(views, plan, last_input_seq=np.zeros(3, np.int64))
        valid = plan.valid
        assert valid.all()
        counts += (views.sent[:3, :, 0] == beat + 1).sum(axis=1)
    assert counts.tolist() == [36, 12, 6]


def test_reserve_keeps_every_view_and_grows_at_least_twofold() -> None:
    views = Views(4, COLUMNS, PAD)
    views.reset(3)
    views.refresh(np.array([3]), np.array([[0, 1, -1, -1]]), np.array([5, 9], np.uint64))
    before = {n: getattr(views, n)[:16].copy() for n in ("ids", "rows", "sent", "known", "version")}
    views.reserve(16)  # already room
    assert views.ids.shape[0] == 16
    views.reserve(20)
    assert views.ids.shape[0] == 32
    views.reserve(100)
    assert views.ids.shape[0] == 100
    for name, old in before.items():
        np.testing.assert_array_equal(getattr(views, name)[:16], old)
    assert views.ids[3, :2].tolist() == [5, 9] and views.rows[3, :2].tolist() == [0, 1]


def test_due_slots_carry_the_components_of_their_tier() -> None:
    """Viewers at 10, 70 and 150 m of one entity: a near-only component reaches
    the near viewer, a near-and-far one the near and far viewers, none the mid."""
    comps = (
        Replicated("near_only", "int16", 1.0, 16, ("near",)),
        Replicated("near_far", "int16", 1.0, 16, ("near", "far")),
    )
    views = Views(1, width(comps), PAD)
    encoder = SnapshotEncoder(1, components=comps)
    clients = np.arange(3)
    for c in clients.tolist():
        views.reset(c)
        assert encoder.open() == c
    ids = np.array([7], np.uint64)
    views.refresh(clients, np.zeros((3, 1), np.int64), ids)
    table = np.zeros((1, width(comps)), np.int32)
    table[0, PRESENT:] = [0b11, 5, 6]
    plan = due(
        views,
        clients,
        viewers=np.array([[-10.0, 0.0], [-70.0, 0.0], [-150.0, 0.0]]),
        pos=np.zeros((1, 3)),
        entity_ids=ids,
        table=table,
        beat=0,
        tiers=Tiers(),
        tier_bits=tier_bits(comps),
    )
    assert plan.tier_bits.tolist() == [0b11, 0, 0b10]
    batch = encoder.encode_due(views, plan, last_input_seq=np.zeros(3, np.int64))
    got = [decode(p, None, comps).table.components(0, comps) for p in batch.payloads]
    assert got == [{"near_only": 5.0, "near_far": 6.0}, {}, {"near_far": 6.0}]
    assert views.sent[:3, 0, PRESENT:].tolist() == [[0b11, 5, 6], [0, 0, 0], [0b10, 0, 6]]
