"""The operator's Kubernetes API calls: the declared list matches the code, and
the RBAC derived from it covers the handlers kopf runs, without wildcards."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import kopf
import pytest

from tessera.common import store
from tessera.common.config import ServiceClient
from tessera.operator import kube
from tessera.operator.handlers import OperatorConfig, Runtime, build_registry
from tessera.operator.kube import API_CALLS, GROUP, KOPF_API_CALLS, _path, rbac_rules


def calls_in_source() -> set[tuple[str, str, str]]:
    """Every ``self._call(verb, group, resource, ...)`` in kube.py, literally."""
    names = {"GROUP": GROUP}
    found: set[tuple[str, str, str]] = set()
    for node in ast.walk(ast.parse(inspect.getsource(kube))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "_call"
        ):
            verb, group, resource = node.args[:3]
            assert isinstance(verb, ast.Constant) and isinstance(resource, ast.Constant)
            if isinstance(group, ast.Name):
                group_value = names[group.id]
            else:
                assert isinstance(group, ast.Constant)
                group_value = str(group.value)
            found.add((group_value, str(resource.value), str(verb.value)))
    return found


def test_api_calls_list_exactly_the_calls_in_the_code() -> None:
    assert calls_in_source() == set(API_CALLS)


def test_kopf_calls_cover_every_watched_resource() -> None:
    runtime = Runtime(
        OperatorConfig(
            "redis://127.0.0.1:1/0",
            "redis://x:1/0",
            service_client=ServiceClient("operator", "operator-secret-0123456789"),
        ),
        store.connect("redis://127.0.0.1:1/0"),
    )
    registry = build_registry(runtime, lambda **_: None)
    resources: set[tuple[str, str]] = set()
    for handlers in (registry._spawning, registry._changing):
        for handler in handlers.get_all_handlers():
            assert handler.selector is not None
            selector = handler.selector
            resources.add((str(selector.group or ""), str(selector.any_name or "")))
    assert resources == {("tessera.io", "worlds"), ("tessera.io", "zoneservers")}
    for group, plural in resources:
        for verb in ("list", "watch", "patch"):
            assert (group, plural, verb) in API_CALLS | KOPF_API_CALLS
    for verb in ("list", "watch", "patch"):
        assert ("kopf.dev", "clusterkopfpeerings", verb) in KOPF_API_CALLS


def test_rbac_rules_have_no_wildcards_and_cover_every_call() -> None:
    rules: list[dict[str, Any]] = rbac_rules()
    covered = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert covered == set(API_CALLS | KOPF_API_CALLS)
    assert all("*" not in value for rule in rules for values in rule.values() for value in values)
    assert {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["create", "patch"],
    } in rules


def test_paths() -> None:
    assert _path("tessera.io", "worlds/status", "games", "earth") == (
        "/apis/tessera.io/v1alpha1/namespaces/games/worlds/earth/status"
    )
    assert _path("apps", "deployments", "games") == "/apis/apps/v1/namespaces/games/deployments"
    assert _path("", "events", "games") == "/api/v1/namespaces/games/events"


async def test_undeclared_calls_are_refused() -> None:
    client = kube.Kube(kopf.ConnectionInfo(server="http://127.0.0.1:1"))
    try:
        with pytest.raises(kube.KubeError, match="undeclared API call delete apps/deployments"):
            await client._call("delete", "apps", "deployments", "games", "x")
    finally:
        await client.close()
