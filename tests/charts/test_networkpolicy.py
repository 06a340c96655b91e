"""The chart's NetworkPolicies, checked as a reachability matrix: every pod the
chart (and the operator, for zones) deploys, plus pods and addresses around it,
and for each (source, destination, port) whether the rendered policies let it
through (tests/charts/netpol.py evaluates them). What the architecture draws
must be allowed; everything else tried here must be denied."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from .conftest import NAMESPACE, Obj, Render
from .netpol import Connection, Endpoint, External, Pod, allowed, selects

NAMESPACES: dict[str, Obj] = {
    name: {"kubernetes.io/metadata.name": name}
    for name in (NAMESPACE, "kube-system", "monitoring", "ingress-nginx", "other")
}
DIALERS = ("operator", "auth", "matchmaking", "relay", "zone", "database-backup")


def pod_of(template: Obj, namespace: str = NAMESPACE) -> Pod:
    ports = {
        p["name"]: (p["containerPort"], p.get("protocol", "TCP"))
        for c in template["spec"]["containers"]
        for p in c.get("ports", [])
        if "name" in p
    }
    return Pod(namespace, template["metadata"]["labels"], ports)


def cluster(objs: list[Obj], zone_deployment: Obj) -> dict[str, Endpoint]:
    """The chart's pods by component, a zone pod, and their surroundings."""
    found: dict[str, Endpoint] = {"zone": pod_of(zone_deployment["spec"]["template"])}
    for obj in objs:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            template = obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        found[template["metadata"]["labels"]["app.kubernetes.io/component"]] = pod_of(template)
    dns = {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")}
    found |= {
        "kube-dns": Pod("kube-system", {"k8s-app": "kube-dns"}, dns),
        "prometheus": Pod("monitoring", {"app": "prometheus"}),
        "ingress-controller": Pod("ingress-nginx", {"app": "ingress-nginx"}),
        "stranger": Pod("other", {"app": "stranger"}),
        "neighbour": Pod(NAMESPACE, {"app": "someone-else"}),
        "client": External("203.0.113.7"),
        "office": External("198.51.100.9"),
        "apiserver": External("10.96.0.1", {"https": (443, "TCP"), "server": (6443, "TCP")}),
        "internet": External("192.0.2.10", {"https": (443, "TCP")}),
    }
    return found


Matrix = list[tuple[str, str, str]]


def check(objs: list[Obj], pods: dict[str, Endpoint], allow: Matrix, deny: Matrix) -> None:
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]

    def reaches(src: str, dst: str, port: str) -> bool:
        number, protocol = pods[dst].ports[port]
        return allowed(policies, Connection(pods[src], pods[dst], number, protocol), NAMESPACES)

    assert [edge for edge in allow if not reaches(*edge)] == []
    assert [edge for edge in deny if reaches(*edge)] == []


@pytest.fixture(scope="module")
def zone(zone_objects: tuple[Obj, Obj]) -> Obj:
    return zone_objects[0]


