"""The kopf operator end to end against KMock's Kubernetes emulator and a real
Redis: zones are simulated only through their real interface, heartbeats
(serialized ZoneStatus) written into Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from tessera.common.store import WorldKeys, instances_stream
from tessera.operator import resources
from tessera.operator.handlers import OperatorConfig
from tessera.operator.planner.actions import CreateZone
from tessera.operator.store import INSTANCES_GROUP
from tessera.v1 import common_pb2, matchmaking_pb2, zone_pb2
from tessera.wire.geometry import Rect

from .conftest import Cluster, eventually

NS = "games"
WORLDS = f"/apis/tessera.io/v1alpha1/namespaces/{NS}/worlds"
ZONES = f"/apis/tessera.io/v1alpha1/namespaces/{NS}/zoneservers"


def world(name: str = "earth", **autoscaling: Any) -> dict[str, Any]:
    policy = {
        "targetPlayersPerZone": 20,
        "splitThreshold": 40,
        "mergeThreshold": 5,
        "splitStabilizationSeconds": 0,
        "mergeStabilizationSeconds": 3600,
        "cooldownSeconds": 0,
        "minZoneSize": 64,
        **autoscaling,
    }
    return {
        "apiVersion": "tessera.io/v1alpha1",
        "kind": "World",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "bounds": {"minX": 0, "minZ": 0, "maxX": 1024, "maxZ": 512},
            "zoneTemplate": {"image": "tessera:test", "tickRate": 20},
            "drainTimeoutSeconds": 45,
            "autoscaling": policy,
        },
    }


async def heartbeat(
    redis: Redis,
    zone: str,
    bounds: Mapping[str, float],
    *,
    state: zone_pb2.ZoneState.ValueType = zone_pb2.ZONE_STATE_ACTIVE,
    players: int = 0,
    remaining: int = 0,
    world: str = "earth",
    instance: str = "",
) -> None:
    """What a zone process writes every heartbeat (address: a closed port)."""
    xs = [bounds["minX"] + 150.0 + i for i in range(players)]
    status = zone_pb2.ZoneStatus(
        zone=common_pb2.ZoneRef(world=world, zone=zone),
        address="127.0.0.1:1",
        bounds=common_pb2.Bounds(
            min_x=bounds["minX"], min_z=bounds["minZ"], max_x=bounds["maxX"], max_z=bounds["maxZ"]
        ),
        state=state,
        players=players,
        drain_remaining=remaining,
        tick_hz=20,
        tick_p99_ms=4.5,
        sample_x=xs,
        sample_z=[bounds["minZ"] + 5.0] * players,
        instance=instance,
    )
    await redis.set(WorldKeys(world).zone_status(zone), status.SerializeToString())


async def zone_map(redis: Redis) -> zone_pb2.ZoneMap | None:
    data = await redis.get(WorldKeys("earth").zone_map)
    assert data is None or isinstance(data, bytes)
    return None if data is None else zone_pb2.ZoneMap.FromString(data)


async def test_world_creates_zoneservers_and_workloads(
    cluster: Cluster, operator: OperatorConfig, redis: Redis
) -> None:
    created = await cluster.apply(WORLDS, world(minZones=2))
    await eventually(
        lambda: len(cluster.objects("tessera.io/v1alpha1/zoneservers")) == 2, what="2 zones"
    )
    zones = cluster.objects("tessera.io/v1alpha1/zoneservers")
    assert sorted(zones) == ["earth-0", "earth-1"]
    z0, z1 = zones["earth-0"], zones["earth-1"]
    assert z0["spec"]["bounds"] == {"minX": 0, "minZ": 0, "maxX": 512, "maxZ": 512}
    assert z1["spec"]["bounds"] == {"minX": 512, "minZ": 0, "maxX": 1024, "maxZ": 512}
    assert z1["spec"]["parent"] == "earth-0" and z1["spec"]["depth"] == 1
    (owner,) = z0["metadata"]["ownerReferences"]
    assert owner["kind"] == "World" and owner["uid"] == created["metadata"]["uid"]
    assert z0["metadata"]["labels"]["tessera.io/world"] == "earth"

    await eventually(lambda: len(cluster.objects("apps/v1/deployments")) == 2, what="deployments")
    await eventually(lambda: len(cluster.objects("v1/services")) == 2, what="services")
    deployment = cluster.objects("apps/v1/deployments")["earth-1"]
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "ZoneServer"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == z1["metadata"]["uid"]
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 45
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TESSERA_ZONE"] == "earth-1"
    assert env["TESSERA_WORLD"] == "earth"
    assert env["TESSERA_ZONE_BOUNDS"] == "512,0,1024,512"
    assert env["TESSERA_WORLD_BOUNDS"] == "0,0,1024,512"
    assert env["TESSERA_REDIS_URL"] == "redis://redis.games.svc:6379/0"
    assert env["TESSERA_TICK_HZ"] == "20"
    assert container["image"] == "tessera:test"
    assert container["readinessProbe"]["grpc"]["port"] == 50051
    assert container["livenessProbe"]["grpc"]["port"] == 50051
    assert "tessera.operator.prestop" in container["lifecycle"]["preStop"]["exec"]["command"]
    service = cluster.objects("v1/services")["earth-1"]
    assert service["spec"]["selector"] == {
        "tessera.io/world": "earth",
        "tessera.io/zone": "earth-1",
    }

    async def map_published() -> bool:
        published = await zone_map(redis)
        return published is not None and len(published.zones) == 2

    await eventually(map_published, what="zone map")
    await eventually(
        lambda: (
            cluster.objects("tessera.io/v1alpha1/worlds")["earth"].get("status", {}).get("replicas")
            == 2
        ),
        what="world status",
    )
    status = cluster.objects("tessera.io/v1alpha1/worlds")["earth"]["status"]
    assert status["selector"] == "tessera.io/world=earth"
    assert status["zonesByPhase"] == {"Pending": 2}
    events = cluster.objects("v1/events")
    assert {e["reason"] for e in events.values()} == {"Initial"}


async def test_load_over_the_threshold_splits_a_zone(
    cluster: Cluster, operator: OperatorConfig, redis: Redis
) -> None:
    await cluster.apply(WORLDS, world())
    await eventually(
        lambda: "earth-0" in cluster.objects("tessera.io/v1alpha1/zoneservers"), what="zone"
    )
    whole = {"minX": 0, "minZ": 0, "maxX": 1024, "maxZ": 512}
    await heartbeat(redis, "earth-0", whole, players=30)  # under the high-water mark (40)

    def zone_status() -> dict[str, Any]:
        obj = cluster.objects("tessera.io/v1alpha1/zoneservers")["earth-0"]
        status: dict[str, Any] = obj.get("status", {})
        return status

    await eventually(lambda: zone_status().get("players") == 30, what="status patched")
    assert zone_status()["phase"] == "Ready"
    assert zone_status()["endpoint"] == "127.0.0.1:1"
    assert zone_status()["tickP99Ms"] == 4.5
    assert len(cluster.objects("tessera.io/v1alpha1/zoneservers")) == 1

    await heartbeat(redis, "earth-0", whole, players=100)  # players at x = 150 .. 249
    await eventually(
        lambda: "earth-1" in cluster.objects("tessera.io/v1alpha1/zoneservers"), what="split"
    )
    zones = cluster.objects("tessera.io/v1alpha1/zoneservers")
    median = 200  # 199.5, rounded to a whole metre
    assert zones["earth-1"]["spec"]["bounds"] == {
        "minX": median,
        "minZ": 0,
        "maxX": 1024,
        "maxZ": 512,
    }
    assert zones["earth-1"]["spec"]["parent"] == "earth-0"
    await eventually(
        lambda: (
            cluster.objects("tessera.io/v1alpha1/zoneservers")["earth-0"]["spec"]["bounds"]["maxX"]
            == median
        ),
        what="parent re-bounded",
    )
    assert cluster.objects("tessera.io/v1alpha1/zoneservers")["earth-0"]["spec"]["depth"] == 1

    def split_events() -> list[dict[str, Any]]:
        return [e for e in cluster.objects("v1/events").values() if e["reason"] == "Split"]

    await eventually(lambda: bool(split_events()), what="Split event")
    await eventually(
        lambda: (
            cluster.objects("tessera.io/v1alpha1/worlds")["earth"]["status"].get("pending") == []
        ),
        what="pass finished",
    )
    split = split_events()
    assert len(split) == 1 and "100 players > 40" in split[0]["message"]
    assert split[0]["involvedObject"]["name"] == "earth"
    world_status = cluster.objects("tessera.io/v1alpha1/worlds")["earth"]["status"]
    assert world_status["lastDecision"]["action"] == "Split"
    stream: Any = await redis.xrange(WorldKeys("earth").events)
    assert [fields[b"decision"] for _, fields in stream] == [b"Initial", b"Split"]

    published = await zone_map(redis)
    assert published is not None and published.version >= 2
    assert {e.zone: (e.bounds.min_x, e.bounds.max_x) for e in published.zones} == {
        "earth-0": (0, median),
        "earth-1": (median, 1024),
    }


async def test_deleting_a_zoneserver_waits_until_it_reports_drained(
    cluster: Cluster, operator: OperatorConfig, redis: Redis
) -> None:
    await cluster.apply(WORLDS, world(minZones=2))
    await eventually(
        lambda: len(cluster.objects("tessera.io/v1alpha1/zoneservers")) == 2, what="zones"
    )
    zones = cluster.objects("tessera.io/v1alpha1/zoneservers")
    for name, obj in zones.items():
        await heartbeat(redis, name, obj["spec"]["bounds"], players=10)
    await eventually(
        lambda: (
            "tessera.io/drain"
            in cluster.objects("tessera.io/v1alpha1/zoneservers")["earth-1"]["metadata"].get(
                "finalizers", []
            )
        ),
        what="finalizer",
    )
    await cluster.delete(f"{ZONES}/earth-1")

    # At minZones the area goes to a replacement zone; earth-1 drains into it.
    await eventually(
        lambda: "earth-2" in cluster.objects("tessera.io/v1alpha1/zoneservers"), what="replacement"
    )
    replacement = cluster.objects("tessera.io/v1alpha1/zoneservers")["earth-2"]
    assert replacement["spec"]["bounds"] == zones["earth-1"]["spec"]["bounds"]
    await eventually(
        lambda: (
            cluster.objects("tessera.io/v1alpha1/zoneservers")["earth-1"]["spec"].get(
                "desiredState"
            )
            == "Draining"
        ),
        what="drain ordered",
    )
    assert (
        cluster.objects("tessera.io/v1alpha1/zoneservers")["earth-1"]["spec"]["drainTarget"]
        == "earth-2"
    )

    bounds = zones["earth-1"]["spec"]["bounds"]
    await heartbeat(
        redis, "earth-1", bounds, state=zone_pb2.ZONE_STATE_DRAINING, players=4, remaining=4
    )
    await eventually(
        lambda: (
            cluster.objects("tessera.io/v1alpha1/zoneservers")["earth-1"]
            .get("status", {})
            .get("phase")
            == "Draining"
        ),
        what="draining phase",
    )
    await asyncio.sleep(2.0)  # several reconcile passes and finalizer retries
    assert "earth-1" in cluster.objects("tessera.io/v1alpha1/zoneservers"), "deleted before drained"
    assert (
        cluster.objects("tessera.io/v1alpha1/zoneservers")["earth-1"]["status"]["drainRemaining"]
        == 4
    )

    await heartbeat(redis, "earth-1", bounds, state=zone_pb2.ZONE_STATE_DRAINED)
    await eventually(
        lambda: "earth-1" not in cluster.objects("tessera.io/v1alpha1/zoneservers"), what="released"
    )
    published = await zone_map(redis)
    assert published is not None
    assert sorted(e.zone for e in published.zones) == ["earth-0", "earth-2"]


async def test_an_interrupted_pass_is_finished_from_the_intent_log(
    cluster: Cluster, operator: OperatorConfig, redis: Redis
) -> None:
    """A World whose status still holds actions of a pass that stopped halfway
    (operator crash, leader change): the next pass carries them out first."""
    obj = world()
    pending = resources.action_dict(
        CreateZone("earth-7", Rect(0, 0, 1024, 512), None, 0, 0, "Initial", "initial layout")
    )
    obj["status"] = {"pending": [pending], "planner": {"nextId": 8}}
    await cluster.apply(WORLDS, obj)
    await eventually(
        lambda: "earth-7" in cluster.objects("tessera.io/v1alpha1/zoneservers"), what="replayed"
    )
    await eventually(
        lambda: (
            cluster.objects("tessera.io/v1alpha1/worlds")["earth"]["status"].get("pending") == []
        ),
        what="log cleared",
    )
    await asyncio.sleep(1.0)
    # The replayed zone covers the world, so the planner creates nothing else.
    assert sorted(cluster.objects("tessera.io/v1alpha1/zoneservers")) == ["earth-7"]
    assert (
        cluster.objects("tessera.io/v1alpha1/worlds")["earth"]["status"]["planner"]["nextId"] == 8
    )


MATCH = "7d2f0c4b9a8e4f1d8c3b2a1908f7e6d5"
INSTANCE = "inst-7d2f0c4b9a8e4f1d8c3b2a19"


async def request_instance(redis: Redis, kind: str, at_ms: float) -> None:
    """What the matchmaker writes to the world's instance stream (the contract)."""
    fields: dict[str, str | bytes] = {
        "kind": kind,
        "match": MATCH,
        "zone": INSTANCE,
        "at_ms": str(int(at_ms)),
    }
    if kind == "create":
        fields["request"] = matchmaking_pb2.Assignment(
            match_id=MATCH,
            destination=matchmaking_pb2.Destination(
                kind=matchmaking_pb2.DESTINATION_KIND_INSTANCE, world="earth", zone=INSTANCE
            ),
            players=[matchmaking_pb2.PlayerAssignment(player_id=p) for p in ("ann", "bob")],
        ).SerializeToString()
    await redis.xadd(instances_stream("earth"), fields, maxlen=10000, approximate=True)  # type: ignore[arg-type]


