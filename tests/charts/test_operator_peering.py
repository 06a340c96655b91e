"""The chart runs two operator replicas that elect a leader through kopf peering.
kopf pauses *every* peer when two share a priority, so the replicas must get
distinct priorities (each replica draws one at start-up)."""

from __future__ import annotations

import importlib
from types import ModuleType

import kopf
import pytest

from tessera.common.config import Env

from .conftest import Render


@pytest.fixture(scope="module")
def handlers() -> ModuleType:
    return importlib.import_module("tessera.operator.handlers")


def test_chart_runs_peered_replicas(render: Render) -> None:
    (operator,) = [
        o
        for o in render({})
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "tessera-operator"
    ]
    assert operator["spec"]["replicas"] >= 2
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TESSERA_STANDALONE"]["value"] == "false"
    assert env["TESSERA_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_replicas_get_distinct_peering_priorities(handlers: ModuleType) -> None:
    priorities = set()
    for pod in ("tessera-operator-7d9f8-abcde", "tessera-operator-7d9f8-fghij"):
        secret = {"TESSERA_SERVICE_CLIENT_SECRET": "operator-secret-0123456789"}
        config = handlers.OperatorConfig.from_env(Env({"TESSERA_POD_NAME": pod, **secret}))
        settings = kopf.OperatorSettings()
        handlers.configure(settings, config)
        assert settings.peering.mandatory and settings.peering.clusterwide
        priorities.add(settings.peering.priority)
    assert len(priorities) == 2, "equal priorities make kopf pause both replicas"
