"""The World and ZoneServer CRDs: example objects validated against their own
openAPIV3Schema (jsonschema, with structural defaulting) and their CEL rules.

The API server evaluates ``x-kubernetes-validations`` with CEL; here the rules
are evaluated by a translator for the small CEL subset they use (``has()``,
comparisons, ``&&``, ``||``, ``!``, arithmetic), so a rule that is wrong or
stops matching its message fails a test instead of a cluster install.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tessera.wire.names import MODULE_PATH

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "manifests" / "crds"


def load_crd(name: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load((CRD_DIR / name).read_text())
    return crd


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Structural defaulting as the API server does it: missing properties with a
    ``default`` get it, then defaulting recurses into objects and arrays."""
    if isinstance(obj, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                obj[key] = apply_defaults(sub, obj[key])
    elif isinstance(obj, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in obj]
    return obj


class _Node:
    """A read-only view of a JSON value for evaluating translated CEL rules."""

    def __init__(self, value: dict[str, Any]) -> None:
        self._value = value

    def __getattr__(self, name: str) -> Any:
        value = self._value[name]  # a missing field is an error, as in CEL
        return _Node(value) if isinstance(value, dict) else value


def _has(node: _Node, field: str) -> bool:
    return field in node._value


def cel_to_python(rule: str) -> str:
    """Translate the CEL subset used by our CRDs into a Python expression."""
    out = re.sub(r"has\(([\w.]+)\.(\w+)\)", r"_has(\1, '\2')", rule)
    out = out.replace("&&", " and ").replace("||", " or ")
    return re.sub(r"!(?!=)", " not ", out)


def cel_errors(schema: dict[str, Any], obj: Any) -> list[str]:
    """Messages of the CEL rules ``obj`` violates (transition rules are skipped)."""
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue
        scope = {"self": _Node(obj) if isinstance(obj, dict) else obj, "_has": _has}
        if not eval(cel_to_python(rule["rule"]), {"__builtins__": {}}, scope):
            errors.append(rule["message"])
    if isinstance(obj, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in obj:
                errors += cel_errors(sub, obj[key])
    return errors


def validate(crd_file: str, obj: dict[str, Any]) -> list[str]:
    """All schema and CEL errors of ``obj`` after defaulting (empty: accepted)."""
    schema = schema_of(load_crd(crd_file))
    obj = apply_defaults(schema, copy.deepcopy(obj))
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
    return errors if errors else cel_errors(schema, obj)


WORLDS = "worlds.tessera.io.yaml"
ZONES = "zoneservers.tessera.io.yaml"


def world(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "bounds": {"minX": 0, "minZ": 0, "maxX": 4096, "maxZ": 4096},
        "zoneTemplate": {"image": "tessera:dev"},
    }
    base.update(spec)
    return {
        "apiVersion": "tessera.io/v1alpha1",
        "kind": "World",
        "metadata": {"name": "earth", "namespace": "games"},
        "spec": base,
    }


def zone(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "world": "earth",
        "bounds": {"minX": 0, "minZ": 0, "maxX": 1024, "maxZ": 1024},
    }
    base.update(spec)
    return {
        "apiVersion": "tessera.io/v1alpha1",
        "kind": "ZoneServer",
        "metadata": {"name": "earth-0", "namespace": "games"},
        "spec": base,
    }


def test_crds_are_well_formed() -> None:
    for name, kind, plural in [(WORLDS, "World", "worlds"), (ZONES, "ZoneServer", "zoneservers")]:
        crd = load_crd(name)
        assert crd["metadata"]["name"] == f"{plural}.tessera.io"
        assert crd["spec"]["group"] == "tessera.io"
        assert crd["spec"]["names"]["kind"] == kind
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert "status" in version["subresources"]
        jsonschema.Draft7Validator.check_schema(version["schema"]["openAPIV3Schema"])
        for column in version["additionalPrinterColumns"]:
            assert column["jsonPath"].startswith(".")


def test_world_has_scale_subresource() -> None:
    (version,) = load_crd(WORLDS)["spec"]["versions"]
    scale = version["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_minimal_world_is_accepted_and_defaulted() -> None:
    schema = schema_of(load_crd(WORLDS))
    obj = apply_defaults(schema, world())
    assert validate(WORLDS, world()) == []
    spec = obj["spec"]
    assert spec["layout"] == "Managed"
    assert spec["standby"] == 0
    assert spec["drainTimeoutSeconds"] == 60
    assert spec["zoneTemplate"]["tickRate"] == 30
    assert spec["autoscaling"]["splitThreshold"] == 300
    assert spec["autoscaling"]["mergeThreshold"] == 100
    assert spec["autoscaling"]["mode"] == "Density"
    assert spec["instances"] == {
        "maxInstances": 100,
        "startTimeoutSeconds": 120,
        "idleSeconds": 30,
        "endGraceSeconds": 10,
        "maxLifetimeSeconds": 3600,
    }


def test_full_world_is_accepted() -> None:
    obj = world(
        layout="Managed",
        replicas=4,
        standby=2,
        drainTimeoutSeconds=30,
        zoneTemplate={
            "image": "registry.example/tessera:1.0",
            "tickRate": 20,
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": 2}},
            "env": [{"name": "TESSERA_LOG_LEVEL", "value": "debug"}],
        },
        autoscaling={
            "mode": "External",
            "targetPlayersPerZone": 150,
            "splitThreshold": 250,
            "mergeThreshold": 60,
            "splitStabilizationSeconds": 5,
            "mergeStabilizationSeconds": 120,
            "cooldownSeconds": 20,
            "minZones": 2,
            "maxZones": 100,
            "minZoneSize": 64,
            "maxDepth": 10,
        },
        instances={
            "maxInstances": 20,
            "startTimeoutSeconds": 60,
            "idleSeconds": 15,
            "endGraceSeconds": 5,
            "maxLifetimeSeconds": 1800,
        },
    )
    assert validate(WORLDS, obj) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"bounds": {"minX": 10, "minZ": 0, "maxX": 10, "maxZ": 5}}, "minX < maxX"),
        ({"bounds": {"minX": 0, "minZ": 0, "maxX": 10}}, "'maxZ' is a required property"),
        ({"autoscaling": {"minZones": 5, "maxZones": 4}}, "minZones must be <= maxZones"),
        ({"autoscaling": {"mergeThreshold": 250}}, "mergeThreshold < targetPlayersPerZone"),
        ({"autoscaling": {"splitThreshold": 150}}, "targetPlayersPerZone < splitThreshold"),
        ({"autoscaling": {"minZoneSize": 5000}}, "at least autoscaling.minZoneSize"),
        ({"autoscaling": {"mode": "External"}}, "spec.replicas is required"),
        ({"autoscaling": {"mode": "Fancy"}}, "is not one of"),
        ({"standby": -1}, "less than the minimum"),
        ({"drainTimeoutSeconds": 0}, "less than the minimum"),
        ({"layout": "Random"}, "is not one of"),
        ({"instances": {"maxInstances": -1}}, "less than the minimum"),
        ({"instances": {"maxInstances": 5000}}, "greater than the maximum"),
        ({"instances": {"startTimeoutSeconds": 0}}, "less than the minimum"),
        ({"instances": {"idleSeconds": 100000}}, "greater than the maximum"),
        ({"instances": {"endGraceSeconds": -1}}, "less than the minimum"),
        ({"instances": {"maxLifetimeSeconds": 0}}, "less than the minimum"),
        ({"instances": {"maxInstances": "many"}}, "is not of type 'integer'"),
        ({"zoneTemplate": {"image": ""}}, "should be non-empty"),
        ({"zoneTemplate": {"image": "x", "tickRate": 1000}}, "greater than the maximum"),
        ({"zoneTemplate": {"image": "x", "env": [{"name": "1BAD"}]}}, "does not match"),
        ({"game": {"module": "studio game"}}, "does not match"),
        ({"game": {"module": "studio..game"}}, "does not match"),
        ({"game": {"modes": {"arena": {"module": "studio arena"}}}}, "does not match"),
        ({"game": {"modes": {"arena": {}}}}, "'module' is a required property"),
        ({"game": {"modes": {"arena": "studio.arena"}}}, "is not of type 'object'"),
    ],
)
def test_bad_worlds_are_rejected(spec: dict[str, Any], message: str) -> None:
    errors = validate(WORLDS, world(**spec))
    assert any(message in error for error in errors), errors


