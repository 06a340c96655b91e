"""The chart's alert rules (templates/prometheusrule.yaml over
rules/tessera.rules.yaml): promtool checks and unit-tests the rules as the chart
renders them, every alert reads metrics that exist, is unit-tested and has a
runbook section, and the PrometheusRule object is well formed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

from .conftest import CHART_DIR, NAMESPACE, Obj, Render
from .exported import REDIS_EXPORTER, metric_names, tessera_names

ROOT = CHART_DIR.parents[1]
RULES = CHART_DIR / "rules" / "tessera.rules.yaml"
UNIT_TESTS = Path(__file__).with_name("rules_test.yaml")
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"
ENABLED = {"prometheusRule": {"enabled": True}}
PROMTOOL = shutil.which("promtool")

# The subset of monitoring.coreos.com/v1 PrometheusRule the chart uses (field
# names and types from the Prometheus Operator's API reference).
PROMETHEUS_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name", "namespace", "labels"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["alert", "expr"],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "expr": {"type": "string"},
                                        "for": {
                                            "type": "string",
                                            "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$",
                                        },
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def rule_object(objs: list[Obj]) -> Obj:
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    return rule


def alerts(spec: Obj) -> list[Obj]:
    return [rule for group in spec["groups"] for rule in group["rules"]]


def promtool(*args: str, cwd: Path) -> str:
    assert PROMTOOL, "promtool not found: make install puts Debian's prometheus package in"
    run = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def rendered_rules(render: Render, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rules exactly as the chart ships them, as a Prometheus rule file."""
    path = tmp_path_factory.mktemp("rules") / "rendered.rules.yaml"
    path.write_text(yaml.safe_dump(rule_object(render(ENABLED))["spec"]))
    return path


def test_off_by_default(render: Render) -> None:
    assert not [o for o in render({}) if o["kind"] == "PrometheusRule"]


def test_lint_strict_with_rules() -> None:
    report = helm_python.lint(CHART_DIR, ENABLED, strict=True, namespace=NAMESPACE)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []


def test_promtool_checks_the_rules_as_rendered(rendered_rules: Path) -> None:
    out = promtool("check", "rules", str(rendered_rules), cwd=rendered_rules.parent)
    count = len(alerts(yaml.safe_load(RULES.read_text())))
    assert f"SUCCESS: {count} rules found" in out


def test_promtool_unit_tests_pass_on_the_rendered_rules(rendered_rules: Path) -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = [str(rendered_rules)]
    copy = rendered_rules.with_name("rules_test.yaml")
    copy.write_text(yaml.safe_dump(tests))
    assert "SUCCESS" in promtool("test", "rules", str(copy), cwd=copy.parent)


def test_the_unit_tests_cover_the_rule_file_the_chart_ships() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    assert [(UNIT_TESTS.parent / f).resolve() for f in tests["rule_files"]] == [RULES]


def test_every_alert_fires_in_a_unit_test() -> None:
    """promtool compares the exact list of alerts at each evaluation, so each
    firing case also shows the series beside it (another zone, mode or reason)
    staying quiet."""
    fired = {
        case["alertname"]
        for group in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert fired == {a["alert"] for a in alerts(yaml.safe_load(RULES.read_text()))}


def test_every_alert_reads_metrics_that_exist() -> None:
    known = tessera_names() | REDIS_EXPORTER
    for alert in alerts(yaml.safe_load(RULES.read_text())):
        used = metric_names(alert["expr"])
        assert used, alert["alert"]
        assert used <= known, (alert["alert"], used - known)


def test_every_alert_has_severity_summary_and_a_runbook_section() -> None:
    text = RUNBOOK.read_text()
    sections = set(re.findall(r"^### (Tessera\w+)$", text, re.M))
    names = set()
    for alert in alerts(yaml.safe_load(RULES.read_text())):
        name = alert["alert"]
        names.add(name)
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
        assert alert["annotations"]["runbook"] == f"docs/RUNBOOK.md#{name.lower()}"
        assert name in sections, f"docs/RUNBOOK.md has no section '### {name}'"
    assert sections == names, f"runbook sections without an alert: {sections - names}"


def test_the_rendered_object_and_its_runbook_links(render: Render) -> None:
    values = {
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "prom"},
            "runbookBaseUrl": "https://docs.example.com/tessera/RUNBOOK.md",
        }
    }
    rule = rule_object(render(values))
    jsonschema.validate(rule, PROMETHEUS_RULE_SCHEMA)
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "prom"
    for alert in alerts(rule["spec"]):
        url = alert["annotations"]["runbook_url"]
        assert url == f"https://docs.example.com/tessera/RUNBOOK.md#{alert['alert'].lower()}"
    # Prometheus' own templates reach the object untouched by Helm.
    summaries = [a["annotations"]["summary"] for a in alerts(rule["spec"])]
    assert "Zone {{ $labels.instance }} skips tick slots" in summaries
    assert all(
        "runbook_url" not in a["annotations"] for a in alerts(rule_object(render(ENABLED))["spec"])
    )


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        (
            {"prometheusRule": {"runbookBaseUrl": "docs/RUNBOOK.md"}},
            "/prometheusRule/runbookBaseUrl",
        ),
        ({"prometheusRule": {"labels": {"release": 1}}}, "/prometheusRule/labels/release"),
    ],
)
def test_bad_values_rejected(
    chart: helm_python.Chart, values: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="schema") as err:
        chart.render(values, name="tessera", namespace=NAMESPACE, is_install=True)
    assert fragment in str(err.value)