# What the architecture draws (docs/ARCHITECTURE.md, docs/OPERATIONS.md#networkpolicies).
ARCHITECTURE: Matrix = [
    ("operator", "redis", "redis"),
    ("operator", "zone", "grpc"),
    ("operator", "apiserver", "https"),
    ("operator", "apiserver", "server"),
    ("operator", "auth", "grpc"),
    ("auth", "redis", "redis"),
    ("auth", "postgresql", "postgresql"),
    ("matchmaking", "redis", "redis"),
    ("matchmaking", "postgresql", "postgresql"),
    ("matchmaking", "auth", "grpc"),
    ("relay", "redis", "redis"),
    ("relay", "auth", "grpc"),
    ("relay", "zone", "grpc"),
    ("zone", "redis", "redis"),
    ("zone", "postgresql", "postgresql"),
    ("zone", "auth", "grpc"),
    ("zone", "matchmaking", "grpc"),  # an instance zone's match result
    ("database-backup", "postgresql", "postgresql"),
    ("client", "relay", "udp"),
    ("client", "relay", "grpc"),
    ("client", "auth", "grpc"),
    ("client", "matchmaking", "grpc"),
    *[(c, "kube-dns", port) for c in DIALERS for port in ("dns", "dns-tcp")],
    *[("prometheus", c, "metrics") for c in ("operator", "auth", "matchmaking", "relay", "zone")],
]
CONSOLE: Matrix = [
    ("console", "redis", "redis"),
    ("console", "postgresql", "postgresql"),
    ("console", "auth", "grpc"),
    ("console", "relay", "grpc"),
    ("console", "zone", "grpc"),
    ("console", "kube-dns", "dns"),
    ("ingress-controller", "console", "http"),
    ("prometheus", "console", "metrics"),
    ("redis-exporter", "redis", "redis"),
    ("redis-exporter", "kube-dns", "dns"),
    ("prometheus", "redis-exporter", "metrics"),
]
# Paths nobody needs: wrong component, wrong port, outsiders, the operator.
FORBIDDEN: Matrix = [
    ("relay", "postgresql", "postgresql"),
    ("operator", "postgresql", "postgresql"),
    ("database-backup", "redis", "redis"),
    ("zone", "zone", "grpc"),
    ("zone", "relay", "grpc"),
    ("zone", "apiserver", "https"),
    ("relay", "apiserver", "https"),
    ("auth", "zone", "grpc"),
    ("matchmaking", "zone", "grpc"),
    ("matchmaking", "relay", "grpc"),
    ("auth", "matchmaking", "grpc"),
    ("auth", "internet", "https"),
    ("zone", "internet", "https"),
    ("redis", "auth", "grpc"),
    ("redis", "kube-dns", "dns"),
    ("postgresql", "kube-dns", "dns"),
    ("client", "zone", "grpc"),
    ("client", "redis", "redis"),
    ("client", "postgresql", "postgresql"),
    ("client", "operator", "metrics"),
    ("client", "relay", "metrics"),
    ("stranger", "redis", "redis"),
    ("stranger", "postgresql", "postgresql"),
    ("stranger", "zone", "grpc"),
    ("neighbour", "redis", "redis"),
    ("neighbour", "zone", "grpc"),
    ("relay", "operator", "health"),
    ("prometheus", "operator", "health"),
    ("zone", "operator", "metrics"),
    ("prometheus", "zone", "grpc"),
    ("prometheus", "redis", "redis"),
]
CONSOLE_FORBIDDEN: Matrix = [
    ("console", "matchmaking", "grpc"),
    ("relay", "console", "grpc"),
    ("client", "console", "http"),
    ("redis-exporter", "postgresql", "postgresql"),
    ("redis-exporter", "auth", "grpc"),
]
FULL = {"console": {"enabled": True}, "redisExporter": {"enabled": True}}


def test_defaults_allow_the_architecture_and_nothing_else(render: Render, zone: Obj) -> None:
    objs = render({})
    check(objs, cluster(objs, zone), ARCHITECTURE, FORBIDDEN)


def test_with_the_console_and_exporter(render: Render, zone: Obj) -> None:
    objs = render(FULL)
    check(objs, cluster(objs, zone), ARCHITECTURE + CONSOLE, FORBIDDEN + CONSOLE_FORBIDDEN)


def test_tls_and_its_ingress_change_no_path(render: Render, zone: Obj) -> None:
    ingress = {"enabled": True, "hosts": {"auth": "auth.example.com"}}
    tls = {"secretName": "tessera-tls", "ingress": ingress}
    objs = render({**FULL, "tls": tls})
    check(objs, cluster(objs, zone), ARCHITECTURE + CONSOLE, FORBIDDEN + CONSOLE_FORBIDDEN)


def test_every_pod_is_covered_both_ways(render: Render, zone: Obj) -> None:
    objs = render(FULL)
    pods = cluster(objs, zone)
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    released = [
        name
        for name, pod in pods.items()
        if isinstance(pod, Pod) and pod.namespace == NAMESPACE and name != "neighbour"
    ]
    assert {"operator", "auth", "matchmaking", "relay", "console", "zone"} <= set(released)
    assert {"redis", "postgresql", "database-backup", "redis-exporter"} <= set(released)
    for name in released:
        pod = pods[name]
        assert isinstance(pod, Pod)
        for direction in ("Ingress", "Egress"):
            assert any(
                direction in p["spec"]["policyTypes"]
                and selects(p["spec"]["podSelector"], pod.labels)
                for p in policies
            ), (name, direction)
    for policy in policies:
        kubernetes_validate.validate(policy, "1.30.0", strict=True)


