"""The player-data API: its request rules (pure) and GetPlayerData/PutPlayerData on a
real auth service with real Redis and PostgreSQL."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tessera.auth import playerdata
from tessera.auth.accounts import InputError
from tessera.authclient.bearer import bearer_metadata
from tessera.common import errors
from tessera.v1 import auth_pb2, common_pb2

from .conftest import RunningAuth, StartAuth, fails, service_metadata


def message(**fields: Any) -> auth_pb2.PlayerData:
    values: dict[str, Any] = {
        "world": "w",
        "player_id": "alice",
        "position": common_pb2.Vec3(x=1.0, y=0.0, z=2.0),
        "health": 90.0,
        "blob": b"inv",
        **fields,
    }
    return auth_pb2.PlayerData(**values)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"world": "Not A Label"}, "world"),
        ({"world": ""}, "world"),
        ({"player_id": ""}, "player_id"),
        ({"player_id": "a|b"}, "player_id"),
        ({"player_id": "x" * 129}, "player_id"),
        ({"health": float("nan")}, "data"),
        ({"position": common_pb2.Vec3(x=float("inf"))}, "data"),
        ({"blob": b"x" * (playerdata.MAX_BLOB + 1)}, "data.blob"),
        ({"components": {"gold": float("nan")}}, "data.components"),
        ({"components": {"": 1.0}}, "data.components"),
        ({"components": {"x" * 33: 1.0}}, "data.components"),
        ({"components": {f"c{i}": 1.0 for i in range(65)}}, "data.components"),
    ],
)
def test_malformed_data_is_refused_with_its_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as info:
        playerdata.to_record(message(**fields))
    assert info.value.field == field


def test_a_record_round_trips_to_the_message() -> None:
    stats: dict[str, Any] = {"kills": 4, "deaths": 5, "hits_dealt": 60, "hits_taken": 70}
    stats["components"] = {"resources": 12.0}
    record = playerdata.to_record(message(speed_clamps=3, teleports=1, **stats))
    assert record.written_by == "api" and record.blob == b"inv"
    assert (record.kills, record.deaths, record.hits_dealt, record.hits_taken) == (4, 5, 60, 70)
    assert record.components == {"resources": 12.0}
    assert playerdata.to_message(record) == message(
        speed_clamps=3, teleports=1, written_by="api", **stats
    )


@pytest.mark.integration
async def test_read_and_conditional_write(auth: RunningAuth) -> None:
    service = await service_metadata(auth)
    get = auth_pb2.GetPlayerDataRequest(world="w", player_id="alice")
    err = await fails(auth.stub.GetPlayerData(get, metadata=service))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    put = auth_pb2.PutPlayerDataRequest(data=message(), expected_version=0)
    created = await auth.stub.PutPlayerData(put, metadata=service)
    assert created.version == 1 and created.written_by == "api" and created.updated_at_ms > 0
    assert await auth.stub.GetPlayerData(get, metadata=service) == created

    shield = message(blob=b"shield", kills=7, deaths=2, hits_dealt=90, hits_taken=40)
    update = auth_pb2.PutPlayerDataRequest(data=shield, expected_version=1)
    updated = await auth.stub.PutPlayerData(update, metadata=service)
    assert updated.version == 2 and updated.blob == b"shield"
    assert (updated.kills, updated.deaths, updated.hits_dealt, updated.hits_taken) == (7, 2, 90, 40)

    # The same write again carries a stale version: refused, nothing changes.
    err = await fails(auth.stub.PutPlayerData(update, metadata=service))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert errors.detail_of(err).reason == "STALE_VERSION"
    assert await auth.stub.GetPlayerData(get, metadata=service) == updated

    bad = auth_pb2.PutPlayerDataRequest(data=message(world="W!"), expected_version=2)
    err = await fails(auth.stub.PutPlayerData(bad, metadata=service))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert errors.detail_of(err).field == "world"


@pytest.mark.integration
async def test_only_services_and_admins_may_call(auth: RunningAuth, start_auth: StartAuth) -> None:
    get = auth_pb2.GetPlayerDataRequest(world="w", player_id="alice")
    put = auth_pb2.PutPlayerDataRequest(data=message(), expected_version=0)
    err = await fails(auth.stub.GetPlayerData(get))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await fails(auth.stub.PutPlayerData(put))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    player = await auth.stub.Register(
        auth_pb2.RegisterRequest(username="alice", password="correct horse battery")
    )
    as_player = bearer_metadata(player.access_token)
    for call in (
        auth.stub.GetPlayerData(get, metadata=as_player),
        auth.stub.PutPlayerData(put, metadata=as_player),
    ):
        assert (await fails(call)).code() == grpc.StatusCode.PERMISSION_DENIED

    admin_auth = await start_auth(AUTH_ADMIN_ACCOUNTS=player.account_id)
    admin = await admin_auth.stub.Login(
        auth_pb2.LoginRequest(username="alice", password="correct horse battery")
    )
    as_admin = bearer_metadata(admin.access_token)
    written = await admin_auth.stub.PutPlayerData(put, metadata=as_admin)
    assert written.version == 1
    assert await admin_auth.stub.GetPlayerData(get, metadata=as_admin) == written
