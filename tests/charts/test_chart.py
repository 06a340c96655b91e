"""The chart rendered by Helm's Go SDK for several value sets: lint, Kubernetes
schema validation of every object, and the properties the issue asks for."""

from __future__ import annotations

import base64
import copy
import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tessera.common.config import Env, cluster_address

from .conftest import CHART_DIR, NAMESPACE, Obj, Render, example_zone

ROOT = CHART_DIR.parents[1]
# Oldest supported (Chart.yaml kubeVersion), a current and the newest schema set.
KUBE_VERSIONS = ("1.27.0", "1.30.0", "1.33.0")
SERVICES = ("auth", "matchmaking", "relay")

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-redis": {
        "redis": {
            "external": {
                "enabled": True,
                "url": "rediss://redis.example.net:6380/2",
                "existingSecret": "redis-credentials",
                "existingSecretKey": "redis-password",
            }
        }
    },
    "external-redis-literal-password": {
        "redis": {
            "external": {"enabled": True, "url": "redis://10.0.0.5:6379", "password": "s3cret"}
        }
    },
    "external-redis-cluster": {
        "redis": {
            "external": {
                "enabled": True,
                "url": "redis+cluster://redis-cluster.data.svc:6379,10.0.0.7:7000",
                "existingSecret": "redis-cluster",
                "existingSecretKey": "redis-password",
            }
        },
        "redisExporter": {"enabled": True},
    },
    "policies-and-monitors": {
        "networkPolicy": {
            "enabled": True,
            "metricsNamespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
            },
            "metricsFrom": [{"ipBlock": {"cidr": "10.8.0.0/16"}}],
            "publicFrom": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
            "consoleFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
            ],
            "kubernetesApi": {"to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}], "ports": [443]},
            "extraEgress": [
                {"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}], "ports": [{"port": 4317}]}
            ],
        },
        "console": {"enabled": True},
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}},
    },
    "external-postgresql": {
        "postgresql": {"enabled": False},
        "database": {"existingSecret": "pg", "existingSecretKey": "dsn"},
        "backup": {"schedule": "0 */6 * * *", "keep": 28},
        "networkPolicy": {
            "externalDatabase": {"to": [{"ipBlock": {"cidr": "10.2.0.0/16"}}], "port": 5433}
        },
    },
    "tls": {
        "tls": {
            "secretName": "tessera-tls",
            "caSecret": "tessera-ca",
            "serverName": "tessera.internal",
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "hosts": {"auth": "auth.example.com", "matchmaking": "mm.example.com"},
                "tlsSecret": "public-tls",
            },
        },
        "console": {"enabled": True},
    },
    "console": {
        "console": {
            "enabled": True,
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "host": "console.games.example",
                "tlsSecret": "console-tls",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
            },
        },
        "networkPolicy": {"enabled": True},
    },
    "custom-resources": {
        "image": {
            "repository": "registry.example.com/tessera",
            "tag": "1.2.3",
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "logLevel": "debug",
        "operator": {"replicas": 3, "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
        "auth": {
            "autoscaling": {"enabled": False},
            "replicas": 4,
            "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
            "signingKey": {"existingSecret": "my-signing-keys"},
            "serviceClients": {"existingSecret": "my-clients"},
            "resources": {
                "requests": {"cpu": "1", "memory": "512Mi"},
                "limits": {"cpu": 2, "memory": "1Gi"},
            },
        },
        "matchmaking": {
            "podDisruptionBudget": {"enabled": False},
            "extraEnv": [{"name": "TESSERA_MM_TICK_S", "value": "0.5"}],
        },
        "relay": {
            "udpPort": 9000,
            "publicAddress": "play.example.com:30900",
            "service": {"type": "NodePort", "nodePort": 30900, "externalTrafficPolicy": "Cluster"},
            "autoscaling": {
                "minReplicas": 3,
                "maxReplicas": 50,
                "targetCPUUtilizationPercentage": 50,
            },
            "nodeSelector": {"node-role/edge": "true"},
            "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "connectKey": {"existingSecret": "my-connect-key"},
        "postgresql": {"enabled": False},
        "redis": {
            "existingSecret": "my-redis",
            "appendfsync": "always",
            "persistence": {"size": "50Gi", "storageClassName": "fast-ssd"},
        },
    },
}


def crd_schema(path: Path) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


# The Prometheus Operator's CRDs are not available offline, so ServiceMonitors are
# checked against the subset of monitoring.coreos.com/v1 ServiceMonitor this
# chart uses (field names and types from its API reference).
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
                        },
                    },
                },
            },
        },
    },
}