def test_sources_and_destinations_from_values(render: Render, zone: Obj) -> None:
    values: dict[str, Any] = {
        **FULL,
        "networkPolicy": {
            "metricsNamespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
            },
            "metricsFrom": [{"ipBlock": {"cidr": "198.51.100.0/24"}}],
            "publicFrom": [{"ipBlock": {"cidr": "198.51.100.0/24"}}],
            "consoleFrom": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                    }
                }
            ],
            "kubernetesApi": {"to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}], "ports": [443]},
            "extraEgress": [
                {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": 4317}]}
            ],
        },
    }
    objs = render(values)
    pods = cluster(objs, zone)
    pods["collector"] = External("192.0.2.10", {"otlp": (4317, "TCP")})
    allow: Matrix = [
        ("prometheus", "relay", "metrics"),
        ("office", "relay", "metrics"),
        ("office", "relay", "udp"),
        ("office", "auth", "grpc"),
        ("ingress-controller", "console", "http"),
        ("operator", "apiserver", "https"),
        ("relay", "collector", "otlp"),
        ("zone", "collector", "otlp"),
        # Callers of auth reach it whatever publicFrom says.
        ("relay", "auth", "grpc"),
        ("zone", "auth", "grpc"),
        ("operator", "auth", "grpc"),
        ("matchmaking", "auth", "grpc"),
    ]
    deny: Matrix = [
        ("stranger", "relay", "metrics"),
        ("stranger", "zone", "metrics"),
        ("client", "relay", "udp"),
        ("client", "matchmaking", "grpc"),
        ("client", "auth", "grpc"),
        ("prometheus", "console", "http"),
        ("operator", "apiserver", "server"),
        ("operator", "internet", "https"),
        ("relay", "internet", "https"),
        ("redis", "collector", "otlp"),
    ]
    check(objs, pods, allow, deny)


