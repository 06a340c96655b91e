"""Fixtures for the chart tests: the chart loaded through Helm's Go SDK and a
renderer that returns the manifests as parsed Kubernetes objects."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "tessera"
RELEASE = "tessera"
NAMESPACE = "games"
EXAMPLE = ROOT / "manifests" / "examples" / "static-zone.yaml"

Obj = dict[str, Any]
Render = Callable[[dict[str, Any]], list[Obj]]


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


def parse_manifests(rendered: dict[str, str]) -> list[Obj]:
    """Every object of every rendered template (NOTES.txt is not a manifest)."""
    return [
        obj
        for path, text in sorted(rendered.items())
        if path.endswith((".yaml", ".yml"))
        for obj in yaml.safe_load_all(text)
        if obj
    ]


@pytest.fixture(scope="session")
def render(chart: helm_python.Chart) -> Render:
    def run(values: dict[str, Any]) -> list[Obj]:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        return parse_manifests(rendered)

    return run


@pytest.fixture(scope="module")
def resources() -> ModuleType:
    """The operator's object builders."""
    return importlib.import_module("tessera.operator.resources")


def example_zone(resources: ModuleType, settings: Any) -> tuple[Obj, Obj]:
    """The Deployment and Service the operator makes for the example's first zone
    with these ``WorkloadSettings``."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    world = next(d for d in docs if d["kind"] == "World")
    zone = next(d for d in docs if d["kind"] == "ZoneServer")
    for doc in (world, zone):
        doc["metadata"] |= {"namespace": NAMESPACE, "uid": f"uid-{doc['metadata']['name']}"}
    return resources.deployment(zone, world, settings), resources.service(zone)


@pytest.fixture(scope="module")
def zone_objects(resources: ModuleType) -> tuple[Obj, Obj]:
    """The example's first zone, as the operator makes it for the bundled Redis."""
    settings = resources.WorkloadSettings(f"redis://tessera-redis.{NAMESPACE}.svc:6379/0")
    return example_zone(resources, settings)


def deployment_env(render: Render, values: dict[str, Any], name: str) -> dict[str, str]:
    """The environment (name -> value) of Deployment ``name``'s one container."""
    deployment = next(
        o for o in render(values) if o["kind"] == "Deployment" and o["metadata"]["name"] == name
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: str(e.get("value")) for e in container["env"]}
