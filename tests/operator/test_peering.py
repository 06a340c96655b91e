"""Leader election: two operator replicas with kopf peering against the
emulator; only the higher-priority one acts, the other takes over when it stops."""

from __future__ import annotations

import asyncio
from typing import Any

import kmock

from tessera.harness.redis import LocalRedis

from .conftest import Cluster, OperatorThread, eventually, operator_config

NS = "games"
WORLDS = f"/apis/tessera.io/v1alpha1/namespaces/{NS}/worlds"


def world(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "tessera.io/v1alpha1",
        "kind": "World",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "bounds": {"minX": 0, "minZ": 0, "maxX": 512, "maxZ": 512},
            "zoneTemplate": {"image": "tessera:test"},
            "autoscaling": {"minZones": 2, "minZoneSize": 64},
        },
    }


def reporters(cluster: Cluster, world_name: str) -> set[str]:
    return {
        e["reportingInstance"]
        for e in cluster.objects("v1/events").values()
        if e.get("involvedObject", {}).get("name") == world_name
    }


async def test_only_the_leader_acts_and_the_other_takes_over(
    cluster: Cluster, redis_server: LocalRedis
) -> None:
    cluster.emulator.resources["kopf.dev/v1/clusterkopfpeerings"] = kmock.ResourceInfo(
        kind="ClusterKopfPeering", namespaced=False, verbs=["list", "watch", "get", "patch"]
    )
    cluster.emulator.objects["kopf.dev/v1/clusterkopfpeerings", None, "tessera"] = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": "tessera", "resourceVersion": "1"},
    }

    def peering() -> dict[str, Any]:
        obj = cluster.emulator.objects["kopf.dev/v1/clusterkopfpeerings", None, "tessera"]
        return dict(obj.raw)

    leader = OperatorThread(
        cluster,
        operator_config(redis_server.url, instance="op-a", standalone=False, priority=200),
    ).start()
    follower = OperatorThread(
        cluster,
        operator_config(redis_server.url, instance="op-b", standalone=False, priority=100),
    ).start()
    try:
        await eventually(lambda: len(peering().get("status") or {}) == 2, what="two peers")
        await cluster.apply(WORLDS, world("earth"))
        await eventually(
            lambda: len(cluster.objects("tessera.io/v1alpha1/zoneservers")) == 2, what="zones"
        )
        await asyncio.sleep(1.5)  # several timer intervals of both replicas
        assert reporters(cluster, "earth") == {"op-a"}
        assert len(cluster.objects("tessera.io/v1alpha1/zoneservers")) == 2

        await leader.stop()
        await eventually(lambda: len(peering().get("status") or {}) == 1, what="leader gone")
        await cluster.apply(WORLDS, world("mars"))
        await eventually(lambda: bool(reporters(cluster, "mars")), what="the follower acting")
        assert reporters(cluster, "mars") == {"op-b"}
        assert reporters(cluster, "earth") == {"op-a"}
    finally:
        if leader.thread.is_alive():
            await leader.stop()
        await follower.stop()