CUSTOM_SCHEMAS = {
    ("kopf.dev/v1", "ClusterKopfPeering"): crd_schema(
        CHART_DIR / "crds" / "clusterkopfpeerings.kopf.dev.yaml"
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA,
}


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def kinds(objs: list[Obj]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objs}


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def pod_specs(objs: list[Obj]) -> list[tuple[str, Obj]]:
    workloads = [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet")
    ]
    jobs = [
        (o["metadata"]["name"], o["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        for o in objs
        if o["kind"] == "CronJob"
    ]
    return workloads + jobs


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_strict(values: dict[str, Any]) -> None:
    report = helm_python.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_object_valid(render: Render, values: dict[str, Any]) -> None:
    objs = render(values)
    assert len(objs) >= 20
    for obj in objs:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        custom = CUSTOM_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if custom is not None:
            jsonschema.validate(obj, custom)
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(
                    f"{where} invalid for Kubernetes {version}: {err.message} at {list(err.path)}"
                )


def test_default_objects(render: Render) -> None:
    objs = render({})
    expected = {
        ("ServiceAccount", "tessera-operator"),
        ("ClusterRole", "tessera-operator"),
        ("ClusterRoleBinding", "tessera-operator"),
        ("ClusterKopfPeering", "tessera"),
        ("Deployment", "tessera-operator"),
        ("Service", "tessera-operator-metrics"),
        ("StatefulSet", "tessera-redis"),
        ("Service", "tessera-redis"),
        ("Service", "tessera-redis-headless"),
        ("Secret", "tessera-redis"),
        ("Secret", "tessera-auth-signing-keys"),
        ("Secret", "tessera-connect-key"),
        ("Secret", "tessera-auth-service-clients"),
        ("Service", "tessera-relay-udp"),
        ("StatefulSet", "tessera-postgresql"),
        ("Service", "tessera-postgresql"),
        ("Service", "tessera-postgresql-headless"),
        ("Secret", "tessera-postgresql"),
        ("CronJob", "tessera-database-backup"),
        ("ConfigMap", "tessera-database-backup"),
        ("PersistentVolumeClaim", "tessera-database-backups"),
    }
    expected |= {
        ("NetworkPolicy", f"tessera-{name}")
        for name in ("default-deny", "operator", "zones", "redis", "postgresql", "database-backup")
    }
    for name in SERVICES:
        expected |= {
            (kind, f"tessera-{name}")
            for kind in (
                "Deployment",
                "Service",
                "HorizontalPodAutoscaler",
                "PodDisruptionBudget",
                "NetworkPolicy",
            )
        }
    assert kinds(objs) == expected


def test_operator_runs_two_peered_replicas(render: Render) -> None:
    objs = render({})
    deploy = find(objs, "Deployment", "tessera-operator")
    assert deploy["spec"]["replicas"] == 2
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tessera-operator"
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "tessera.operator"]
    env = env_of(container)
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    peering = env["TESSERA_PEERING"]["value"]
    assert find(objs, "ClusterKopfPeering", peering)
    binding = find(objs, "ClusterRoleBinding", "tessera-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tessera-operator", "namespace": NAMESPACE}
    ]
    metrics = find(objs, "Service", "tessera-operator-metrics")
    assert metrics["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]


def test_security_contexts_everywhere(render: Render) -> None:
    for values in VALUE_SETS.values():
        for name, pod in pod_specs(render(values)):
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True, name
                assert sc["allowPrivilegeEscalation"] is False, name
                assert sc["capabilities"] == {"drop": ["ALL"]}, name
                assert sc["runAsNonRoot"] is True, name
                assert "resources" in c and c["resources"]["requests"], name


@pytest.mark.parametrize("name", SERVICES)
def test_service_workloads(render: Render, name: str) -> None:
    objs = render({})
    deploy = find(objs, "Deployment", f"tessera-{name}")
    assert "replicas" not in deploy["spec"], "the HPA owns the replica count"
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", f"tessera.{name}"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"]
    env = env_of(container)
    assert env["TESSERA_GRPC_PORT"]["value"] == str(ports["grpc"])
    assert env["TESSERA_METRICS_PORT"]["value"] == str(ports["metrics"])
    assert env["TESSERA_REDIS_URL"]["value"] == (
        f"redis://{name}:$(REDIS_PASSWORD)@tessera-redis.{NAMESPACE}.svc:6379/0"
    )
    names = [e["name"] for e in container["env"]]
    assert names.index("REDIS_PASSWORD") < names.index("TESSERA_REDIS_URL"), (
        "$(VAR) expansion needs the password defined first"
    )
    hpa = find(objs, "HorizontalPodAutoscaler", f"tessera-{name}")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"tessera-{name}",
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = find(objs, "PodDisruptionBudget", f"tessera-{name}")
    assert pdb["spec"]["selector"] == deploy["spec"]["selector"]
    service = find(objs, "Service", f"tessera-{name}")
    assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}


