"""Generated Secrets survive `helm upgrade`: the chart is rendered by Helm's SDK
against KMock's Kubernetes emulator, so `lookup` reads what the first install
stored, as it would on a real cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import helm_python
import kmock as kmock_lib

from .conftest import CHART_DIR, NAMESPACE, Obj, Render, parse_manifests

GENERATED = (
    "tessera-auth-signing-keys",
    "tessera-connect-key",
    "tessera-auth-service-clients",
    "tessera-redis",
    "tessera-postgresql",
)


def secrets(objs: list[Obj]) -> dict[str, dict[str, str]]:
    return {o["metadata"]["name"]: o["data"] for o in objs if o["kind"] == "Secret"}


async def render_against(url: str, values: dict[str, Any]) -> list[Obj]:
    """An upgrade render whose `lookup` calls go to the emulator at ``url``."""

    def run() -> dict[str, str]:
        with (
            helm_python.Config(
                kube_apiserver=url, kube_insecure_skip_tls_verify=True, namespace=NAMESPACE
            ) as config,
            helm_python.Chart.load(CHART_DIR) as chart,
        ):
            return config.render(
                chart, values, name="tessera", namespace=NAMESPACE, is_upgrade=True
            )

    # Helm's SDK blocks; the emulator must keep serving on this event loop.
    return parse_manifests(await asyncio.to_thread(run))


async def test_upgrade_keeps_generated_secrets(
    render: Render, kmock: kmock_lib.KubernetesEmulator
) -> None:
    kmock.resources["v1/secrets"] = kmock_lib.ResourceInfo(
        kind="Secret", namespaced=True, verbs=["get", "list", "create"]
    )
    url = str(kmock.url).rstrip("/")
    installed = secrets(render({}))
    assert set(installed) == set(GENERATED)
    async with aiohttp.ClientSession() as session:
        for name, data in installed.items():
            body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data}
            body["metadata"] = {"name": name, "namespace": NAMESPACE}
            async with session.post(
                f"{url}/api/v1/namespaces/{NAMESPACE}/secrets", json=body
            ) as rsp:
                assert rsp.status < 300, await rsp.text()

    upgraded = secrets(await render_against(url, {}))
    assert upgraded == installed
    fresh = secrets(render({}))
    for name in GENERATED:
        assert fresh[name] != installed[name], f"{name}: a fresh install generates new values"


async def test_first_install_against_empty_cluster_generates(
    kmock: kmock_lib.KubernetesEmulator,
) -> None:
    kmock.resources["v1/secrets"] = kmock_lib.ResourceInfo(
        kind="Secret", namespaced=True, verbs=["get", "list", "create"]
    )
    first = secrets(await render_against(str(kmock.url).rstrip("/"), {}))
    assert set(first) == set(GENERATED)
    assert all(first[name] for name in GENERATED)
    assert set(first["tessera-auth-signing-keys"]) == {"0.pem"}
