"""The player-data API's rules (``GetPlayerData``, ``PutPlayerData``): what a request
may hold and how a ``PlayerData`` message maps to the stored row. Pure: the SQL is
:mod:`tessera.common.playerdata`."""

from __future__ import annotations

import math

from tessera.auth.accounts import InputError
from tessera.common.playerdata import PlayerData
from tessera.v1 import auth_pb2, common_pb2
from tessera.wire.names import NAME_RE

# The written_by of a row the API wrote (zones write their zone name).
WRITER = "api"
MAX_BLOB = 256 * 1024
MAX_PLAYER_ID = 128
MAX_COMPONENTS = 64


def check_key(world: str, player_id: str) -> None:
    """A world is a DNS label; a player id 1-128 printable characters without '|'."""
    if NAME_RE.fullmatch(world) is None:
        raise InputError(
            "world", "INVALID_WORLD", "world must be a DNS label (a-z, 0-9, '-', <= 63)"
        )
    if not 0 < len(player_id) <= MAX_PLAYER_ID or "|" in player_id or not player_id.isprintable():
        raise InputError(
            "player_id",
            "INVALID_PLAYER_ID",
            f"player_id must be 1-{MAX_PLAYER_ID} printable characters without '|'",
        )


def to_record(data: auth_pb2.PlayerData) -> PlayerData:
    """The row to write from a request's data; InputError when it is malformed."""
    check_key(data.world, data.player_id)
    p = data.position
    if not all(math.isfinite(v) for v in (p.x, p.y, p.z, data.yaw, data.health)):
        raise InputError("data", "INVALID_DATA", "position, yaw and health must be finite")
    if len(data.blob) > MAX_BLOB:
        raise InputError("data.blob", "BLOB_TOO_LARGE", f"blob must be at most {MAX_BLOB} bytes")
    if len(data.components) > MAX_COMPONENTS or not all(
        0 < len(name) <= 32 and math.isfinite(value) for name, value in data.components.items()
    ):
        raise InputError(
            "data.components",
            "INVALID_COMPONENTS",
            f"components: at most {MAX_COMPONENTS} names of 1-32 characters, finite values",
        )
    return PlayerData(
        world=data.world,
        player=data.player_id,
        position=(p.x, p.y, p.z),
        yaw=data.yaw,
        health=data.health,
        blob=data.blob,
        speed_clamps=data.speed_clamps,
        teleports=data.teleports,
        version=0,
        written_by=WRITER,
        kills=data.kills,
        deaths=data.deaths,
        hits_dealt=data.hits_dealt,
        hits_taken=data.hits_taken,
        components=dict(data.components),
    )


def to_message(d: PlayerData) -> auth_pb2.PlayerData:
    x, y, z = d.position
    return auth_pb2.PlayerData(
        world=d.world,
        player_id=d.player,
        position=common_pb2.Vec3(x=x, y=y, z=z),
        yaw=d.yaw,
        health=d.health,
        blob=d.blob,
        speed_clamps=d.speed_clamps,
        teleports=d.teleports,
        version=d.version,
        written_by=d.written_by,
        updated_at_ms=d.updated_at * 1000,
        kills=d.kills,
        deaths=d.deaths,
        hits_dealt=d.hits_dealt,
        hits_taken=d.hits_taken,
        components=d.components,
    )
