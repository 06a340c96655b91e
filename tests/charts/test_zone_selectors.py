"""The chart's NetworkPolicies and zone ServiceMonitor select the zone pods and
Services the operator actually builds (tessera.operator.resources), for the
static example world in manifests/examples/."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest
import yaml

from .conftest import CHART_DIR, NAMESPACE, Obj, Render

EXAMPLE = CHART_DIR.parents[1] / "manifests" / "examples" / "static-zone.yaml"
VALUES = {"networkPolicy": {"enabled": True}, "serviceMonitor": {"enabled": True}}


@pytest.fixture(scope="module")
def resources() -> ModuleType:
    """The operator's object builders (imported here so that, before the operator
    is merged, these tests fail one by one instead of the collection)."""
    return importlib.import_module("tessera.operator.resources")


@pytest.fixture(scope="module")
def zone_objects(resources: ModuleType) -> tuple[Obj, Obj]:
    """The Deployment and Service the operator makes for the example's first zone."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    world = next(d for d in docs if d["kind"] == "World")
    zone = next(d for d in docs if d["kind"] == "ZoneServer")
    for doc in (world, zone):
        doc["metadata"] |= {"namespace": NAMESPACE, "uid": f"uid-{doc['metadata']['name']}"}
    settings = resources.WorkloadSettings(f"redis://tessera-redis.{NAMESPACE}.svc:6379/0")
    return resources.deployment(zone, world, settings), resources.service(zone)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and In expressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def policy(objs: list[Obj], name: str) -> Obj:
    (found,) = [o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == name]
    return found


def pod_labels(objs: list[Obj], component: str) -> dict[str, str]:
    (found,) = [
        o
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet")
        and o["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    labels: dict[str, str] = found["spec"]["template"]["metadata"]["labels"]
    return labels


def allowed(rule: Obj, labels: dict[str, str]) -> bool:
    return any(
        selects(peer["podSelector"], labels) for peer in rule["from"] if "podSelector" in peer
    )


def test_zone_policy_selects_zone_pods(render: Render, zone_objects: tuple[Obj, Obj]) -> None:
    deployment, _ = zone_objects
    zone_labels = deployment["spec"]["template"]["metadata"]["labels"]
    objs = render(VALUES)
    zones = policy(objs, "tessera-zones")
    assert selects(zones["spec"]["podSelector"], zone_labels)
    grpc_rule = next(r for r in zones["spec"]["ingress"] if r["ports"][0]["port"] == "grpc")
    for component in ("relay", "operator"):
        assert allowed(grpc_rule, pod_labels(objs, component)), component
    assert allowed(grpc_rule, zone_labels), "zones talk to zones"
    for component in ("auth", "matchmaking", "redis"):
        assert not allowed(grpc_rule, pod_labels(objs, component)), component
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    assert {r["ports"][0]["port"] for r in zones["spec"]["ingress"]} <= port_names


def test_redis_policy_admits_every_tessera_pod(
    render: Render, zone_objects: tuple[Obj, Obj]
) -> None:
    deployment, _ = zone_objects
    objs = render(VALUES)
    (rule,) = policy(objs, "tessera-redis")["spec"]["ingress"]
    assert allowed(rule, deployment["spec"]["template"]["metadata"]["labels"])
    for component in ("operator", "auth", "matchmaking", "relay"):
        assert allowed(rule, pod_labels(objs, component)), component
    assert not allowed(rule, {"app.kubernetes.io/name": "someone-else"})


def test_zone_service_monitor_matches_zone_services(
    render: Render, zone_objects: tuple[Obj, Obj]
) -> None:
    _, service = zone_objects
    (monitor,) = [
        o
        for o in render(VALUES)
        if o["kind"] == "ServiceMonitor" and o["metadata"]["name"] == "tessera-zone"
    ]
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


def test_zone_pods_get_the_redis_password_from_the_charts_secret(
    render: Render, resources: ModuleType
) -> None:
    """The operator's environment as the chart renders it (the kubelet turns
    ``$$(`` into ``$(``), read by the operator's config, gives zone pods a Redis
    URL naming ``$(REDIS_PASSWORD)`` and that variable from the chart's Secret."""
    handlers = importlib.import_module("tessera.operator.handlers")
    config_module = importlib.import_module("tessera.common.config")
    objs = render({})
    operator = next(
        o for o in objs if (o["kind"], o["metadata"]["name"]) == ("Deployment", "tessera-operator")
    )
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    environ = {e["name"]: e["value"].replace("$$(", "$(") for e in container["env"] if "value" in e}
    config = handlers.OperatorConfig.from_env(config_module.Env(environ))
    secret = next(
        o
        for o in objs
        if o["kind"] == "Secret" and o["metadata"]["name"] == config.zone_redis_secret
    )
    stored: dict[str, str] = secret.get("data") or secret.get("stringData") or {}
    assert config.zone_redis_secret_key in stored
    assert "$(REDIS_PASSWORD)@tessera-redis" in config.zone_redis_url
    runtime = handlers.Runtime(config, redis=None)
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    world = next(d for d in docs if d["kind"] == "World")
    zone = next(d for d in docs if d["kind"] == "ZoneServer")
    for doc in (world, zone):
        doc["metadata"] |= {"namespace": NAMESPACE, "uid": "u"}
    pod = resources.deployment(zone, world, runtime.workload)["spec"]["template"]["spec"]
    env = pod["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert names.index("REDIS_PASSWORD") < names.index("TESSERA_REDIS_URL")
    ref = env[names.index("REDIS_PASSWORD")]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": config.zone_redis_secret_key}
    assert "$(REDIS_PASSWORD)" in env[names.index("TESSERA_REDIS_URL")]["value"]


def test_zone_pods_reach_the_bundled_postgresql(
    render: Render, zone_objects: tuple[Obj, Obj]
) -> None:
    deployment, _ = zone_objects
    (rule,) = policy(render(VALUES), "tessera-postgresql")["spec"]["ingress"]
    assert allowed(rule, deployment["spec"]["template"]["metadata"]["labels"])
