"""Ghosts: the aura of a zone's entities shown read-only in its neighbours.

Pure parts: which entities are in the aura (within ``margin`` of a
neighbour's rectangle), the compact binary ghost batch published on the
zone's ``zone:<z>:ghosts`` channel (format: docs/protocol/ghosts.md), which
received rows matter to a receiver, and the owner's check of a hit forwarded
from a neighbour.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tessera.wire.geometry import Rect
from tessera.zone.combat import Weapons
from tessera.zone.entities import GHOST

F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

MAGIC = b"TG"
VERSION = 1

HEADER = np.dtype(
    [
        ("magic", "S2"),
        ("version", "u1"),
        ("reserved", "u1"),
        ("count", "<u4"),
        ("map_version", "<u8"),
        ("sent_ms", "<f8"),
    ]
)
ROW = np.dtype(
    [
        ("id", "<u8"),
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("vx", "<f4"),
        ("vy", "<f4"),
        ("vz", "<f4"),
        ("yaw", "<f4"),
        ("health", "<f4"),
        ("team", "<u2"),
        ("kind", "u1"),
        ("flags", "u1"),
    ]
)
FLOATS_AT = 8  # a row's first float32 field (x) starts after the uint64 id
MAX_ROWS = 65_536


class GhostFormatError(ValueError):
    """A ghost batch that does not follow the format."""


def distance_to_rect(xz: F64, r: Rect) -> F64:
    """Distance from each point to the rectangle (0 inside)."""
    dx = np.maximum(np.maximum(r.min_x - xz[:, 0], 0.0), xz[:, 0] - r.max_x)
    dz = np.maximum(np.maximum(r.min_z - xz[:, 1], 0.0), xz[:, 1] - r.max_z)
    result: F64 = np.hypot(dx, dz)
    return result


def aura(xz: F64, neighbours: list[Rect], margin: float) -> Bools:
    """Entities within ``margin`` of any neighbour's rectangle."""
    out = np.zeros(len(xz), bool)
    for r in neighbours:
        out |= distance_to_rect(xz, r) <= margin
    return out


def encode(
    *,
    ids: npt.NDArray[np.uint64],
    pos: F64,
    vel: F64,
    yaw: F64,
    health: F64,
    team: npt.NDArray[np.int32],
    kind: npt.NDArray[np.int32],
    flags: npt.NDArray[np.int32],
    map_version: int,
    sent_ms: float,
) -> bytes:
    """One ghost batch: header then ``count`` rows, little-endian, no padding."""
    n = len(ids)
    if n > MAX_ROWS:
        raise ValueError(f"at most {MAX_ROWS} ghosts per batch")
    head = np.zeros(1, HEADER)
    head[0] = (MAGIC, VERSION, 0, n, map_version, sent_ms)
    rows = np.zeros(n, ROW)
    rows["id"] = ids
    rows["x"], rows["y"], rows["z"] = pos[:, 0], pos[:, 1], pos[:, 2]
    rows["vx"], rows["vy"], rows["vz"] = vel[:, 0], vel[:, 1], vel[:, 2]
    rows["yaw"] = yaw
    rows["health"] = health
    rows["team"] = team
    rows["kind"] = kind
    rows["flags"] = flags & 0xFF & ~GHOST
    return head.tobytes() + rows.tobytes()


def decode(payload: bytes) -> tuple[int, float, npt.NDArray[np.void]]:
    """``(map_version, sent_ms, rows)`` of a batch; raises GhostFormatError."""
    if len(payload) < HEADER.itemsize:
        raise GhostFormatError("shorter than the header")
    head = np.frombuffer(payload, HEADER, count=1)[0]
    if bytes(head["magic"]) != MAGIC or int(head["version"]) != VERSION:
        raise GhostFormatError("bad magic or version")
    n = int(head["count"])
    if n > MAX_ROWS or len(payload) != HEADER.itemsize + n * ROW.itemsize:
        raise GhostFormatError("length does not match the row count")
    rows = np.frombuffer(payload, ROW, count=n, offset=HEADER.itemsize)
    if n:  # the eight float32 fields (x to health) of every row, as one strided view
        floats = np.ndarray((n, 8), "<f4", payload, HEADER.itemsize + FLOATS_AT, (ROW.itemsize, 4))
        if not np.isfinite(floats).all():
            raise GhostFormatError("non-finite value")
    return int(head["map_version"]), float(head["sent_ms"]), rows


def relevant(rows: npt.NDArray[np.void], own: Rect, margin: float) -> npt.NDArray[np.void]:
    """Rows a receiver keeps: within ``margin`` of its own rectangle."""
    if len(rows) == 0:
        return rows
    xz = np.stack([rows["x"].astype(np.float64), rows["z"].astype(np.float64)], axis=1)
    return rows[distance_to_rect(xz, own) <= margin]


def hit_plausible(
    *,
    attack: int,
    damage: float,
    attacker: tuple[float, float],
    target: tuple[float, float],
    weapons: Weapons,
    slack_m: float,
) -> bool:
    """The owner's check of a forwarded hit: a known attack, at most its damage,
    the attacker (at its view time) within the weapon's reach of the target now
    plus ``slack_m`` (the target moved since)."""
    if attack == 1:
        reach, most = weapons.melee_range, weapons.melee_damage
    elif attack == 2:
        reach, most = weapons.ranged_range, weapons.ranged_damage
    else:
        return False
    if not (np.isfinite(damage) and 0.0 < damage <= most):
        return False
    dist = float(np.hypot(attacker[0] - target[0], attacker[1] - target[1]))
    return bool(np.isfinite(dist) and dist <= reach + slack_m)
