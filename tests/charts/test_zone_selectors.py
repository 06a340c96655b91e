"""The chart's zone ServiceMonitor and zone environment fit the zone pods and
Services the operator actually builds (tessera.operator.resources), for the
static example world in manifests/examples/ (the NetworkPolicies over those
pods: test_networkpolicy.py)."""

from __future__ import annotations

import base64
import importlib
from types import ModuleType

import yaml
from redis.asyncio import Redis

from .conftest import EXAMPLE, NAMESPACE, Obj, Render
from .netpol import selects

VALUES = {"serviceMonitor": {"enabled": True}}


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
    rendered = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "Secret"}
    for e in container["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None and ref["name"] in rendered:
            environ[e["name"]] = base64.b64decode(rendered[ref["name"]][ref["key"]]).decode()
    config = handlers.OperatorConfig.from_env(config_module.Env(environ))
    secret = next(
        o
        for o in objs
        if o["kind"] == "Secret" and o["metadata"]["name"] == config.zone_redis_secret
    )
    stored: dict[str, str] = secret.get("data") or secret.get("stringData") or {}
    assert config.zone_redis_secret_key in stored
    assert "$(REDIS_PASSWORD)@tessera-redis" in config.zone_redis_url
    runtime = handlers.Runtime(config, redis=Redis())  # never connects: no call is made
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
    # Zones verify their callers with auth's keys, fetched from auth by its cluster name.
    auth = env[names.index("TESSERA_AUTH_ADDRESS")]["value"]
    assert auth == config.auth_address and auth.startswith("tessera-auth.") and ".svc:" in auth