def test_relay_udp_service_type(render: Render) -> None:
    lb = find(render({}), "Service", "tessera-relay-udp")
    assert lb["spec"]["type"] == "LoadBalancer"
    assert lb["spec"]["ports"] == [
        {"name": "udp", "port": 7777, "targetPort": "udp", "protocol": "UDP"}
    ]
    objs = render(VALUE_SETS["custom-resources"])
    node = find(objs, "Service", "tessera-relay-udp")
    assert node["spec"]["type"] == "NodePort"
    assert node["spec"]["ports"][0]["nodePort"] == 30900
    assert node["spec"]["ports"][0]["port"] == 9000
    relay = find(objs, "Deployment", "tessera-relay")
    (container,) = relay["spec"]["template"]["spec"]["containers"]
    assert {"name": "udp", "containerPort": 9000, "protocol": "UDP"} in container["ports"]
    relay_env = env_of(container)
    assert relay_env["TESSERA_UDP_PORT"]["value"] == "9000"
    assert relay_env["TESSERA_RELAY_PUBLIC_ADDRESS"]["value"] == "play.example.com:30900"
    assert relay_env["TESSERA_AUTH_ADDRESS"]["value"] == "tessera-auth:50051"
    auth = find(objs, "Deployment", "tessera-auth")
    (auth_container,) = auth["spec"]["template"]["spec"]["containers"]
    assert (
        env_of(auth_container)["TESSERA_AUTH_RELAYS"]["value"] == "default=play.example.com:30900"
    )


def test_bundled_redis_is_persistent_with_aof(render: Render) -> None:
    sts = find(render({}), "StatefulSet", "tessera-redis")
    assert sts["spec"]["replicas"] == 1
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--dir") + 1] == "/data"
    assert (
        container["command"][2].rstrip().endswith('exec redis-server "$@" --aclfile /acl/users.acl')
    ), "the users and the administrator's password come from the ACL file"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert "storageClassName" not in claim["spec"]
    custom = find(render(VALUE_SETS["custom-resources"]), "StatefulSet", "tessera-redis")
    (custom_claim,) = custom["spec"]["volumeClaimTemplates"]
    assert custom_claim["spec"]["storageClassName"] == "fast-ssd"
    (custom_container,) = custom["spec"]["template"]["spec"]["containers"]
    assert custom_container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "my-redis"


def test_external_redis(render: Render) -> None:
    objs = render(VALUE_SETS["external-redis"])
    assert not any(o["metadata"]["name"].startswith("tessera-redis") for o in objs)
    for name in (*SERVICES, "operator"):
        (container,) = find(objs, "Deployment", f"tessera-{name}")["spec"]["template"]["spec"][
            "containers"
        ]
        env = env_of(container)
        assert env["TESSERA_REDIS_URL"]["value"] == (
            "rediss://:$(REDIS_PASSWORD)@redis.example.net:6380/2"
        )
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "redis-credentials",
            "key": "redis-password",
        }
    literal = render(VALUE_SETS["external-redis-literal-password"])
    secret = find(literal, "Secret", "tessera-redis")
    assert base64.b64decode(secret["data"]["password"]) == b"s3cret"
    assert not any(o["kind"] == "StatefulSet" and "redis" in o["metadata"]["name"] for o in literal)


def kubelet_env(container: Obj, secrets: dict[str, str]) -> dict[str, str]:
    """The container's environment as its process sees it: values from the
    Secrets named in ``secrets`` (name -> value; other sources give "elsewhere"),
    ``$(VAR)`` expanded, ``$$`` -> ``$``."""
    out: dict[str, str] = {}
    for item in container["env"]:
        if "valueFrom" in item:
            ref = item["valueFrom"].get("secretKeyRef", {}).get("name", "")
            out[item["name"]] = secrets.get(ref, "elsewhere")
            continue
        out[item["name"]] = re.sub(
            r"\$\$|\$\((\w+)\)",
            lambda m: "$" if m[0] == "$$" else out.get(m[1], m[0]),
            item["value"],
        )
    return out


