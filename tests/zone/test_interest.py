"""Area of interest: cap, radius, priority and tier refresh rates."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from tessera.wire.snapshot import COLUMNS
from tessera.zone.interest import Tiers, Views, take_due, visible
from tessera.zone.snapshot import PAD


def test_nearest_within_far_radius_up_to_the_cap() -> None:
    pts = np.array([[0.0, 0.0], [10.0, 0.0], [30.0, 0.0], [250.0, 0.0], [5.0, 0.0]])
    tiers = Tiers(cap=3)
    idx, dist = visible(cKDTree(pts), pts[:1], 5, np.zeros(5), tiers=tiers)
    assert sorted(idx[0].tolist()) == [0, 1, 4]
    tiers = Tiers(cap=8)
    idx, dist = visible(cKDTree(pts), pts[:1], 5, np.zeros(5), tiers=tiers)
    assert sorted(i for i in idx[0].tolist() if i < 5) == [0, 1, 2, 4]  # 250 m is too far
    assert (idx[0] == 5).sum() == 4 and np.isinf(dist[0][idx[0] == 5]).all()


def test_recent_combat_outranks_a_closer_idle_entity() -> None:
    pts = np.array([[float(d), 0.0] for d in range(10)])
    boost = np.zeros(10)
    boost[9] = 30.0
    idx, _ = visible(cKDTree(pts), pts[:1], 10, boost, tiers=Tiers(cap=8))
    assert sorted(idx[0].tolist()) == [0, 1, 2, 3, 4, 5, 6, 9]


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
    for c in clients.tolist():
        views.reset(c)
    views.refresh(clients, ids[None, :].repeat(3, axis=0), np.arange(6)[None, :].repeat(3, 0))
    views.known[:3] = True  # already sent once: only the tiers decide
    counts = np.zeros(3)
    for beat in range(6):
        table = np.full((6, COLUMNS), beat + 1, np.int32)
        valid = take_due(
            views,
            clients,
            viewers=viewers,
            pos=pos,
            entity_ids=ids,
            table=table,
            beat=beat,
            tiers=tiers,
        )
        assert valid.all()
        counts += (views.sent[:3, :, 0] == beat + 1).sum(axis=1)
    assert counts.tolist() == [36, 12, 6]