async def unacknowledged(redis: Redis) -> int:
    info: Any = await redis.xpending(instances_stream("earth"), INSTANCES_GROUP)
    return int(info["pending"])


async def test_instance_is_created_on_request_and_ended_after_the_result(
    cluster: Cluster, operator: OperatorConfig, redis: Redis
) -> None:
    obj = world()
    obj["spec"]["instances"] = {"endGraceSeconds": 1, "idleSeconds": 600}
    await cluster.apply(WORLDS, obj)
    await eventually(
        lambda: "earth-0" in cluster.objects("tessera.io/v1alpha1/zoneservers"), what="zone"
    )
    whole = {"minX": 0, "minZ": 0, "maxX": 1024, "maxZ": 512}
    await heartbeat(redis, "earth-0", whole, players=3)
    await request_instance(redis, "create", time.time() * 1000)

    await eventually(
        lambda: INSTANCE in cluster.objects("tessera.io/v1alpha1/zoneservers"), what="instance"
    )
    zs = cluster.objects("tessera.io/v1alpha1/zoneservers")[INSTANCE]
    assert zs["spec"]["instance"] == {"match": MATCH}
    assert zs["spec"]["bounds"] == whole and "parent" not in zs["spec"]
    assert zs["spec"]["desiredState"] == "Active"
    await eventually(
        lambda: INSTANCE in cluster.objects("apps/v1/deployments"), what="instance deployment"
    )
    (container,) = cluster.objects("apps/v1/deployments")[INSTANCE]["spec"]["template"]["spec"][
        "containers"
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TESSERA_ZONE_INSTANCE"] == MATCH
    assert env["TESSERA_ZONE_BOUNDS"] == env["TESSERA_WORLD_BOUNDS"] == "0,0,1024,512"

    async def acknowledged() -> bool:
        return await unacknowledged(redis) == 0

    await eventually(acknowledged, what="create acknowledged")
    await heartbeat(redis, INSTANCE, whole, players=2, instance=MATCH)
    await eventually(
        lambda: (
            cluster.objects("tessera.io/v1alpha1/zoneservers")[INSTANCE]
            .get("status", {})
            .get("phase")
            == "Ready"
        ),
        what="instance ready",
    )
    published = await zone_map(redis)
    assert published is not None and [e.zone for e in published.zones] == ["earth-0"]
    world_status = cluster.objects("tessera.io/v1alpha1/worlds")["earth"]["status"]
    assert world_status["replicas"] == 1
    await eventually(
        lambda: cluster.objects("tessera.io/v1alpha1/worlds")["earth"]["status"]["instances"] == 1,
        what="instances counted",
    )
    await asyncio.sleep(1.0)  # the instance lives on while its match runs
    assert (
        cluster.objects("tessera.io/v1alpha1/zoneservers")[INSTANCE]["spec"]["desiredState"]
        == "Active"
    )

    ended_at = time.time()
    await request_instance(redis, "end", ended_at * 1000)
    await eventually(
        lambda: (
            cluster.objects("tessera.io/v1alpha1/zoneservers")[INSTANCE]["spec"]["desiredState"]
            == "Draining"
        ),
        what="instance drained",
    )
    assert time.time() - ended_at >= 1.0  # not before endGraceSeconds
    assert (
        cluster.objects("tessera.io/v1alpha1/zoneservers")[INSTANCE]["spec"].get("drainTarget")
        is None
    )  # its players go to the open-world zone that owns their position
    await eventually(acknowledged, what="end acknowledged")
    await heartbeat(redis, INSTANCE, whole, state=zone_pb2.ZONE_STATE_DRAINED, instance=MATCH)
    await eventually(
        lambda: INSTANCE not in cluster.objects("tessera.io/v1alpha1/zoneservers"),
        what="instance deleted",
    )
    assert sorted(cluster.objects("tessera.io/v1alpha1/zoneservers")) == ["earth-0"]
    reasons = [e["reason"] for e in cluster.objects("v1/events").values()]
    assert {"Instance", "InstanceEnd", "Drained"} <= set(reasons)
    end_event = next(
        e for e in cluster.objects("v1/events").values() if e["reason"] == "InstanceEnd"
    )
    assert f"match {MATCH} was reported" in end_event["message"]
    stream: Any = await redis.xrange(WorldKeys("earth").events)
    decisions = [fields[b"decision"] for _, fields in stream]
    assert decisions.count(b"Instance") == 1 and decisions.count(b"InstanceEnd") == 1


async def test_instances_wait_for_room_and_bad_entries_are_dropped(
    cluster: Cluster, operator: OperatorConfig, redis: Redis
) -> None:
    obj = world()
    obj["spec"]["instances"] = {"maxInstances": 0}
    await cluster.apply(WORLDS, obj)
    await redis.xadd(instances_stream("earth"), {"kind": "explode", "match": "x"})
    await request_instance(redis, "create", time.time() * 1000)
    await eventually(
        lambda: "earth-0" in cluster.objects("tessera.io/v1alpha1/zoneservers"), what="zone"
    )

    async def only_the_request_waits() -> bool:
        return await unacknowledged(redis) == 1

    await eventually(only_the_request_waits, what="bad entry dropped")
    await asyncio.sleep(1.0)  # several passes: the request keeps waiting
    assert await unacknowledged(redis) == 1
    assert INSTANCE not in cluster.objects("tessera.io/v1alpha1/zoneservers")


async def test_deleting_an_instance_zoneserver_drains_it_with_no_target(
    cluster: Cluster, operator: OperatorConfig, redis: Redis
) -> None:
    await cluster.apply(WORLDS, world())
    await request_instance(redis, "create", time.time() * 1000)
    await eventually(
        lambda: INSTANCE in cluster.objects("tessera.io/v1alpha1/zoneservers"), what="instance"
    )
    whole = {"minX": 0, "minZ": 0, "maxX": 1024, "maxZ": 512}
    await heartbeat(redis, INSTANCE, whole, players=2, instance=MATCH)
    await cluster.delete(f"{ZONES}/{INSTANCE}")

    def spec() -> dict[str, Any]:
        obj = cluster.objects("tessera.io/v1alpha1/zoneservers").get(INSTANCE, {})
        return dict(obj.get("spec") or {})

    await eventually(lambda: spec().get("desiredState") == "Draining", what="drain ordered")
    assert spec().get("drainTarget") is None
    # Held by the finalizer while players are still being handed back.
    await heartbeat(
        redis, INSTANCE, whole, state=zone_pb2.ZONE_STATE_DRAINING, remaining=2, instance=MATCH
    )
    await asyncio.sleep(1.0)
    assert INSTANCE in cluster.objects("tessera.io/v1alpha1/zoneservers")
    await heartbeat(redis, INSTANCE, whole, state=zone_pb2.ZONE_STATE_DRAINED, instance=MATCH)
    await eventually(
        lambda: INSTANCE not in cluster.objects("tessera.io/v1alpha1/zoneservers"),
        what="released",
    )
    assert "earth-0" in cluster.objects("tessera.io/v1alpha1/zoneservers")
    reasons = {e["reason"]: e["message"] for e in cluster.objects("v1/events").values()}
    assert reasons["InstanceEnd"] == f"end instance {INSTANCE}: the ZoneServer is being deleted"