def test_external_redis_cluster(render: Render, resources: ModuleType) -> None:
    """Every component, and the zone pods the operator makes, get the cluster's
    seed nodes with the password from the Secret."""
    objs = render(VALUE_SETS["external-redis-cluster"])
    assert not any(o["kind"] == "StatefulSet" and "redis" in o["metadata"]["name"] for o in objs)
    assert not any(o["kind"] == "Secret" and o["metadata"]["name"] == "tessera-redis" for o in objs)
    seeds = (("redis-cluster.data.svc", 6379), ("10.0.0.7", 7000))
    secrets = {"redis-cluster": "pa%24s"}
    for name in (*SERVICES, "operator"):
        (container,) = find(objs, "Deployment", f"tessera-{name}")["spec"]["template"]["spec"][
            "containers"
        ]
        assert env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "redis-cluster",
            "key": "redis-password",
        }
        address = cluster_address(kubelet_env(container, secrets)["TESSERA_REDIS_URL"])
        assert address.nodes == seeds and address.password == "pa$s"
    # The operator hands zone pods the URL with $(REDIS_PASSWORD) and the Secret.
    (operator,) = find(objs, "Deployment", "tessera-operator")["spec"]["template"]["spec"][
        "containers"
    ]
    handlers = importlib.import_module("tessera.operator.handlers")
    config = handlers.OperatorConfig.from_env(Env(kubelet_env(operator, secrets)))
    settings = resources.WorkloadSettings(
        config.zone_redis_url,
        redis_secret=config.zone_redis_secret,
        redis_secret_key=config.zone_redis_secret_key,
    )
    zone, _service = example_zone(resources, settings)
    kubernetes_validate.validate(zone, "1.30.0", strict=True)
    (container,) = zone["spec"]["template"]["spec"]["containers"]
    address = cluster_address(kubelet_env(container, secrets)["TESSERA_REDIS_URL"])
    assert address.nodes == seeds and address.password == "pa$s"
    # The NetworkPolicies open each seed's port; the exporter scrapes the first seed.
    relay = find(objs, "NetworkPolicy", "tessera-relay")["spec"]["egress"]
    assert {
        "ports": [{"port": 6379, "protocol": "TCP"}, {"port": 7000, "protocol": "TCP"}]
    } in relay
    exporter = env_of(
        find(objs, "Deployment", "tessera-redis-exporter")["spec"]["template"]["spec"][
            "containers"
        ][0]
    )
    assert exporter["REDIS_ADDR"]["value"] == "redis://redis-cluster.data.svc:6379"


def test_generated_secrets_are_kept(render: Render, chart: helm_python.Chart) -> None:
    objs = render({})
    key = find(objs, "Secret", "tessera-auth-signing-keys")
    pem = base64.b64decode(key["data"]["0.pem"]).decode()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert isinstance(load_pem_private_key(pem.encode(), None), Ed25519PrivateKey)
    connect = base64.b64decode(find(objs, "Secret", "tessera-connect-key")["data"]["connect-key"])
    assert len(base64.b64decode(connect, validate=True)) == 32
    clients = find(objs, "Secret", "tessera-auth-service-clients")["data"]
    client_id, client_secret = (
        base64.b64decode(clients[k]).decode() for k in ("client-id", "client-secret")
    )
    others = {
        name: base64.b64decode(clients[f"{name}-client-secret"]).decode()
        for name in ("console", "operator", "relay", "zone")
    }
    assert base64.b64decode(clients["clients"]).decode() == ",".join(
        [f"{client_id}={client_secret}", *(f"{name}={s}" for name, s in others.items())]
    )
    secrets = [client_secret, *others.values()]
    assert all(len(s) >= 16 for s in secrets) and len(set(secrets)) == len(secrets)
    for name in ("tessera-auth-signing-keys", "tessera-connect-key", "tessera-redis"):
        annotations = find(objs, "Secret", name)["metadata"]["annotations"]
        assert annotations["helm.sh/resource-policy"] == "keep"
    # test_secrets_kept.py checks that upgrades read these back with `lookup`.
    supplied = render(VALUE_SETS["custom-resources"])
    assert not any(o["kind"] == "Secret" for o in supplied)
    auth = find(supplied, "Deployment", "tessera-auth")["spec"]["template"]["spec"]
    (volume,) = [v for v in auth["volumes"] if v["name"] == "signing-keys"]
    assert volume["secret"]["secretName"] == "my-signing-keys"