def test_world_without_template_is_rejected() -> None:
    obj = world()
    del obj["spec"]["zoneTemplate"]
    assert any("'zoneTemplate' is a required property" in e for e in validate(WORLDS, obj))


def test_zoneservers_are_accepted_and_defaulted() -> None:
    schema = schema_of(load_crd(ZONES))
    assert validate(ZONES, zone()) == []
    assert apply_defaults(schema, zone())["spec"]["desiredState"] == "Active"
    standby = zone(desiredState="Standby")
    del standby["spec"]["bounds"]
    assert validate(ZONES, standby) == []
    child = zone(parent="earth-0", depth=3, desiredState="Draining", drainTarget="earth-0")
    assert validate(ZONES, child) == []
    instance = zone(instance={"match": "0f3c9a1e5b7d4c2a8e6f1b3d5c7a9e0f"})
    assert validate(ZONES, instance) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"bounds": {"minX": 5, "minZ": 0, "maxX": 1, "maxZ": 5}}, "minX < maxX"),
        ({"world": "Earth_1"}, "does not match"),
        ({"desiredState": "Sleeping"}, "is not one of"),
        ({"parent": "earth-0", "depth": 0}, "depth >= 1"),
        ({"depth": 99}, "greater than the maximum"),
        ({"bounds": {"minX": 0, "minZ": 0, "maxX": 2.0e7, "maxZ": 5}}, "greater than the maximum"),
        ({"instance": {}}, "'match' is a required property"),
        ({"instance": {"match": ""}}, "does not match"),
        ({"instance": {"match": "a b"}}, "does not match"),
        ({"instance": {"match": "m1"}, "desiredState": "Standby"}, "never a standby"),
        ({"instance": {"match": "m1"}, "parent": "earth-0", "depth": 1}, "has no parent"),
    ],
)
def test_bad_zoneservers_are_rejected(spec: dict[str, Any], message: str) -> None:
    errors = validate(ZONES, zone(**spec))
    assert any(message in error for error in errors), errors


