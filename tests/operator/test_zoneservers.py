"""The Kubernetes runtime's pass (zoneservers.py) replacing zones by handoff,
kopf against KMock's emulator and a real Redis: a changed zone template rolls
over the zones one at a time, and a cordoned node's zones are replaced first.
Zones are simulated through their real interface, heartbeats in Redis."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY
from redis.asyncio import Redis

from tessera.operator.handlers import OperatorConfig
from tessera.v1 import zone_pb2

from .conftest import Cluster, eventually
from .test_handlers import NS, WORLDS, heartbeat, world

ZS = "tessera.io/v1alpha1/zoneservers"
WEST: dict[str, float] = {"minX": 0, "minZ": 0, "maxX": 512, "maxZ": 512}
EAST: dict[str, float] = {"minX": 512, "minZ": 0, "maxX": 1024, "maxZ": 512}


def outdated() -> float | None:
    return REGISTRY.get_sample_value("tessera_operator_zones_outdated", {"world": "earth"})


def zones(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return cluster.objects(ZS)


def world_status(cluster: Cluster) -> dict[str, Any]:
    status: dict[str, Any] = cluster.objects("tessera.io/v1alpha1/worlds")["earth"].get(
        "status", {}
    )
    return status


async def two_ready_zones(cluster: Cluster, redis: Redis) -> None:
    await cluster.apply(WORLDS, world(minZones=2))
    await eventually(lambda: len(zones(cluster)) == 2, what="2 zones")
    await heartbeat(redis, "earth-0", WEST, players=10)
    await heartbeat(redis, "earth-1", EAST, players=10)
    await eventually(
        lambda: all(z.get("status", {}).get("phase") == "Ready" for z in zones(cluster).values()),
        what="zones ready",
    )


async def replaced(
    cluster: Cluster, redis: Redis, *, old: str, new: str, bounds: dict[str, float]
) -> None:
    """``new`` starts as a standby, takes ``old``'s rectangle, ``old`` drains into it and goes."""
    await eventually(lambda: new in zones(cluster), what=f"standby {new}")
    assert zones(cluster)[new]["spec"]["desiredState"] == "Standby"
    await heartbeat(redis, new, bounds, state=zone_pb2.ZONE_STATE_STANDBY)
    await eventually(
        lambda: zones(cluster)[old]["spec"].get("desiredState") == "Draining",
        what=f"{old} draining",
    )
    spec = zones(cluster)[new]["spec"]
    assert spec["desiredState"] == "Active" and spec["bounds"] == bounds
    assert len(zones(cluster)) == 3  # maxSurge 1: no other replacement started
    assert zones(cluster)[old]["spec"]["drainTarget"] == new
    await heartbeat(redis, new, bounds, players=10)
    await heartbeat(redis, old, bounds, state=zone_pb2.ZONE_STATE_DRAINED)
    await eventually(lambda: old not in zones(cluster), what=f"{old} deleted")


async def test_a_new_zone_template_replaces_the_zones_one_at_a_time(
    cluster: Cluster, operator: OperatorConfig, redis: Redis
) -> None:
    await two_ready_zones(cluster, redis)
    await eventually(lambda: world_status(cluster).get("updatedZones") == 2, what="status")
    await cluster.patch(
        f"{WORLDS}/earth", {"spec": {"zoneTemplate": {"image": "tessera:v2", "tickRate": 40}}}
    )
    await eventually(lambda: world_status(cluster).get("updatedZones") == 0, what="outdated")
    await eventually(lambda: outdated() == 2, what="the outdated gauge")

    await replaced(cluster, redis, old="earth-0", new="earth-2", bounds=WEST)
    # One at a time: earth-1 kept running while earth-0 handed over, and now
    # goes on as the child of earth-2 (so the pair can still merge).
    assert zones(cluster)["earth-1"]["spec"]["desiredState"] == "Active"
    assert zones(cluster)["earth-1"]["spec"]["parent"] == "earth-2"
    assert zones(cluster)["earth-2"]["spec"]["template"]["image"] == "tessera:v2"
    await eventually(lambda: world_status(cluster).get("updatedZones") == 1, what="1 of 2")

    await replaced(cluster, redis, old="earth-1", new="earth-3", bounds=EAST)
    await eventually(lambda: world_status(cluster).get("updatedZones") == 2, what="2 of 2")
    assert sorted(zones(cluster)) == ["earth-2", "earth-3"]
    assert world_status(cluster)["replicas"] == 2
    await eventually(lambda: outdated() == 0, what="the gauge at 0")
    pod = cluster.objects("apps/v1/deployments")["earth-3"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "tessera:v2"
    assert {"name": "TESSERA_TICK_HZ", "value": "40"} in pod["containers"][0]["env"]
    rollout = [e for e in cluster.objects("v1/events").values() if e["reason"] == "Rollout"]
    assert sorted(e["message"].split()[1] for e in rollout) == ["earth-0", "earth-1"]


async def test_zones_on_a_cordoned_node_are_replaced_first(
    cluster: Cluster, operator: OperatorConfig, redis: Redis
) -> None:
    for node in ("node-a", "node-b"):
        await cluster.apply("/api/v1/nodes", {"metadata": {"name": node}, "spec": {}})
    await two_ready_zones(cluster, redis)
    for zone, node in (("earth-0", "node-a"), ("earth-1", "node-b")):
        pod = {
            "metadata": {
                "name": f"{zone}-pod",
                "labels": {"tessera.io/world": "earth", "tessera.io/zone": zone},
            },
            "spec": {"nodeName": node, "containers": [{"name": "zone", "image": "x"}]},
        }
        await cluster.apply(f"/api/v1/namespaces/{NS}/pods", pod)
    await eventually(
        lambda: len(cluster.objects("policy/v1/poddisruptionbudgets")) == 2, what="PDBs"
    )
    pdb = cluster.objects("policy/v1/poddisruptionbudgets")["earth-1"]
    assert pdb["spec"]["maxUnavailable"] == 0
    assert pdb["spec"]["selector"]["matchLabels"]["tessera.io/zone"] == "earth-1"

    await cluster.patch("/api/v1/nodes/node-b", {"spec": {"unschedulable": True}})  # kubectl cordon
    await replaced(cluster, redis, old="earth-1", new="earth-2", bounds=EAST)
    assert zones(cluster)["earth-0"]["spec"]["desiredState"] == "Active"
    drains = [e for e in cluster.objects("v1/events").values() if e["reason"] == "NodeDrain"]
    assert len(drains) == 1 and "earth-1" in drains[0]["message"]
