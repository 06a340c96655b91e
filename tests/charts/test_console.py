"""The console in the chart: off by default; when enabled, a Deployment, a
Service with its HTTP port, an optional Ingress, and the network policies let
it reach Redis and the zones. (Linted and schema-validated with the other value
sets in test_chart.py.)"""

from __future__ import annotations

from .conftest import NAMESPACE, Obj, Render


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    (obj,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def test_off_by_default(render: Render) -> None:
    assert not [o for o in render({}) if "console" in o["metadata"]["name"]]


def test_enabled_with_an_ingress(render: Render) -> None:
    objs = render(
        {
            "console": {
                "enabled": True,
                "world": "earth",
                "ingress": {"enabled": True, "host": "console.games.example"},
            },
            "networkPolicy": {"enabled": True},
        }
    )
    deploy = find(objs, "Deployment", "tessera-console")
    assert deploy["spec"]["replicas"] == 1
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "tessera.console"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == 8080
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TESSERA_WORLD"] == "earth"
    assert env["TESSERA_CONSOLE_HTTP_PORT"] == "8080"
    assert env["TESSERA_AUTH_ADDRESS"] == "tessera-auth:50051"
    assert env["TESSERA_CONSOLE_RELAYS"] == "tessera-relay:50051"
    service = find(objs, "Service", "tessera-console")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["http"] == 8080
    ingress = find(objs, "Ingress", "tessera-console")
    assert ingress["metadata"]["namespace"] == NAMESPACE
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "console.games.example"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "tessera-console", "port": {"name": "http"}}
    assert "tls" not in ingress["spec"]
    assert not [
        o
        for o in objs
        if o["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget")
        and o["metadata"]["name"] == "tessera-console"
    ]
    # The audit log is in PostgreSQL: the console gets the DSN (the NetworkPolicy
    # side is in test_networkpolicy.py's matrix).
    (database,) = [e for e in container["env"] if e["name"] == "TESSERA_DATABASE_URL"]
    assert database["valueFrom"]["secretKeyRef"] == {"name": "tessera-postgresql", "key": "url"}
    # Its own service credentials (reading the relays' status), from the Secret
    # whose `clients` auth accepts.
    assert env["TESSERA_SERVICE_CLIENT_ID"] == "console"
    (secret,) = [e for e in container["env"] if e["name"] == "TESSERA_SERVICE_CLIENT_SECRET"]
    assert secret["valueFrom"]["secretKeyRef"] == {
        "name": "tessera-auth-service-clients",
        "key": "console-client-secret",
    }


def test_relays_can_be_listed(render: Render) -> None:
    objs = render({"console": {"enabled": True, "relays": "relay-0:50051,relay-1:50051"}})
    (container,) = find(objs, "Deployment", "tessera-console")["spec"]["template"]["spec"][
        "containers"
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TESSERA_CONSOLE_RELAYS"] == "relay-0:50051,relay-1:50051"
    assert not [o for o in objs if o["kind"] == "Ingress"]
