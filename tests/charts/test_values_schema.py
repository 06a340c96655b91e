"""values.schema.json: bad values fail at install time with a message naming the
key and the constraint; good values (the defaults, the documented examples) pass."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

from .conftest import CHART_DIR, NAMESPACE

BAD_VALUES: list[tuple[dict[str, Any], list[str]]] = [
    ({"oprator": {"replicas": 2}}, ["additional properties 'oprator' not allowed"]),
    ({"auth": {"replica": 3}}, ["/auth", "additional properties 'replica' not allowed"]),
    ({"logLevel": "verbose"}, ["/logLevel", "debug", "critical"]),
    (
        {"relay": {"service": {"type": "ClusterIP"}}},
        ["/relay/service/type", "LoadBalancer", "NodePort"],
    ),
    ({"relay": {"service": {"nodePort": 80}}}, ["/relay/service/nodePort"]),
    ({"relay": {"udpPort": 70000}}, ["/relay/udpPort", "maximum"]),
    ({"relay": {"publicAddress": "no-port"}}, ["/relay/publicAddress"]),
    ({"auth": {"grpcPort": "50051"}}, ["/auth/grpcPort", "want integer"]),
    (
        {"matchmaking": {"autoscaling": {"minReplicas": 0}}},
        ["/matchmaking/autoscaling/minReplicas", "minimum"],
    ),
    (
        {"auth": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}},
        ["targetCPUUtilizationPercentage", "maximum"],
    ),
    ({"operator": {"replicas": 0}}, ["/operator/replicas", "minimum"]),
    ({"auth": {"resources": {"requests": {"cpu": "lots"}}}}, ["/auth/resources/requests/cpu"]),
    (
        {"redis": {"external": {"enabled": True}}},
        ["/redis/external/url", "/redis/external/password"],
    ),
    (
        {"redis": {"external": {"enabled": True, "url": "redis://r:6379/0"}}},
        ["/redis/external/existingSecret", "/redis/external/password"],
    ),
    (
        {"redis": {"external": {"enabled": True, "url": "redis://:pw@r:6379", "password": "x"}}},
        ["/redis/external/url"],
    ),
    (
        {
            "redis": {
                "external": {"enabled": True, "url": "redis+cluster://:pw@r:6379", "password": "x"}
            }
        },
        ["/redis/external/url"],
    ),
    (
        {
            "redis": {
                "external": {"enabled": True, "url": "redis+cluster://r:6379,s", "password": "x"}
            }
        },
        ["/redis/external/url"],
    ),
    (
        {
            "redis": {
                "external": {"enabled": True, "url": "redis+cluster://r:6379/2", "password": "x"}
            }
        },
        ["/redis/external/url"],
    ),
    ({"redis": {"persistence": {"size": "lots"}}}, ["/redis/persistence/size"]),
    ({"redis": {"appendfsync": "sometimes"}}, ["/redis/appendfsync"]),
    (
        {"auth": {"signingKey": {"existingSecret": "Not_A_Name"}}},
        ["/auth/signingKey/existingSecret"],
    ),
    ({"serviceMonitor": {"interval": "30 seconds"}}, ["/serviceMonitor/interval"]),
    ({"auth": {"extraEnv": [{"value": "x"}]}}, ["/auth/extraEnv/0", "name"]),
    ({"postgresql": {"enabeld": False}}, ["/postgresql", "additional properties 'enabeld'"]),
    ({"networkPolicy": {"publicFrom": "anyone"}}, ["/networkPolicy/publicFrom", "want array"]),
    (
        {"networkPolicy": {"consoleFrom": [{"podselector": {}}]}},
        ["/networkPolicy/consoleFrom/0", "additional properties 'podselector'"],
    ),
    (
        {"networkPolicy": {"metricsFrom": [{"ipBlock": {"cidr": "10.0.0.0/8", "exept": []}}]}},
        ["/networkPolicy/metricsFrom/0/ipBlock", "'exept'"],
    ),
    ({"networkPolicy": {"dns": {"ports": [0]}}}, ["/networkPolicy/dns/ports/0", "minimum"]),
    (
        {"networkPolicy": {"externalDatabase": {"port": "5432"}}},
        ["/networkPolicy/externalDatabase/port", "want integer"],
    ),
    (
        {"networkPolicy": {"extraEgress": [{"ports": [{"port": 4317, "protocol": "tcp"}]}]}},
        ["/networkPolicy/extraEgress/0/ports/0/protocol"],
    ),
    ({"postgresql": {"username": "Tessera-Admin"}}, ["/postgresql/username"]),
    ({"postgresql": {"maxConnections": 5}}, ["/postgresql/maxConnections", "minimum"]),
    ({"backup": {"keep": 0}}, ["/backup/keep", "minimum"]),
    ({"backup": {"persistence": {"size": "big"}}}, ["/backup/persistence/size"]),
]


@pytest.mark.parametrize(("values", "expected"), BAD_VALUES, ids=[str(v) for v, _ in BAD_VALUES])
def test_bad_values_rejected(
    chart: helm_python.Chart, values: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(helm_python.HelmValuesError) as err:
        chart.render(values, name="tessera", namespace=NAMESPACE, is_install=True)
    message = str(err.value)
    assert "values don't meet the specifications of the schema" in message
    for fragment in expected:
        assert fragment in message, message


def test_min_above_max_replicas_fails_with_message(chart: helm_python.Chart) -> None:
    values = {"relay": {"autoscaling": {"minReplicas": 10, "maxReplicas": 3}}}
    with pytest.raises(helm_python.HelmRenderError) as err:
        chart.render(values, name="tessera", namespace=NAMESPACE, is_install=True)
    assert "relay.autoscaling.maxReplicas (3) must be >= relay.autoscaling.minReplicas (10)" in str(
        err.value
    )


def test_defaults_pass(chart: helm_python.Chart) -> None:
    chart.validate_schema(chart.values)
    chart.validate_schema(
        {
            "redis": {
                "external": {
                    "enabled": True,
                    "url": "rediss://cache:6380/1",
                    "existingSecret": "cache",
                }
            },
            "relay": {
                "publicAddress": "203.0.113.7:7777",
                "service": {"type": "NodePort", "nodePort": 31777},
            },
            "auth": {"podDisruptionBudget": {"enabled": True, "minAvailable": "50%"}},
        }
    )


def test_schema_is_draft7_and_accepts_values_yaml() -> None:
    """Draft-07, so Helm 3 (gojsonschema) and Helm 4 read it alike."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(
        yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    )
