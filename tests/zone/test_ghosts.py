"""Ghost aura selection, the binary batch format and forwarded-hit checks."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.wire.geometry import Rect
from tessera.zone import ghosts
from tessera.zone.combat import Weapons
from tessera.zone.entities import GHOST


def batch(n: int) -> bytes:
    rng = np.random.default_rng(1)
    return ghosts.encode(
        ids=np.arange(1, n + 1, dtype=np.uint64),
        pos=rng.uniform(-50, 50, (n, 3)),
        vel=rng.uniform(-5, 5, (n, 3)),
        yaw=rng.uniform(-3, 3, n),
        health=np.full(n, 80.0),
        team=np.full(n, 2, np.int32),
        kind=np.ones(n, np.int32),
        flags=np.full(n, 1 | GHOST, np.int32),
        map_version=7,
        sent_ms=123.5,
    )


def test_round_trip_and_exact_size() -> None:
    payload = batch(10)
    assert len(payload) == 24 + 10 * 44
    version, sent, rows = ghosts.decode(payload)
    assert (version, sent, len(rows)) == (7, 123.5, 10)
    assert rows["id"].tolist() == list(range(1, 11))
    assert set(rows["flags"].tolist()) == {1}  # the ghost bit is never sent
    assert np.allclose(rows["health"], 80.0) and set(rows["team"].tolist()) == {2}
    assert len(ghosts.decode(batch(0))[2]) == 0


@pytest.mark.parametrize(
    "payload",
    [b"", b"XX" + batch(1)[2:], batch(2)[:-1], batch(1) + b"\0", b"TG\x02" + batch(1)[3:]],
)
def test_malformed_batches_are_rejected(payload: bytes) -> None:
    with pytest.raises(ghosts.GhostFormatError):
        ghosts.decode(payload)


@pytest.mark.parametrize("field", range(8))  # x, y, z, vx, vy, vz, yaw, health
@pytest.mark.parametrize("row", [0, 2])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(field: int, row: int, value: float) -> None:
    raw = bytearray(batch(3))
    at = ghosts.HEADER.itemsize + row * ghosts.ROW.itemsize + ghosts.FLOATS_AT + 4 * field
    raw[at : at + 4] = np.float32(value).tobytes()
    with pytest.raises(ghosts.GhostFormatError):
        ghosts.decode(bytes(raw))
    assert len(ghosts.decode(batch(3))[2]) == 3


def test_aura_and_relevance() -> None:
    xz = np.array([[-70.0, 0.0], [-30.0, 0.0], [-1.0, 0.0], [-10.0, 500.0]])
    east = Rect(0, -100, 100, 100)
    assert ghosts.aura(xz, [east], 50.0).tolist() == [False, True, True, False]
    assert ghosts.aura(xz, [], 50.0).tolist() == [False] * 4
    _v, _s, rows = ghosts.decode(batch(20))
    kept = ghosts.relevant(rows, Rect(40, -100, 100, 100), 5.0)
    assert np.all(kept["x"] >= 35.0)


def test_forwarded_hit_plausibility() -> None:
    w = Weapons()
    ok = dict(attacker=(0.0, 0.0), target=(2.0, 0.0), weapons=w, slack_m=1.0)
    assert ghosts.hit_plausible(attack=1, damage=25.0, **ok)  # type: ignore[arg-type]
    assert not ghosts.hit_plausible(attack=1, damage=26.0, **ok)  # type: ignore[arg-type]
    assert not ghosts.hit_plausible(attack=3, damage=1.0, **ok)  # type: ignore[arg-type]
    assert not ghosts.hit_plausible(attack=1, damage=float("nan"), **ok)  # type: ignore[arg-type]
    far = dict(attacker=(0.0, 0.0), target=(10.0, 0.0), weapons=w, slack_m=1.0)
    assert not ghosts.hit_plausible(attack=1, damage=10.0, **far)  # type: ignore[arg-type]
    assert ghosts.hit_plausible(attack=2, damage=15.0, **far)  # type: ignore[arg-type]
