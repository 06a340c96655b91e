"""The chart's Grafana dashboards (templates/grafana-dashboards.yaml over
dashboards/*.json): one ConfigMap each for the sidecar, valid Kubernetes objects,
well-formed dashboards, and every query reads metrics that really exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from .conftest import CHART_DIR, NAMESPACE, Obj, Render
from .exported import REDIS_EXPORTER, metric_names, tessera_names

ENABLED = {"grafanaDashboards": {"enabled": True}}
PROMTOOL = shutil.which("promtool")
DASHBOARDS = ("world", "zone", "handoff", "relay", "matchmaking", "auth", "redis")


def dashboards(objs: list[Obj]) -> dict[str, dict[str, Any]]:
    """The dashboards of the rendered ConfigMaps, by file name."""
    out = {}
    for obj in objs:
        if obj["kind"] == "ConfigMap" and "grafana_dashboard" in obj["metadata"]["labels"]:
            ((key, text),) = obj["data"].items()
            out[key] = json.loads(text)
    return out


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable."""
    out = [
        (f"{panel['title']}/{target['refId']}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            # label_values(<series selector>, <label>) selects the series.
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"]["query"])
            assert match, var
            out.append((f"${var['name']}", match.group(1)))
    return out


@pytest.fixture(scope="module")
def rendered(render: Render) -> list[Obj]:
    return render(ENABLED)


def test_off_by_default(render: Render) -> None:
    assert dashboards(render({})) == {}


def test_lint_strict_with_dashboards() -> None:
    report = helm_python.lint(CHART_DIR, ENABLED, strict=True, namespace=NAMESPACE)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []


def test_one_configmap_per_dashboard_labelled_for_the_sidecar(rendered: list[Obj]) -> None:
    maps = [
        o for o in rendered if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]
    ]
    assert sorted(o["metadata"]["name"] for o in maps) == sorted(
        f"tessera-dashboard-{name}" for name in DASHBOARDS
    )
    for obj in maps:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
        assert obj["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert obj["metadata"]["annotations"] == {"grafana_folder": "Tessera"}
        assert obj["metadata"]["namespace"] == NAMESPACE


def test_sidecar_label_namespace_and_folder_follow_the_values(render: Render) -> None:
    values = {
        "grafanaDashboards": {
            "enabled": True,
            "label": "example.com/dashboard",
            "labelValue": "tessera",
            "namespace": "monitoring",
            "folder": "",
        }
    }
    maps = [
        o
        for o in render(values)
        if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]
    ]
    assert len(maps) == len(DASHBOARDS)
    for obj in maps:
        assert obj["metadata"]["labels"]["example.com/dashboard"] == "tessera"
        assert obj["metadata"]["namespace"] == "monitoring"
        assert "annotations" not in obj["metadata"]


def test_dashboards_are_well_formed(rendered: list[Obj]) -> None:
    found = dashboards(rendered)
    assert sorted(found) == sorted(f"tessera-{name}.json" for name in DASHBOARDS)
    uids = [d["uid"] for d in found.values()]
    assert len(set(uids)) == len(uids)
    for key, dash in found.items():
        assert dash["title"].startswith("Tessera / ") and "tessera" in dash["tags"], key
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        ids = [p["id"] for p in dash["panels"]]
        assert len(set(ids)) == len(ids), key
        for panel in dash["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], (key, panel["title"])
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (key, panel["title"])
            # Grafana variables the panels use are defined.
            for target in panel["targets"]:
                for name in re.findall(r"\$(\w+)", target["expr"]):
                    assert name.startswith("__") or name in variables, (key, name)


def test_every_query_reads_metrics_that_really_exist(rendered: list[Obj]) -> None:
    tessera = tessera_names()
    for key, dash in dashboards(rendered).items():
        known = REDIS_EXPORTER if key == "tessera-redis.json" else tessera
        for where, expr in queries(dash):
            used = metric_names(expr)
            assert used, (key, where, expr)
            assert used <= known, (key, where, sorted(used - known))


def test_every_query_parses_as_promql(
    rendered: list[Obj], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """promtool parses each query (Grafana's variables filled in as Grafana
    would) as the expression of a recording rule."""
    assert PROMTOOL, "promtool not found: make install puts Debian's prometheus package in"
    fill = {"$__rate_interval": "5m", "$__range": "1h", "$instance": ".*", "$world": ".*"}
    rules: list[dict[str, str]] = []
    for key, dash in dashboards(rendered).items():
        for where, query in queries(dash):
            expr = query
            for variable, value in fill.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, (key, where, expr)
            rules.append({"record": f"dashboard:query:{len(rules)}", "expr": expr})
    path = tmp_path_factory.mktemp("dashboards") / "queries.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    run = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(rules)} rules found" in run.stdout


def test_the_new_metrics_have_panels(rendered: list[Obj]) -> None:
    exprs = " ".join(e for d in dashboards(rendered).values() for _w, e in queries(d))
    for name in (
        "tessera_relay_session_ends_total",
        "tessera_operator_recommended_zones",
        "tessera_relay_resumes_total",
        "tessera_zone_violations_total",
    ):
        assert name in exprs


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum(rate(tessera_zone_hits_total[$__rate_interval]))", {"tessera_zone_hits_total"}),
        (
            'histogram_quantile(0.99, sum by (le, instance) (rate(x_bucket{instance=~"$i"}[5m])))',
            {"x_bucket"},
        ),
        ("a / ignoring (reason) group_left sum by (ns) (b) > 0.02", {"a", "b"}),
        ("min(redis_up) == 0 and on() vector(1) offset 5m", {"redis_up"}),
        ('c{le="+Inf", path="by (x)"} > 1e3', {"c"}),
        ("job:rate5m:sum", {"job:rate5m:sum"}),
    ],
)
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"grafanaDashboards": {"enabeld": True}}, "additional properties 'enabeld' not allowed"),
        ({"grafanaDashboards": {"label": "not a label"}}, "/grafanaDashboards/label"),
        ({"grafanaDashboards": {"namespace": "Monitoring"}}, "/grafanaDashboards/namespace"),
    ],
)
def test_bad_values_rejected(
    chart: helm_python.Chart, values: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="schema") as err:
        chart.render(values, name="tessera", namespace=NAMESPACE, is_install=True)
    assert fragment in str(err.value)
