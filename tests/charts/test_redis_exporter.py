"""The optional redis_exporter (templates/redis-exporter.yaml): it scrapes the
Redis the services use as its administrator (the ``default`` user) and is reachable
through a Service (and a ServiceMonitor); its NetworkPolicy paths are in
test_networkpolicy.py."""

from __future__ import annotations

from typing import Any

import helm_python
import jsonschema
import kubernetes_validate

from .conftest import CHART_DIR, NAMESPACE, Obj, Render
from .test_chart import SERVICE_MONITOR_SCHEMA

ON: dict[str, Any] = {"redisExporter": {"enabled": True}}
NAME = "tessera-redis-exporter"


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    (obj,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def container_env(deployment: Obj) -> dict[str, Obj]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_off_by_default(render: Render) -> None:
    assert not [o for o in render({}) if "exporter" in o["metadata"]["name"]]


def test_lint_strict() -> None:
    values = {**ON, "networkPolicy": {"enabled": True}, "serviceMonitor": {"enabled": True}}
    report = helm_python.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []


def test_scrapes_the_bundled_redis_as_its_administrator(render: Render) -> None:
    objs = render({**ON, "serviceMonitor": {"enabled": True}})
    exporter = named(objs, "Deployment", NAME)
    service = named(objs, "Service", NAME)
    for obj in (exporter, service):
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    redis = named(objs, "Service", "tessera-redis")
    port = redis["spec"]["ports"][0]["port"]
    env = container_env(exporter)
    assert env["REDIS_ADDR"]["value"] == f"redis://tessera-redis.{NAMESPACE}.svc:{port}"
    # INFO, CONFIG GET and SLOWLOG are no component's: the exporter is the admin.
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "tessera-redis",
        "key": "password",
    }
    pod = exporter["spec"]["template"]
    assert selects(service["spec"]["selector"], pod["metadata"]["labels"])
    (container,) = pod["spec"]["containers"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9121, "protocol": "TCP"}]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    monitor = named(objs, "ServiceMonitor", NAME)
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])


def test_an_external_redis(render: Render) -> None:
    external = {
        "enabled": True,
        "url": "rediss://cache.example.net:6380/2",
        "existingSecret": "cache-credentials",
        "existingSecretKey": "pw",
    }
    objs = render({**ON, "redis": {"external": external}})
    env = container_env(named(objs, "Deployment", NAME))
    assert env["REDIS_ADDR"]["value"] == "rediss://cache.example.net:6380"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "cache-credentials",
        "key": "pw",
    }
    egress = named(objs, "NetworkPolicy", NAME)["spec"]["egress"]
    assert {"ports": [{"port": 6380, "protocol": "TCP"}]} in egress