def test_external_redis_and_database(render: Render, zone: Obj) -> None:
    values = {
        "redis": {
            "external": {
                "enabled": True,
                "url": "rediss://cache.example.net:6380/2",
                "password": "p",
            }
        },
        "postgresql": {"enabled": False},
        "networkPolicy": {
            "externalRedis": {"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}]},
            "externalDatabase": {"to": [{"ipBlock": {"cidr": "10.2.0.0/16"}}], "port": 5433},
        },
    }
    objs = render(values)
    pods = cluster(objs, zone)
    assert "redis" not in pods and "postgresql" not in pods
    pods["cache"] = External("10.1.2.3", {"tls": (6380, "TCP"), "plain": (6379, "TCP")})
    pods["database"] = External("10.2.0.5", {"pg": (5433, "TCP")})
    pods["elsewhere"] = External("10.3.0.1", {"tls": (6380, "TCP"), "pg": (5433, "TCP")})
    allow: Matrix = [
        *[(c, "cache", "tls") for c in ("operator", "auth", "matchmaking", "relay", "zone")],
        *[(c, "database", "pg") for c in ("auth", "matchmaking", "zone", "database-backup")],
    ]
    deny: Matrix = [
        ("relay", "cache", "plain"),
        ("relay", "database", "pg"),
        ("operator", "database", "pg"),
        ("database-backup", "cache", "tls"),
        ("auth", "elsewhere", "tls"),
        ("auth", "elsewhere", "pg"),
    ]
    check(objs, pods, allow, deny)
    for policy in (o for o in objs if o["kind"] == "NetworkPolicy"):
        kubernetes_validate.validate(policy, "1.30.0", strict=True)


def test_an_external_redis_without_a_port_is_reached_on_6379(render: Render) -> None:
    objs = render(
        {"redis": {"external": {"enabled": True, "url": "redis://cache", "password": "p"}}}
    )
    relay = next(
        o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "tessera-relay"
    )
    assert {"ports": [{"port": 6379, "protocol": "TCP"}]} in relay["spec"]["egress"]


def test_can_be_turned_off(render: Render) -> None:
    objs = render({**FULL, "networkPolicy": {"enabled": False}})
    assert not [o for o in objs if o["kind"] == "NetworkPolicy"]


# The evaluator itself, on hand-written policies.
POD = Pod("a", {"app": "web"}, {"http": (80, "TCP")})
CLIENT = Pod("a", {"app": "client"})
NS = {"a": {"team": "x"}, "b": {"team": "y"}}


def policy(spec: Obj, namespace: str = "a") -> Obj:
    return {"metadata": {"namespace": namespace}, "spec": {"podSelector": {}, **spec}}


@pytest.mark.parametrize(
    ("policies", "src", "port", "expected"),
    [
        ([], CLIENT, 80, True),
        ([policy({"policyTypes": ["Ingress"]})], CLIENT, 80, False),
        ([policy({"policyTypes": ["Ingress"]}, namespace="b")], CLIENT, 80, True),
        ([policy({"ingress": [{}]})], External("1.2.3.4"), 81, True),
        ([policy({"ingress": [{"ports": [{"port": "http"}]}]})], CLIENT, 80, True),
        ([policy({"ingress": [{"ports": [{"port": "http"}]}]})], CLIENT, 81, False),
        ([policy({"ingress": [{"ports": [{"port": 79, "endPort": 81}]}]})], CLIENT, 80, True),
        ([policy({"ingress": [{"ports": [{"port": 80, "protocol": "UDP"}]}]})], CLIENT, 80, False),
        (
            [
                policy(
                    {"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}
                )
            ],
            CLIENT,
            80,
            True,
        ),
        (
            [
                policy(
                    {"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}
                )
            ],
            Pod("b", {"app": "client"}),
            80,
            False,
        ),
        (
            [
                policy(
                    {"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}]}]}
                )
            ],
            Pod("b", {"app": "any"}),
            80,
            True,
        ),
        (
            [
                policy(
                    {
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": {},
                                        "podSelector": {"matchLabels": {"app": "c"}},
                                    }
                                ]
                            }
                        ]
                    }
                )
            ],
            Pod("b", {"app": "any"}),
            80,
            False,
        ),
        (
            [
                policy(
                    {
                        "ingress": [
                            {
                                "from": [
                                    {"ipBlock": {"cidr": "1.2.0.0/16", "except": ["1.2.3.0/24"]}}
                                ]
                            }
                        ]
                    }
                )
            ],
            External("1.2.4.4"),
            80,
            True,
        ),
        (
            [
                policy(
                    {
                        "ingress": [
                            {
                                "from": [
                                    {"ipBlock": {"cidr": "1.2.0.0/16", "except": ["1.2.3.0/24"]}}
                                ]
                            }
                        ]
                    }
                )
            ],
            External("1.2.3.4"),
            80,
            False,
        ),
        (
            [policy({"ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]})],
            CLIENT,
            80,
            False,
        ),
        ([policy({"policyTypes": ["Ingress"]}), policy({"ingress": [{}]})], CLIENT, 80, True),
        (
            [
                policy(
                    {
                        "podSelector": {
                            "matchExpressions": [
                                {"key": "app", "operator": "NotIn", "values": ["web"]}
                            ]
                        },
                        "policyTypes": ["Ingress"],
                    }
                )
            ],
            CLIENT,
            80,
            True,
        ),
        ([policy({"policyTypes": ["Egress"]})], CLIENT, 80, False),
        (
            [
                policy(
                    {
                        "policyTypes": ["Egress"],
                        "egress": [
                            {
                                "to": [
                                    {
                                        "podSelector": {
                                            "matchExpressions": [
                                                {"key": "app", "operator": "Exists"}
                                            ]
                                        }
                                    }
                                ]
                            }
                        ],
                    }
                )
            ],
            CLIENT,
            80,
            True,
        ),
        ([policy({"egress": [{}]})], CLIENT, 80, False),
    ],
)
def test_evaluator(policies: list[Obj], src: Endpoint, port: int, expected: bool) -> None:
    assert allowed(policies, Connection(src, POD, port), NS) is expected
