"""Fixtures for the chart tests: the chart loaded through Helm's Go SDK and a
renderer that returns the manifests as parsed Kubernetes objects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "tessera"
RELEASE = "tessera"
NAMESPACE = "games"

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
