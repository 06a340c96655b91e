"""manifests/: every example World and ZoneServer is accepted by its CRD's own
schema and CEL rules; broken variants of them are rejected by the layer that
enforces each rule (schema, CEL, or the operator's partition check)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tessera.operator.planner.geometry import partition_errors
from tessera.wire.geometry import Rect

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
EXAMPLES = MANIFESTS / "examples"
CRD_FILES = {"World": "worlds.tessera.io.yaml", "ZoneServer": "zoneservers.tessera.io.yaml"}


def _crd_rules() -> ModuleType:
    """The CRD validator of tests/operator/test_crds.py (jsonschema with structural
    defaulting, plus the CEL subset the CRDs use), so both suites judge alike."""
    path = ROOT / "tests" / "operator" / "test_crds.py"
    spec = importlib.util.spec_from_file_location("tessera_crd_rules", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RULES = _crd_rules()


def validate(obj: dict[str, Any]) -> list[str]:
    errors: list[str] = RULES.validate(CRD_FILES[obj["kind"]], obj)
    return errors


def example(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "kustomization.yaml")


def rect(bounds: dict[str, float]) -> Rect:
    return Rect(bounds["minX"], bounds["minZ"], bounds["maxX"], bounds["maxZ"])


def static_zone_errors(docs: list[dict[str, Any]]) -> list[str]:
    """The operator's check for a Static world: its zones partition the world."""
    (world,) = [d for d in docs if d["kind"] == "World"]
    zones = [
        d
        for d in docs
        if d["kind"] == "ZoneServer" and d["spec"]["world"] == world["metadata"]["name"]
    ]
    return partition_errors(
        rect(world["spec"]["bounds"]), [rect(z["spec"]["bounds"]) for z in zones]
    )


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_accepted(path: Path) -> None:
    docs = example(path.name)
    assert docs
    for doc in docs:
        assert doc["apiVersion"] == "tessera.io/v1alpha1"
        assert doc["kind"] in CRD_FILES
        assert "namespace" not in doc["metadata"], "examples apply to the current namespace"
        assert validate(doc) == [], f"{path.name}: {doc['kind']}/{doc['metadata']['name']}"


def test_examples_cover_the_three_cases() -> None:
    small, large = example("small-world.yaml"), example("large-world.yaml")
    static = example("static-zone.yaml")
    assert [d["kind"] for d in small] == ["World"]
    assert [d["kind"] for d in large] == ["World"]
    policy = large[0]["spec"]["autoscaling"]
    assert policy["enabled"] is True and policy["maxZones"] > policy["minZones"] > 1
    assert large[0]["spec"]["standby"] > 0
    kinds = sorted(d["kind"] for d in static)
    assert kinds == ["World", "ZoneServer", "ZoneServer"]
    assert static[0]["spec"]["layout"] == "Static"
    assert static_zone_errors(static) == []


def test_kustomizations_list_every_file() -> None:
    for directory, expected in [
        (MANIFESTS, sorted(f"crds/{p.name}" for p in (MANIFESTS / "crds").glob("*.yaml"))),
        (EXAMPLES, sorted(p.name for p in example_files())),
    ]:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        assert kustomization["kind"] == "Kustomization"
        assert sorted(kustomization["resources"]) == expected


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = obj
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return obj


_DELETE = object()

# (example file, document index, field path, value, expected message fragment)
REJECTED = [
    ("small-world.yaml", 0, "spec.bounds.maxX", -5, "minX < maxX"),
    ("small-world.yaml", 0, "spec.bounds.maxZ", _DELETE, "'maxZ' is a required property"),
    ("small-world.yaml", 0, "spec.autoscaling.minZones", 9, "minZones must be <= maxZones"),
    (
        "small-world.yaml",
        0,
        "spec.autoscaling.mergeThreshold",
        300,
        "mergeThreshold < targetPlayersPerZone",
    ),
    (
        "small-world.yaml",
        0,
        "spec.autoscaling.splitThreshold",
        150,
        "targetPlayersPerZone < splitThreshold",
    ),
    (
        "small-world.yaml",
        0,
        "spec.autoscaling.minZoneSize",
        5000,
        "at least autoscaling.minZoneSize",
    ),
    ("small-world.yaml", 0, "spec.zoneTemplate.image", _DELETE, "'image' is a required property"),
    ("small-world.yaml", 0, "spec.zoneTemplate.tickRate", 0, "less than the minimum of 5"),
    ("large-world.yaml", 0, "spec.layout", "Dynamic", "is not one of"),
    ("large-world.yaml", 0, "spec.autoscaling.mode", "External", "spec.replicas is required"),
    ("large-world.yaml", 0, "spec.standby", -1, "less than the minimum of 0"),
    ("large-world.yaml", 0, "spec.autoscaling.maxZones", 5000, "greater than the maximum of 4096"),
    ("large-world.yaml", 0, "spec.zoneTemplate.env", [{"name": "1BAD"}], "does not match"),
    ("static-zone.yaml", 1, "spec.bounds.minX", 600, "minX < maxX"),
    ("static-zone.yaml", 1, "spec.desiredState", "Paused", "is not one of"),
    (
        "static-zone.yaml",
        1,
        "spec.bounds",
        _DELETE,
        "bounds are required unless desiredState is Standby",
    ),
    ("static-zone.yaml", 2, "spec.world", "Arena_2", "does not match"),
]


@pytest.mark.parametrize(
    ("file", "index", "path", "value", "message"),
    REJECTED,
    ids=[f"{f}:{p}={'<deleted>' if v is _DELETE else v}" for f, _, p, v, _ in REJECTED],
)
def test_broken_example_rejected(
    file: str, index: int, path: str, value: Any, message: str
) -> None:
    doc = _set(example(file)[index], path, value)
    errors = validate(doc)
    assert any(message in e for e in errors), errors


# Cross-object rules (a ZoneServer against its World) cannot be expressed in a
# CRD; the operator enforces them with the planner's partition check.
@pytest.mark.parametrize(
    ("index", "bounds", "message"),
    [
        (1, {"minX": -100, "minZ": 0, "maxX": 500, "maxZ": 1000}, "lies outside the world"),
        (2, {"minX": 500, "minZ": 0, "maxX": 1200, "maxZ": 1000}, "lies outside the world"),
        (2, {"minX": 400, "minZ": 0, "maxX": 1000, "maxZ": 1000}, "belong to several zones"),
        (2, {"minX": 500, "minZ": 0, "maxX": 1000, "maxZ": 900}, "belong to no zone"),
    ],
)
def test_static_zone_outside_or_overlapping_rejected(
    index: int, bounds: dict[str, float], message: str
) -> None:
    docs = example("static-zone.yaml")
    docs[index] = _set(docs[index], "spec.bounds", bounds)
    assert validate(docs[index]) == [], "the schema alone accepts it"
    errors = static_zone_errors(docs)
    assert any(message in e for e in errors), errors