def test_active_zoneserver_needs_bounds() -> None:
    obj = zone()
    del obj["spec"]["bounds"]
    assert "bounds are required unless desiredState is Standby" in validate(ZONES, obj)


def test_worlds_name_a_module_per_mode_and_instance_zones_their_mode() -> None:
    modes = {"arena": {"module": "studio.arena"}, "5v5-roles": {"module": "studio.teams"}}
    assert validate(WORLDS, world(game={"module": "studio.world", "modes": modes})) == []
    instance = {"match": "m-1", "mode": "5v5-roles"}
    assert validate(ZONES, zone(instance=instance)) == []
    assert validate(ZONES, zone(instance={**instance, "mode": "m" * 65}))
    # Both module fields take what the operator and the zone accept.
    game = schema_of(load_crd(WORLDS))["properties"]["spec"]["properties"]["game"]["properties"]
    mode_module = game["modes"]["additionalProperties"]["properties"]["module"]
    assert mode_module["pattern"] == game["module"]["pattern"] == f"^{MODULE_PATH}$"


def test_instance_is_immutable() -> None:
    schema = schema_of(load_crd(ZONES))
    spec_rules = [r["rule"] for r in schema["properties"]["spec"]["x-kubernetes-validations"]]
    assert "has(self.instance) == has(oldSelf.instance)" in spec_rules
    instance = schema["properties"]["spec"]["properties"]["instance"]
    assert instance["x-kubernetes-validations"] == [
        {"rule": "self == oldSelf", "message": "instance is immutable"}
    ]


def test_status_fields_of_zoneserver_validate() -> None:
    obj = zone()
    obj["status"] = {"phase": "Ready", "players": 12, "density": 11.4, "endpoint": "10.0.0.4:50051"}
    assert validate(ZONES, obj) == []
    obj["status"]["phase"] = "Sleeping"
    assert validate(ZONES, obj) != []


def test_cel_translator_reads_rules_faithfully() -> None:
    assert (
        cel_to_python("!has(self.a) || self.b != 'x'") == " not _has(self, 'a')  or  self.b != 'x'"
    )
    scope = {"self": _Node({"a": {"b": 1}}), "_has": _has}
    assert eval(cel_to_python("has(self.a.b) && self.a.b < 2"), {}, scope)
    assert not eval(cel_to_python("!has(self.a)"), {}, scope)


def test_peering_crd_matches_kopf() -> None:
    crd = load_crd("clusterkopfpeerings.kopf.dev.yaml")
    assert crd["spec"]["group"] == "kopf.dev" and crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["plural"] == "clusterkopfpeerings"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True


def test_rollout_knobs_are_defaulted_and_bounded() -> None:
    schema = schema_of(load_crd(WORLDS))
    obj = apply_defaults(schema, copy.deepcopy(world()))
    assert obj["spec"]["rollout"] == {"maxSurge": 1, "maxUnavailable": 1, "paused": False}
    assert (
        validate(WORLDS, world(rollout={"maxSurge": 4, "maxUnavailable": 2, "paused": True})) == []
    )
    assert validate(WORLDS, world(rollout={"maxUnavailable": 0}))
    assert validate(WORLDS, world(rollout={"maxSurge": "all"}))
    (version,) = load_crd(WORLDS)["spec"]["versions"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Updated"] == ".status.updatedZones"
    assert "updatedZones" in schema["properties"]["status"]["properties"]


def test_a_zoneserver_keeps_the_template_it_was_created_with() -> None:
    template = {"image": "tessera:1", "tickRate": 20, "env": [{"name": "A", "value": "1"}]}
    assert validate(ZONES, zone(template=template)) == []
    assert validate(ZONES, zone(template={"tickRate": 20}))  # image is required
    world_template = schema_of(load_crd(WORLDS))["properties"]["spec"]["properties"]["zoneTemplate"]
    zone_template = schema_of(load_crd(ZONES))["properties"]["spec"]["properties"]["template"]
    # ... plus the World's spec.game.module, which the operator copies in.
    assert (
        zone_template["properties"].pop("gameModule")["pattern"]
        == (
            schema_of(load_crd(WORLDS))["properties"]["spec"]["properties"]["game"]["properties"][
                "module"
            ]["pattern"]
        )
    )
    assert zone_template["properties"] == world_template["properties"]
    assert validate(ZONES, zone(template={**template, "gameModule": "studio.game"})) == []