def test_service_monitors(render: Render) -> None:
    objs = render(VALUE_SETS["policies-and-monitors"])
    monitors = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ServiceMonitor"}
    assert set(monitors) == {f"tessera-{c}" for c in ("operator", *SERVICES, "zone")}
    for name in (*SERVICES, "operator"):
        monitor = monitors[f"tessera-{name}"]
        assert monitor["metadata"]["labels"]["release"] == "prom"
        assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
        service_name = f"tessera-{name}-metrics" if name == "operator" else f"tessera-{name}"
        service = find(objs, "Service", service_name)
        labels = service["metadata"]["labels"]
        assert all(labels[k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def test_custom_values_applied(render: Render) -> None:
    objs = render(VALUE_SETS["custom-resources"])
    for name, pod in pod_specs(objs):
        if name == "tessera-database-backup":
            assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        elif name != "tessera-redis":
            assert pod["imagePullSecrets"] == [{"name": "regcred"}]
            assert pod["containers"][0]["image"] == "registry.example.com/tessera:1.2.3"
    auth = find(objs, "Deployment", "tessera-auth")
    assert auth["spec"]["replicas"] == 4
    assert not any(
        o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == "tessera-auth"
        for o in objs
    )
    assert find(objs, "PodDisruptionBudget", "tessera-auth")["spec"] == {
        "minAvailable": 2,
        "selector": auth["spec"]["selector"],
    }
    assert not any(
        o["kind"] == "PodDisruptionBudget" and o["metadata"]["name"] == "tessera-matchmaking"
        for o in objs
    )
    assert find(objs, "Deployment", "tessera-operator")["spec"]["replicas"] == 3
    hpa = find(objs, "HorizontalPodAutoscaler", "tessera-relay")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 50)
    (mm,) = find(objs, "Deployment", "tessera-matchmaking")["spec"]["template"]["spec"][
        "containers"
    ]
    assert env_of(mm)["TESSERA_MM_TICK_S"] == {"name": "TESSERA_MM_TICK_S", "value": "0.5"}
    assert env_of(mm)["TESSERA_LOG_LEVEL"]["value"] == "debug"
    relay_pod = find(objs, "Deployment", "tessera-relay")["spec"]["template"]["spec"]
    assert relay_pod["nodeSelector"] == {"node-role/edge": "true"}


def test_notes(chart: helm_python.Chart) -> None:
    notes = chart.render({}, name="tessera", namespace=NAMESPACE, is_install=True)[
        "tessera/templates/NOTES.txt"
    ]
    assert f"kubectl get worlds,zoneservers -n {NAMESPACE} --watch" in notes
    assert f"kubectl apply -n {NAMESPACE} -f manifests/examples/small-world.yaml" in notes
    assert (ROOT / "manifests" / "examples" / "small-world.yaml").exists()
    assert "bundled StatefulSet tessera-postgresql" in notes
    external = chart.render(
        {"postgresql": {"enabled": False}}, name="tessera", namespace=NAMESPACE, is_install=True
    )["tessera/templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} create secret generic tessera-database" in external


def test_auth_and_matchmaking_read_the_database_url_from_a_secret(render: Render) -> None:
    external: dict[str, Any] = {"postgresql": {"enabled": False}}
    given = {**external, "database": {"existingSecret": "pg", "existingSecretKey": "dsn"}}
    cases: list[tuple[dict[str, Any], tuple[str, str]]] = [
        ({}, ("tessera-postgresql", "url")),
        (external, ("tessera-database", "url")),
        (given, ("pg", "dsn")),
    ]
    for values, expected in cases:
        objects = render(values)
        deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
        for name in ("tessera-auth", "tessera-matchmaking"):
            (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
            (entry,) = [e for e in container["env"] if e["name"] == "TESSERA_DATABASE_URL"]
            ref = entry["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == expected
        (relay,) = deployments["tessera-relay"]["spec"]["template"]["spec"]["containers"]
        assert all(e["name"] != "TESSERA_DATABASE_URL" for e in relay["env"])
        # The operator names the same Secret to the zone pods it creates.
        (operator,) = deployments["tessera-operator"]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in operator["env"]}
        secret = (env["TESSERA_ZONE_DATABASE_SECRET"], env["TESSERA_ZONE_DATABASE_SECRET_KEY"])
        assert secret == expected


def test_values_are_documented(chart: helm_python.Chart) -> None:
    """Every leaf of values.yaml appears in docs/OPERATIONS.md's values reference."""
    doc = (ROOT / "docs" / "OPERATIONS.md").read_text()

    def leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
        out: list[str] = []
        for key, value in tree.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value and key not in ("resources", "requests", "limits"):
                out.extend(leaves(value, path + "."))
            else:
                out.append(path)
        return out

    missing = [p for p in leaves(copy.deepcopy(chart.values)) if f"`{p}`" not in doc]
    assert missing == []
