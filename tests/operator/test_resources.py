"""Kubernetes objects in and out: World parsing (defaults equal to the CRD's,
the CRD's rules repeated), ZoneServer views and phases, the workload, statuses,
events and the intent log."""

from __future__ import annotations

import datetime
from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tessera.operator import resources
from tessera.operator.planner.actions import (
    Adopt,
    AssignStandby,
    CreateZone,
    Delete,
    Drain,
    Plan,
    Rebound,
)
from tessera.operator.planner.model import (
    Desired,
    InstancePolicy,
    InstanceRequest,
    Memory,
    Phase,
    Policy,
    Rollout,
    ZoneView,
)
from tessera.operator.resources import SpecError, WorkloadSettings
from tessera.v1 import common_pb2, matchmaking_pb2, zone_pb2
from tessera.wire.geometry import Rect

CRD = Path(__file__).resolve().parents[2] / "manifests" / "crds" / "worlds.tessera.io.yaml"


def world_obj(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tessera.io/v1alpha1",
        "kind": "World",
        "metadata": {"name": "earth", "namespace": "games", "uid": "w-uid"},
        "spec": {
            "bounds": {"minX": 0, "minZ": 0, "maxX": 1024, "maxZ": 1024},
            "zoneTemplate": {"image": "tessera:1"},
            **spec,
        },
    }


