"""The operator's only Kubernetes API client: every call it makes itself.

Each method goes through :meth:`Kube._call` with a literal (group, resource,
verb); :data:`API_CALLS` lists them and a test checks the list against this
file's source, so the chart's RBAC can be derived from it (:func:`rbac_rules`),
together with :data:`KOPF_API_CALLS`, the calls kopf makes on our behalf
(watching, finalizers, progress annotations, peering, its own events).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

log = logging.getLogger(__name__)

GROUP = "tessera.io"
VERSION = "v1alpha1"

# (apiGroup, resource, verb) for every call in this module.
API_CALLS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("tessera.io", "worlds", "get"),
        ("tessera.io", "worlds/status", "patch"),
        ("tessera.io", "zoneservers", "list"),
        ("tessera.io", "zoneservers", "create"),
        ("tessera.io", "zoneservers", "patch"),
        ("tessera.io", "zoneservers", "delete"),
        ("tessera.io", "zoneservers/status", "patch"),
        ("apps", "deployments", "create"),
        ("apps", "deployments", "patch"),
        ("", "services", "create"),
        ("", "services", "patch"),
        ("policy", "poddisruptionbudgets", "create"),
        ("policy", "poddisruptionbudgets", "patch"),
        ("", "pods", "list"),
        ("", "nodes", "list"),
        ("", "events", "create"),
    }
)

# What kopf itself needs for the handlers in tessera.operator.handlers, with
# scanning disabled and cluster-wide peering.
KOPF_API_CALLS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("tessera.io", "worlds", "list"),
        ("tessera.io", "worlds", "watch"),
        ("tessera.io", "worlds", "patch"),
        ("tessera.io", "zoneservers", "watch"),
        ("kopf.dev", "clusterkopfpeerings", "list"),
        ("kopf.dev", "clusterkopfpeerings", "watch"),
        ("kopf.dev", "clusterkopfpeerings", "patch"),
        ("", "events", "create"),
    }
)


def rbac_rules() -> list[dict[str, list[str]]]:
    """ClusterRole rules covering exactly the operator's and kopf's calls."""
    by_resource: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in API_CALLS | KOPF_API_CALLS:
        by_resource.setdefault((group, resource), set()).add(verb)
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
        for (group, resource), verbs in sorted(by_resource.items())
    ]


class KubeError(Exception):
    """A Kubernetes API call failed; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    if info.ca_path is None and info.ca_data is None and info.certificate_path is None:
        return True
    context = ssl.create_default_context(
        cafile=str(info.ca_path) if info.ca_path else None,
        cadata=info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data,
    )
    if info.certificate_path and info.private_key_path:
        context.load_cert_chain(str(info.certificate_path), str(info.private_key_path))
    return context


API_VERSIONS = {GROUP: f"{GROUP}/{VERSION}", "apps": "apps/v1", "policy": "policy/v1", "": "v1"}


def _path(group: str, resource: str, namespace: str | None, name: str | None = None) -> str:
    base = "/api/v1" if group == "" else f"/apis/{API_VERSIONS[group]}"
    kind, _, sub = resource.partition("/")
    out = base + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{kind}"
    if name is not None:
        out += f"/{quote(name)}"
    return out + (f"/{sub}" if sub else "")


class Kube:
    """A small async client for the calls in :data:`API_CALLS`."""

    def __init__(self, info: kopf.ConnectionInfo, *, timeout_s: float = 10.0) -> None:
        headers = {"Accept": "application/json"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        self._server = info.server.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(ssl=_ssl_context(info)),
        )

    async def close(self) -> None:
        await self._session.close()

    async def _call(
        self,
        verb: str,
        group: str,
        resource: str,
        namespace: str | None,
        name: str | None = None,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        if (group, resource, verb) not in API_CALLS:  # keeps API_CALLS (and RBAC) honest
            raise KubeError(0, f"undeclared API call {verb} {group}/{resource}")
        method = {"get": "GET", "list": "GET", "create": "POST", "patch": "PATCH"}.get(
            verb, "DELETE"
        )
        headers = {"Content-Type": "application/merge-patch+json"} if verb == "patch" else {}
        url = self._server + _path(group, resource, namespace, name)
        async with self._session.request(
            method, url, json=body, params=params, headers=headers
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise KubeError(response.status, f"{method} {url}: {text[:300]}")
            data: dict[str, Any] = await response.json(content_type=None) if text else {}
            return data

    async def get_world(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("get", GROUP, "worlds", namespace, name)
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    async def patch_world_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        await self._call("patch", GROUP, "worlds/status", namespace, name, body={"status": status})

    async def list_zoneservers(self, namespace: str, world: str) -> list[dict[str, Any]]:
        data = await self._call(
            "list",
            GROUP,
            "zoneservers",
            namespace,
            params={"labelSelector": f"tessera.io/world={world}"},
        )
        items: list[dict[str, Any]] = data.get("items", [])
        return [z for z in items if z.get("spec", {}).get("world") == world]

    async def create_zoneserver(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self._call("create", GROUP, "zoneservers", namespace, body=body)

    async def patch_zoneserver(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await self._call("patch", GROUP, "zoneservers", namespace, name, body=patch)

    async def patch_zoneserver_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        await self._call(
            "patch", GROUP, "zoneservers/status", namespace, name, body={"status": status}
        )

    async def delete_zoneserver(self, namespace: str, name: str) -> None:
        try:
            await self._call("delete", GROUP, "zoneservers", namespace, name)
        except KubeError as err:
            if err.status != 404:
                raise

    async def apply_deployment(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Create the Deployment, or merge-patch it if it exists."""
        try:
            await self._call("create", "apps", "deployments", namespace, body=body)
        except KubeError as err:
            if err.status != 409:
                raise
            name = body["metadata"]["name"]
            await self._call("patch", "apps", "deployments", namespace, name, body=body)

    async def apply_service(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Create the Service, or merge-patch it if it exists."""
        try:
            await self._call("create", "", "services", namespace, body=body)
        except KubeError as err:
            if err.status != 409:
                raise
            name = body["metadata"]["name"]
            await self._call("patch", "", "services", namespace, name, body=body)

    async def apply_disruption_budget(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Create the PodDisruptionBudget, or merge-patch it if it exists."""
        try:
            await self._call("create", "policy", "poddisruptionbudgets", namespace, body=body)
        except KubeError as err:
            if err.status != 409:
                raise
            name = body["metadata"]["name"]
            await self._call("patch", "policy", "poddisruptionbudgets", namespace, name, body=body)

    async def list_zone_pods(self, namespace: str, world: str) -> list[dict[str, Any]]:
        data = await self._call(
            "list", "", "pods", namespace, params={"labelSelector": f"tessera.io/world={world}"}
        )
        items: list[dict[str, Any]] = data.get("items", [])
        return items

    async def list_nodes(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self._call("list", "", "nodes", None)).get("items", [])
        return items

    async def post_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self._call("create", "", "events", namespace, body=body)
