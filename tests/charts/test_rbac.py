"""The operator's ClusterRole grants exactly the API calls the operator's code
makes (tessera.operator.kube.API_CALLS) plus the calls kopf makes for it
(KOPF_API_CALLS): nothing missing, nothing more, no wildcards."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

from .conftest import NAMESPACE, Obj, Render

Triple = tuple[str, str, str]


@pytest.fixture(scope="module")
def kube() -> ModuleType:
    """The operator's Kubernetes adapter (imported here so that, before the
    operator is merged, these tests fail one by one instead of the collection)."""
    return importlib.import_module("tessera.operator.kube")


def granted(role: Obj) -> set[Triple]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def operator_role(objs: list[Obj]) -> Obj:
    (role,) = [o for o in objs if o["kind"] in ("ClusterRole", "Role")]
    return role


def test_rules_equal_the_operators_calls(render: Render, kube: ModuleType) -> None:
    needed = set(kube.API_CALLS | kube.KOPF_API_CALLS)
    rules = granted(operator_role(render({})))
    assert rules - needed == set(), "granted but never called"
    assert needed - rules == set(), "called but not granted"


def test_rules_have_the_shape_the_operator_derives(render: Render, kube: ModuleType) -> None:
    role = operator_role(render({}))

    def key(rule: dict[str, list[str]]) -> tuple[list[str], list[str]]:
        return rule["apiGroups"], rule["resources"]

    assert sorted(role["rules"], key=key) == sorted(kube.rbac_rules(), key=key)


def test_no_wildcards_or_extra_fields(render: Render) -> None:
    role = operator_role(render({}))
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
        for field in rule.values():
            assert "*" not in field and all("*" not in item for item in field), rule


def test_role_bound_to_the_operator_only(render: Render) -> None:
    objs = render({})
    role = operator_role(objs)
    (binding,) = [o for o in objs if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role["kind"],
        "name": role["metadata"]["name"],
    }
    (operator,) = [
        o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")
    ]
    pod = operator["spec"]["template"]["spec"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    ]
    for other in objs:
        if other["kind"] in ("Deployment", "StatefulSet") and other is not operator:
            spec = other["spec"]["template"]["spec"]
            assert "serviceAccountName" not in spec
            assert spec["automountServiceAccountToken"] is False