def test_policy_defaults_match_the_crd() -> None:
    crd = yaml.safe_load(CRD.read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]
    auto = {k: v.get("default") for k, v in props["autoscaling"]["properties"].items()}
    parsed = resources.world_spec(world_obj())
    p = parsed.policy
    assert (p.enabled, p.mode, p.target_players) == (
        auto["enabled"],
        auto["mode"],
        auto["targetPlayersPerZone"],
    )
    assert (p.split_threshold, p.merge_threshold) == (
        auto["splitThreshold"],
        auto["mergeThreshold"],
    )
    assert (p.split_window_s, p.merge_window_s, p.cooldown_s) == (
        auto["splitStabilizationSeconds"],
        auto["mergeStabilizationSeconds"],
        auto["cooldownSeconds"],
    )
    assert (p.min_zones, p.max_zones, p.min_zone_size, p.max_depth) == (
        auto["minZones"],
        auto["maxZones"],
        auto["minZoneSize"],
        auto["maxDepth"],
    )
    assert parsed.standby == props["standby"]["default"]
    assert parsed.drain_timeout_s == props["drainTimeoutSeconds"]["default"]
    assert parsed.layout == props["layout"]["default"]
    assert p == Policy()
    inst = {k: v.get("default") for k, v in props["instances"]["properties"].items()}
    i = parsed.instances
    assert (i.max_instances, i.start_timeout_s, i.idle_s, i.end_grace_s, i.max_lifetime_s) == (
        inst["maxInstances"],
        inst["startTimeoutSeconds"],
        inst["idleSeconds"],
        inst["endGraceSeconds"],
        inst["maxLifetimeSeconds"],
    )
    assert i == InstancePolicy()
    custom = resources.world_spec(world_obj(instances={"maxInstances": 3, "idleSeconds": 5}))
    assert custom.instances == InstancePolicy(max_instances=3, idle_s=5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"bounds": {"minX": 5, "minZ": 0, "maxX": 5, "maxZ": 10}}, "minX < maxX"),
        ({"bounds": {"minX": "a", "minZ": 0, "maxX": 5, "maxZ": 10}}, "numeric"),
        ({"bounds": {"minX": 0, "minZ": 0, "maxX": float("inf"), "maxZ": 10}}, "finite"),
        ({"autoscaling": {"minZones": 3, "maxZones": 2}}, "minZones must be <= maxZones"),
        ({"autoscaling": {"mergeThreshold": 500}}, "mergeThreshold < targetPlayersPerZone"),
        ({"autoscaling": {"minZoneSize": 2000}}, "at least autoscaling.minZoneSize"),
        ({"autoscaling": {"mode": "External"}}, "spec.replicas is required"),
        ({"zoneTemplate": {}}, "zoneTemplate.image is required"),
    ],
)
def test_bad_worlds(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        resources.world_spec(world_obj(**spec))


def test_world_name_must_be_a_dns_label() -> None:
    obj = world_obj()
    obj["metadata"]["name"] = "Earth"
    with pytest.raises(ValueError, match="DNS label"):
        resources.world_spec(obj)


@pytest.mark.parametrize(
    ("state", "previous", "phase"),
    [
        (None, None, Phase.PENDING),
        (None, "Pending", Phase.PENDING),
        (None, "Ready", Phase.FAILED),
        (None, "Drained", Phase.DRAINED),
        (zone_pb2.ZONE_STATE_STARTING, None, Phase.STARTING),
        (zone_pb2.ZONE_STATE_STANDBY, None, Phase.READY),
        (zone_pb2.ZONE_STATE_ACTIVE, "Failed", Phase.READY),
        (zone_pb2.ZONE_STATE_DRAINING, None, Phase.DRAINING),
        (zone_pb2.ZONE_STATE_DRAINED, None, Phase.DRAINED),
        (zone_pb2.ZONE_STATE_UNSPECIFIED, None, Phase.STARTING),
    ],
)
def test_phase_of(state: Any, previous: str | None, phase: Phase) -> None:
    status = None if state is None else zone_pb2.ZoneStatus(state=state)
    assert resources.phase_of(status, previous) == phase


def zs_obj(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tessera.io/v1alpha1",
        "kind": "ZoneServer",
        "metadata": {
            "name": "earth-1",
            "namespace": "games",
            "uid": "z-uid",
            "labels": resources.labels("earth", "earth-1"),
        },
        "spec": {
            "world": "earth",
            "bounds": {"minX": 512, "minZ": 0, "maxX": 1024, "maxZ": 1024},
            **spec,
        },
    }


def test_zone_view_reads_spec_and_heartbeat() -> None:
    status = zone_pb2.ZoneStatus(
        state=zone_pb2.ZONE_STATE_ACTIVE, players=7, sample_x=[600.0], sample_z=[10.0]
    )
    obj = zs_obj(parent="earth-0", depth=2, splitDepth=1, desiredState="Draining")
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    view = resources.zone_view(obj, status)
    assert view == ZoneView(
        "earth-1",
        Desired.DRAINING,
        Rect(512, 0, 1024, 1024),
        "earth-0",
        2,
        1,
        Phase.READY,
        7,
        (600.0,),
        (10.0,),
        managed=True,
        deleting=True,
    )
    # The heartbeat's samples, handed over as they are (not part of equality).
    assert view.sample_x is status.sample_x and list(view.sample_x) == [600.0]
    assert view.sample_z is status.sample_z and list(view.sample_z) == [10.0]
    hand_made = zs_obj()
    hand_made["metadata"]["labels"] = {}
    assert not resources.zone_view(hand_made, None).managed


def test_zoneserver_for_a_split_and_patches() -> None:
    world = world_obj()
    body = resources.zoneserver(
        world, CreateZone("earth-1", Rect(512, 0, 1024, 1024), "earth-0", 1, 1, "Split", "r")
    )
    assert body["spec"] == {
        "world": "earth",
        "desiredState": "Active",
        "depth": 1,
        "splitDepth": 1,
        "bounds": {"minX": 512, "minZ": 0, "maxX": 1024, "maxZ": 1024},
        "parent": "earth-0",
        "template": {"image": "tessera:1"},  # the World's zoneTemplate, kept
    }
    assert body["metadata"]["ownerReferences"][0]["uid"] == "w-uid"
    assert body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tessera-operator"
    standby = resources.zoneserver(world, CreateZone("earth-2", None, None, 0, 0, "Standby", "r"))
    assert standby["spec"]["desiredState"] == "Standby" and "bounds" not in standby["spec"]
    assert resources.zoneserver_patch(
        Rebound("earth-0", Rect(0, 0, 512, 1024), 1, "Split", "r")
    ) == {"spec": {"bounds": {"minX": 0, "minZ": 0, "maxX": 512, "maxZ": 1024}, "depth": 1}}
    assert resources.zoneserver_patch(Drain("earth-1", "earth-0", "Merge", "r")) == {
        "spec": {"desiredState": "Draining", "drainTarget": "earth-0"}
    }
    assign = resources.zoneserver_patch(
        AssignStandby("earth-2", Rect(0, 0, 1, 1), "earth-0", 3, 3, "Split", "r")
    )
    assert assign["spec"]["desiredState"] == "Active" and assign["spec"]["parent"] == "earth-0"


def test_deployment_of_a_zone() -> None:
    world = world_obj(
        drainTimeoutSeconds=90,
        zoneTemplate={
            "image": "tessera:1",
            "tickRate": 20,
            "resources": {"limits": {"cpu": "2"}},
            "env": [{"name": "TESSERA_NPCS", "value": "50"}],
        },
    )
    deployment = resources.deployment(
        zs_obj(image="tessera:2"), world, WorkloadSettings("redis://r:6379/0", "zones")
    )
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 120
    assert pod["serviceAccountName"] == "zones"
    (container,) = pod["containers"]
    assert container["image"] == "tessera:2"
    assert container["resources"] == {"limits": {"cpu": "2"}}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TESSERA_NPCS"] == "50"
    assert env["TESSERA_ADVERTISE_ADDRESS"] == "$(POD_IP):50051"
    assert env["TESSERA_DRAIN_TIMEOUT_S"] == "90"
    assert container["lifecycle"]["preStop"]["exec"]["command"][-2:] == ["--timeout", "90"]
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "tessera.io/world": "earth",
        "tessera.io/zone": "earth-1",
    }
    standby = resources.deployment(
        zs_obj(bounds=None, desiredState="Standby"), world, WorkloadSettings("redis://r:6379/0")
    )
    env = {
        e["name"]: e.get("value")
        for e in standby["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TESSERA_ZONE_BOUNDS"] == ""


def test_zone_status_and_bounds_condition() -> None:
    spec = resources.world_spec(world_obj())
    status = zone_pb2.ZoneStatus(
        address="10.0.0.5:50051",
        state=zone_pb2.ZONE_STATE_DRAINING,
        players=3,
        drain_remaining=3,
        tick_p99_ms=12.3456,
        map_version=4,
    )
    obj = zs_obj(
        bounds={"minX": 512, "minZ": 0, "maxX": 2048, "maxZ": 1024}, desiredState="Draining"
    )
    view = resources.zone_view(obj, status)
    out = resources.zone_status(obj, view, status, spec, "2026-01-01T00:00:00+00:00")
    assert out["phase"] == "Draining" and out["drainRemaining"] == 3
    assert out["endpoint"] == "10.0.0.5:50051" and out["tickP99Ms"] == 12.346
    assert out["density"] == round(3 / (1536 * 1024 / 1e6), 3)
    assert out["conditions"][0]["status"] == "False"
    assert "outside the world" in out["conditions"][0]["message"]
    assert out["drainStartedAt"] == "2026-01-01T00:00:00+00:00"
    obj["status"] = out
    again = resources.zone_status(obj, view, status, spec, "2026-01-01T00:00:05+00:00")
    assert "conditions" not in again and "drainStartedAt" not in again
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp()
    assert not resources.status_due(out, again, t0 + 5)


def test_status_writes_are_throttled_unless_urgent() -> None:
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp()
    previous = {"phase": "Ready", "players": 5, "updatedAt": "2026-01-01T00:00:00+00:00"}
    assert not resources.status_due(previous, {**previous, "players": 6}, t0 + 14)
    assert resources.status_due(previous, {**previous, "players": 6}, t0 + 15)
    assert resources.status_due(previous, {**previous, "phase": "Draining"}, t0 + 1)
    assert resources.status_due({}, {"phase": "Pending", "updatedAt": "x"}, t0)
    assert resources.status_due({"players": 1}, {"players": 2}, t0)  # never written by us


def test_world_status_and_event() -> None:
    spec = resources.world_spec(world_obj())
    views = [
        ZoneView("earth-0", Desired.ACTIVE, Rect(0, 0, 1024, 1024), phase=Phase.READY, players=450),
        ZoneView("earth-9", Desired.STANDBY, phase=Phase.READY),
    ]
    split = Rebound("earth-0", Rect(0, 0, 512, 1024), 1, "Split", "split earth-0")
    result = Plan((split,), (), Memory(next_id=10))
    out = resources.world_status(spec, views, result, map_version=3, previous={}, now="t")
    assert out["replicas"] == 1 and out["standbyZones"] == 1
    assert out["zonesByPhase"] == {"Ready": 2}
    assert out["totalPlayers"] == 450 and out["recommendedZones"] == 3
    assert out["lastDecision"] == {
        "time": "t",
        "action": "Split",
        "zone": "earth-0",
        "reason": "split earth-0",
    }
    assert out["planner"]["nextId"] == 10
    assert (
        out["conditions"][0]["type"] == "Partitioned" and out["conditions"][0]["status"] == "True"
    )
    event = resources.event(world_obj(), split, "t", instance="op-1")
    assert event["reason"] == "Split" and event["type"] == "Normal"
    assert event["involvedObject"]["uid"] == "w-uid"
    timeout = Delete("earth-3", True, "DrainTimeout", "slow")
    assert resources.event(world_obj(), timeout, "t", instance="op-1")["type"] == "Warning"


@pytest.mark.parametrize(
    "action",
    [
        CreateZone("a", Rect(0, 0, 1, 2), "p", 1, 1, "Split", "r"),
        CreateZone("a", None, None, 0, 0, "Standby", "r"),
        AssignStandby("a", Rect(0, 0, 1, 2), None, 0, 0, "Replace", "r"),
        Rebound("a", Rect(0, 0, 1, 2), 3, "Merge", "r"),
        Adopt("a", "b", "Rollout", "r"),
        Drain("a", None, "Delete", "r"),
        Delete("a", True, "DrainTimeout", "r"),
    ],
)
def test_intent_log_round_trip(action: Any) -> None:
    assert resources.action_of(resources.action_dict(action)) == action


def test_intent_log_rejects_garbage() -> None:
    with pytest.raises(SpecError):
        resources.action_of({"type": "Explode"})
    with pytest.raises(SpecError):
        resources.action_of({"type": "Drain", "zone": "a"})


def test_map_entries_list_zones_with_bounds() -> None:
    spec = resources.world_spec(world_obj())
    views = [
        ZoneView("a", Desired.ACTIVE, Rect(0, 0, 512, 1024), managed=True),
        ZoneView("b", Desired.ACTIVE, Rect(512, 0, 1024, 1024), managed=True),
        ZoneView("c", Desired.DRAINING, Rect(512, 0, 1024, 1024), managed=True),
        ZoneView("d", Desired.STANDBY, managed=True),
        ZoneView("e", Desired.ACTIVE, Rect(0, 0, 1, 1), managed=False),
    ]
    statuses = {"a": zone_pb2.ZoneStatus(address="h:1", state=zone_pb2.ZONE_STATE_ACTIVE)}
    entries = resources.map_entries(spec, views, statuses)
    assert [(e.zone, e.address, e.state) for e in entries] == [
        ("a", "h:1", zone_pb2.ZONE_STATE_ACTIVE),
        ("b", "", zone_pb2.ZONE_STATE_STARTING),
    ]
    assert entries[0].bounds == common_pb2.Bounds(min_x=0, min_z=0, max_x=512, max_z=1024)


MATCH = "0f3c9a1e5b7d4c2a8e6f1b3d5c7a9e0f"
ZONE = "inst-0f3c9a1e5b7d4c2a8e6f1b3d"


def test_instance_zoneserver_view_and_workload() -> None:
    world = world_obj()
    body = resources.zoneserver(
        world,
        CreateZone(ZONE, Rect(0, 0, 1024, 1024), None, 0, 0, "Instance", "r", instance=MATCH),
    )
    assert body["spec"]["instance"] == {"match": MATCH}
    assert body["spec"]["bounds"] == {"minX": 0, "minZ": 0, "maxX": 1024, "maxZ": 1024}
    assert "parent" not in body["spec"]
    body["metadata"]["creationTimestamp"] = "2026-01-01T00:00:10Z"
    view = resources.zone_view(body, None)
    assert view.instance == MATCH
    assert view.created == datetime.datetime(2026, 1, 1, 0, 0, 10, tzinfo=datetime.UTC).timestamp()
    assert resources.zone_view(zs_obj(), None).instance is None
    env = {
        e["name"]: e.get("value")
        for e in resources.deployment(body, world, WorkloadSettings("redis://r:6379/0"))["spec"][
            "template"
        ]["spec"]["containers"][0]["env"]
    }
    assert env["TESSERA_ZONE_INSTANCE"] == MATCH
    assert env["TESSERA_ZONE_BOUNDS"] == env["TESSERA_WORLD_BOUNDS"] == "0,0,1024,1024"
    plain = resources.deployment(zs_obj(), world, WorkloadSettings("redis://r:6379/0"))
    names = {e["name"] for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "TESSERA_ZONE_INSTANCE" not in names
    # Given where and how to report, instance zones (only) get it for their result.
    reporting = WorkloadSettings(
        "redis://r:6379/0", matchmaking_address="mm:50051", service_secret="clients"
    )
    (inst,) = resources.deployment(body, world, reporting)["spec"]["template"]["spec"]["containers"]
    got = {e["name"]: e.get("value") or e.get("valueFrom") for e in inst["env"]}
    assert got["TESSERA_MATCHMAKING_ADDRESS"] == "mm:50051"
    assert got["TESSERA_SERVICE_CLIENT_ID"] == "zone"
    assert got["TESSERA_SERVICE_CLIENT_SECRET"] == {
        "secretKeyRef": {"name": "clients", "key": "zone-client-secret"}
    }
    (open_world,) = resources.deployment(zs_obj(), world, reporting)["spec"]["template"]["spec"][
        "containers"
    ]
    assert not {e["name"] for e in open_world["env"]} & {
        "TESSERA_MATCHMAKING_ADDRESS",
        "TESSERA_SERVICE_CLIENT_SECRET",
    }
    action = CreateZone(ZONE, Rect(0, 0, 1, 1), None, 0, 0, "Instance", "r", instance=MATCH)
    assert resources.action_of(resources.action_dict(action)) == action
    # The intent log keeps the mode; an entry written before modes reads as none.
    moded = replace(action, mode="arena")
    assert resources.action_of(resources.action_dict(moded)) == moded
    older = {k: v for k, v in resources.action_dict(moded).items() if k != "mode"}
    assert resources.action_of(older) == action
    assert resources.timestamp("yesterday") is None and resources.timestamp(None) is None


def test_instances_stay_out_of_the_map_and_the_replica_count() -> None:
    policy = {"targetPlayersPerZone": 2, "mergeThreshold": 1, "splitThreshold": 3}
    spec = resources.world_spec(world_obj(autoscaling=policy))
    views = [
        ZoneView("a", Desired.ACTIVE, Rect(0, 0, 1024, 1024), phase=Phase.READY, players=3),
        ZoneView(ZONE, Desired.ACTIVE, Rect(0, 0, 1024, 1024), instance=MATCH, players=4),
    ]
    statuses = {ZONE: zone_pb2.ZoneStatus(address="h:2", instance=MATCH)}
    assert [e.zone for e in resources.map_entries(spec, views, statuses)] == ["a"]
    status = resources.world_status(
        spec, views, Plan((), (), Memory()), map_version=1, previous={}, now="t"
    )
    assert (status["replicas"], status["instances"], status["totalPlayers"]) == (1, 1, 7)
    assert status["recommendedZones"] == 2  # from the open world's 3 players only


def assignment(**destination: Any) -> bytes:
    dest = {
        "kind": matchmaking_pb2.DESTINATION_KIND_INSTANCE,
        "world": "earth",
        "zone": ZONE,
        **destination,
    }
    return matchmaking_pb2.Assignment(
        match_id=MATCH,
        destination=matchmaking_pb2.Destination(**dest),
        players=[matchmaking_pb2.PlayerAssignment(player_id=p) for p in ("ann", "bob")],
    ).SerializeToString()


def fields(**kw: Any) -> dict[bytes, bytes]:
    base = {"kind": "create", "match": MATCH, "zone": ZONE, "at_ms": "1700000000500"}
    base.update(kw)
    out = {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in base.items()}
    out.setdefault(b"request", assignment())
    return {k: v for k, v in out.items() if v is not None}


def test_instance_request_decodes_the_contract_format() -> None:
    assert resources.instance_request("earth", "1-0", fields()) == InstanceRequest(
        "1-0", "create", MATCH, ZONE, 1700000000.5, ("ann", "bob")
    )
    end = {k: v for k, v in fields(kind="end").items() if k != b"request"}
    assert resources.instance_request("earth", "2-0", end) == InstanceRequest(
        "2-0", "end", MATCH, ZONE, 1700000000.5
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({}, "kind must be create or end"),
        (fields(kind="start"), "kind must be create or end"),
        (fields(match="a b"), "bad match id"),
        (fields(match=""), "bad match id"),
        (fields(match="Match_1"), "bad match id"),  # the zone needs a DNS label
        (fields(zone="earth-0"), "not the instance zone"),
        (fields(at_ms="soon"), "at_ms must be a number"),
        (fields(at_ms="inf"), "at_ms must be finite"),
        (fields(request=b"\xff\xff"), "not a serialized Assignment"),
        (fields(request=assignment(world="mars")), "not 0f3c"),
        (fields(request=assignment(kind=1)), "not an instance"),
    ],
)
def test_bad_instance_requests(entry: dict[bytes, bytes], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        resources.instance_request("earth", "1-0", entry)


def test_rollout_and_template_revision() -> None:
    crd = yaml.safe_load(CRD.read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["rollout"]["properties"]
    default = resources.world_spec(world_obj())
    assert default.rollout == Rollout(
        props["maxSurge"]["default"], props["maxUnavailable"]["default"], props["paused"]["default"]
    )
    custom = resources.world_spec(world_obj(rollout={"maxSurge": 3, "paused": True}))
    assert custom.rollout == Rollout(max_surge=3, max_unavailable=1, paused=True)
    with pytest.raises(SpecError, match="at least 1"):
        resources.world_spec(world_obj(rollout={"maxUnavailable": 0}))
    # The revision follows the template's content, not its key order.
    a = resources.world_spec(world_obj(zoneTemplate={"image": "tessera:1", "tickRate": 20}))
    b = resources.world_spec(world_obj(zoneTemplate={"tickRate": 20, "image": "tessera:1"}))
    c = resources.world_spec(world_obj(zoneTemplate={"image": "tessera:2", "tickRate": 20}))
    assert a.revision == b.revision != c.revision and len(a.revision) == 12


def test_a_zone_runs_and_reports_the_template_it_was_created_with() -> None:
    old = world_obj(zoneTemplate={"image": "tessera:1", "tickRate": 20})
    body = resources.zoneserver(old, CreateZone("earth-1", Rect(0, 0, 8, 8), None, 0, 0, "I", "r"))
    body["metadata"]["uid"] = "z-uid"
    new = world_obj(zoneTemplate={"image": "tessera:2", "tickRate": 40})
    view = resources.zone_view(body, None, evicting=True)
    assert view.revision == resources.world_spec(old).revision
    assert view.revision != resources.world_spec(new).revision and view.evicting
    # Re-rendering the workload after the World changed (a resumed operator)
    # keeps the zone's own template: no restart behind the planner's back.
    pod = resources.deployment(body, new, WorkloadSettings("redis://r"))["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "tessera:1"
    assert {"name": "TESSERA_TICK_HZ", "value": "20"} in container["env"]
    # A ZoneServer without a template (hand-applied, or older) runs the World's.
    assert resources.zone_view(zs_obj(), None).revision == ""
    pod = resources.deployment(zs_obj(), new, WorkloadSettings("redis://r"))["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == "tessera:2"


def test_the_game_module_is_part_of_the_zone_template() -> None:
    plain = world_obj()
    game = world_obj(game={"module": "studio.game"})
    assert resources.zone_template(game["spec"]) == {
        "image": "tessera:1",
        "gameModule": "studio.game",
    }
    # Unset, the template (and so the revision of existing worlds) is unchanged.
    assert resources.zone_template(plain["spec"]) == {"image": "tessera:1"}
    assert resources.world_spec(game).revision != resources.world_spec(plain).revision
    body = resources.zoneserver(game, CreateZone("earth-1", Rect(0, 0, 8, 8), None, 0, 0, "I", "r"))
    assert body["spec"]["template"]["gameModule"] == "studio.game"
    pod = resources.deployment(body, plain, WorkloadSettings("redis://r"))["spec"]["template"]
    env = pod["spec"]["containers"][0]["env"]
    assert {"name": "TESSERA_GAME_MODULE", "value": "studio.game"} in env
    pod = resources.deployment(zs_obj(), plain, WorkloadSettings("redis://r"))["spec"]["template"]
    assert all(e["name"] != "TESSERA_GAME_MODULE" for e in pod["spec"]["containers"][0]["env"])


def test_world_status_counts_updated_zones() -> None:
    world = resources.world_spec(world_obj())
    zones = [
        ZoneView("earth-0", bounds=Rect(0, 0, 512, 1024), revision=world.revision),
        ZoneView("earth-1", bounds=Rect(512, 0, 1024, 1024), revision="old"),
        ZoneView("earth-2", Desired.STANDBY, revision=world.revision),
    ]
    plan = Plan((), (), Memory())
    out = resources.world_status(world, zones, plan, map_version=1, previous={}, now="t")
    assert (out["replicas"], out["updatedZones"]) == (2, 1)
    assert resources.zoneserver_patch(Adopt("earth-1", "earth-2", "Rollout", "r")) == {
        "spec": {"parent": "earth-2"}
    }


KUBE_VERSIONS = ("1.27.0", "1.30.0", "1.33.0")


def test_zone_workload_is_hardened_and_valid() -> None:
    world = world_obj(zoneTemplate={"image": "tessera:1", "resources": {"limits": {"cpu": "1"}}})
    settings = WorkloadSettings(
        "redis://:$(REDIS_PASSWORD)@redis.games:6379/0",
        None,
        "tessera-redis",
        "pw",
        database_secret="tessera-database",
    )
    zs = zs_obj(template={"image": "tessera:1", "resources": {"limits": {"cpu": "1"}}})
    objects = [
        resources.deployment(zs, world, settings),
        resources.service(zs),
        resources.disruption_budget(zs),
    ]
    for obj in objects:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    pod = objects[0]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"] == {"limits": {"cpu": "1"}}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    env = [e["name"] for e in container["env"]]
    # The password comes from the Secret, before the URL that names it (kubelet expansion).
    assert env.index("REDIS_PASSWORD") < env.index("TESSERA_REDIS_URL")
    password = next(e for e in container["env"] if e["name"] == "REDIS_PASSWORD")
    assert password["valueFrom"] == {"secretKeyRef": {"name": "tessera-redis", "key": "pw"}}
    database = next(e for e in container["env"] if e["name"] == "TESSERA_DATABASE_URL")
    assert database["valueFrom"] == {"secretKeyRef": {"name": "tessera-database", "key": "url"}}
    spread = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert spread == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    pdb = objects[2]
    assert pdb["spec"] == {
        "maxUnavailable": 0,
        "selector": {"matchLabels": {"tessera.io/world": "earth", "tessera.io/zone": "earth-1"}},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    assert "TESSERA_TLS_CA_FILE" not in env and len(pod["volumes"]) == 1
    # auth serving TLS: the pod trusts the CA Secret's ca.crt, by the name given.
    tls = WorkloadSettings(
        "redis://r:6379/0", tls_ca_secret="tessera-tls", tls_server_name="tessera.internal"
    )
    obj = resources.deployment(zs, world, tls)
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)
    pod = obj["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    variables = {e["name"]: e.get("value") for e in container["env"]}
    assert variables["TESSERA_TLS_CA_FILE"] == "/var/run/tessera/tls-ca/ca.crt"
    assert variables["TESSERA_TLS_SERVER_NAME"] == "tessera.internal"
    assert {
        "name": "tls-ca",
        "secret": {"secretName": "tessera-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
    } in pod["volumes"]
    mount = {"name": "tls-ca", "mountPath": "/var/run/tessera/tls-ca", "readOnly": True}
    assert mount in container["volumeMounts"]
    # Without a Secret the URL is passed as it is.
    plain = resources.deployment(zs, world, WorkloadSettings("redis://r:6379/0"))
    names = [e["name"] for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert "REDIS_PASSWORD" not in names and "TESSERA_DATABASE_URL" not in names


def test_only_managed_open_world_zones_get_a_disruption_budget() -> None:
    assert resources.guarded(zs_obj())
    assert not resources.guarded(zs_obj(instance={"match": "m1"}))
    hand_made = zs_obj()
    hand_made["metadata"]["labels"] = {}
    assert not resources.guarded(hand_made)


def node(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


def pod(zone: str, node_name: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "metadata": {"name": f"{zone}-x", "labels": {"tessera.io/zone": zone}},
        "spec": {"nodeName": node_name},
    }
    out.update(extra)
    return out


@pytest.mark.parametrize(
    ("nodes", "pods", "expected"),
    [
        ([node("a"), node("b")], [pod("z0", "a"), pod("z1", "b")], set()),
        ([node("a", unschedulable=True), node("b")], [pod("z0", "a"), pod("z1", "b")], {"z0"}),
        (
            [node("a", taints=[{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}])],
            [pod("z0", "a")],
            {"z0"},
        ),
        (
            [node("a", taints=[{"key": "gpu", "effect": "NoSchedule"}])],
            [pod("z0", "a")],
            set(),
        ),
        (
            [node("a")],
            [
                pod(
                    "z0",
                    "a",
                    status={"conditions": [{"type": "DisruptionTarget", "status": "True"}]},
                )
            ],
            {"z0"},
        ),
        ([node("a", unschedulable=True)], [pod("z0", "b")], set()),
    ],
)
def test_evicting(nodes: list[Any], pods: list[Any], expected: set[str]) -> None:
    assert resources.evicting(pods, nodes) == expected


def test_an_instance_zone_runs_its_modes_module() -> None:
    modes = {"arena": {"module": "studio.arena"}}
    world = world_obj(game={"module": "studio.world", "modes": modes})
    assert resources.game_modules(world["spec"]) == {"arena": "studio.arena"}
    arena = CreateZone(ZONE, Rect(0, 0, 8, 8), None, 0, 0, "I", "r", instance=MATCH, mode="arena")
    body = resources.zoneserver(world, arena)
    assert body["spec"]["instance"] == {"match": MATCH, "mode": "arena"}
    assert body["spec"]["template"]["gameModule"] == "studio.arena"
    pod = resources.deployment(body, world, WorkloadSettings("redis://r"))["spec"]["template"]
    env = pod["spec"]["containers"][0]["env"]
    assert {"name": "TESSERA_GAME_MODULE", "value": "studio.arena"} in env
    # A ZoneServer without its template (hand-made) still runs its mode's module.
    del body["spec"]["template"]
    pod = resources.deployment(body, world, WorkloadSettings("redis://r"))["spec"]["template"]
    assert {"name": "TESSERA_GAME_MODULE", "value": "studio.arena"} in pod["spec"]["containers"][0][
        "env"
    ]
    # A mode without a module of its own, no mode, and the open world: the world's.
    for action in (
        replace(arena, mode="duel"),
        replace(arena, mode=""),
        CreateZone("earth-1", Rect(0, 0, 8, 8), None, 0, 0, "I", "r"),
    ):
        body = resources.zoneserver(world, action)
        assert body["spec"]["template"]["gameModule"] == "studio.world"
    assert resources.zoneserver(world, replace(arena, mode=""))["spec"]["instance"] == {
        "match": MATCH
    }


def test_changing_a_modes_module_does_not_roll_the_open_world() -> None:
    base = world_obj(game={"module": "studio.world"})
    revision = resources.world_spec(base).revision
    for modes in ({"arena": {"module": "studio.arena"}}, {"arena": {"module": "studio.arena2"}}):
        assert (
            resources.world_spec(world_obj(game={**base["spec"]["game"], "modes": modes})).revision
            == revision
        )
    assert resources.world_spec(world_obj(game={"module": "studio.world2"})).revision != revision


@pytest.mark.parametrize(
    ("modes", "message"),
    [
        ("arena", "must map mode names"),
        ({"arena": "studio.arena"}, "not a module path"),
        ({"arena": {}}, "not a module path"),
        ({"arena": {"module": "studio arena"}}, "not a module path"),
        ({"": {"module": "studio.arena"}}, "1-64 printable"),
        ({"x" * 65: {"module": "studio.arena"}}, "1-64 printable"),
    ],
)
def test_bad_modes_are_refused(modes: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        resources.world_spec(world_obj(game={"modes": modes}))


def test_instance_request_carries_the_mode() -> None:
    request = resources.instance_request("earth", "1-0", fields(mode="arena"))
    assert request.mode == "arena"
    with pytest.raises(SpecError, match="bad mode"):
        resources.instance_request("earth", "1-0", fields(mode="a\nb"))
    with pytest.raises(SpecError, match="bad mode"):
        resources.instance_request("earth", "1-0", fields(mode="m" * 65))
