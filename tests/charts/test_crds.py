"""The chart ships exactly the CRDs of manifests/crds/, byte for byte, so `helm
install` and `kubectl apply -k manifests/` install the same definitions."""

from __future__ import annotations

import helm_python
import yaml

from .conftest import CHART_DIR

MANIFEST_CRDS = CHART_DIR.parents[1] / "manifests" / "crds"


def test_chart_crds_identical_to_manifests() -> None:
    chart_files = {p.name: p.read_bytes() for p in (CHART_DIR / "crds").iterdir()}
    manifest_files = {p.name: p.read_bytes() for p in MANIFEST_CRDS.glob("*.yaml")}
    assert manifest_files, "manifests/crds/ is empty"
    assert chart_files == manifest_files


def test_helm_loads_every_crd(chart: helm_python.Chart) -> None:
    loaded = {yaml.safe_load(c["data"])["metadata"]["name"] for c in chart.crds}
    assert loaded == {
        yaml.safe_load(p.read_text())["metadata"]["name"] for p in MANIFEST_CRDS.glob("*.yaml")
    }
    assert {"worlds.tessera.io", "zoneservers.tessera.io", "clusterkopfpeerings.kopf.dev"} <= loaded
