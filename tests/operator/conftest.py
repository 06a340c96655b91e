"""Fixtures for the kopf operator's end-to-end tests: KMock's Kubernetes emulator
(with resource versions and uids, as a real API server assigns them) and the
operator running in-process against it and a real Redis."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import attrs
import jsonpatch
import kmock
import kopf
import pytest

from tessera.common import store
from tessera.common.config import ServiceClient
from tessera.harness.redis import LocalRedis
from tessera.operator.handlers import OperatorConfig, Runtime, build_registry, configure

_versions = itertools.count(1)


@attrs.define(kw_only=True)
class VersionedEmulator(kmock.KubernetesEmulator):
    """The emulator, plus what a real API server does on writes: a new
    ``resourceVersion`` on every change, ``uid``, ``creationTimestamp`` and a
    name from ``generateName`` on creation, and 422 when a JSON patch's test
    fails (kopf's patches test the version, owner references need the uid)."""

    async def _handle(self, request: Any) -> Any:
        version = str(next(_versions))
        data = request.data
        action = request.action
        if action == kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).isoformat())
            meta["resourceVersion"] = version
        elif action == kmock.action.UPDATE and isinstance(data, dict):
            data.setdefault("metadata", {})["resourceVersion"] = version
        elif action == kmock.action.UPDATE and isinstance(data, list):
            data.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as err:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(err)) from None


RESOURCES: dict[str, dict[str, Any]] = {
    "tessera.io/v1alpha1/worlds": {
        "kind": "World",
        "namespaced": True,
        "verbs": ["list", "watch", "get", "patch", "create", "delete"],
        "subresources": ["status", "scale"],
    },
    "tessera.io/v1alpha1/zoneservers": {
        "kind": "ZoneServer",
        "namespaced": True,
        "verbs": ["list", "watch", "get", "patch", "create", "delete"],
        "subresources": ["status"],
    },
    "apps/v1/deployments": {
        "kind": "Deployment",
        "namespaced": True,
        "verbs": ["list", "get", "patch", "create", "delete"],
    },
    "v1/services": {
        "kind": "Service",
        "namespaced": True,
        "verbs": ["list", "get", "patch", "create", "delete"],
    },
    "policy/v1/poddisruptionbudgets": {
        "kind": "PodDisruptionBudget",
        "namespaced": True,
        "verbs": ["list", "get", "patch", "create", "delete"],
    },
    "v1/pods": {"kind": "Pod", "namespaced": True, "verbs": ["list", "get", "create", "patch"]},
    "v1/nodes": {"kind": "Node", "namespaced": False, "verbs": ["list", "get", "create", "patch"]},
    "v1/events": {"kind": "Event", "namespaced": True, "verbs": ["create", "list"]},
    "v1/namespaces": {"kind": "Namespace", "namespaced": False, "verbs": ["list", "watch", "get"]},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {
        "kind": "CustomResourceDefinition",
        "namespaced": False,
        "verbs": ["list", "watch", "get"],
    },
}


class Cluster:
    """What a test does to the emulated cluster, as kubectl would: HTTP calls."""

    def __init__(self, emulator: kmock.KubernetesEmulator, session: aiohttp.ClientSession) -> None:
        self.emulator = emulator
        self.session = session
        self.url = str(emulator.url).rstrip("/")

    async def apply(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.url + path, json=body) as response:
            assert response.status < 300, await response.text()
            result: dict[str, Any] = await response.json()
            return result

    async def patch(self, path: str, body: dict[str, Any]) -> None:
        """A merge patch, as ``kubectl patch --type merge`` sends it."""
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.session.patch(self.url + path, json=body, headers=headers) as response:
            assert response.status < 300, await response.text()

    async def delete(self, path: str) -> None:
        async with self.session.delete(self.url + path) as response:
            assert response.status < 300, await response.text()

    def objects(self, resource: str, namespace: str = "games") -> dict[str, dict[str, Any]]:
        """Live objects of a resource, by name."""
        out = {}
        for (res, ns, name), obj in list(self.emulator.objects.items()):
            key = f"{res.group}/{res.version}/{res.plural}".lstrip("/")
            if key == resource and ns == namespace and not obj.deleted:
                out[name] = dict(obj.raw)
        return out


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout_s: float = 15.0, what: str = ""
) -> None:
    """Wait until ``check()`` is true; fail with ``what`` after the timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.1)


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    return {"cls": VersionedEmulator}


@pytest.fixture
async def cluster(kmock: kmock.KubernetesEmulator) -> AsyncIterator[Cluster]:
    for resource, info in RESOURCES.items():
        kmock.resources[resource] = kmock.ResourceInfo(**info)
    async with aiohttp.ClientSession() as session:
        yield Cluster(kmock, session)


class OperatorThread:
    """The operator against the emulator and the real Redis, in a thread with
    its own event loop (as in production: kopf owns its loop and, on stop,
    cancels every task it did not find at start-up)."""

    def __init__(self, cluster: Cluster, config: OperatorConfig) -> None:
        self.cluster = cluster
        self.config = config
        self.stop_flag = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._main, name=config.instance, daemon=True)

    def _login(self, **_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=self.cluster.url, insecure=True)

    async def _run(self) -> None:
        redis = store.connect(self.config.redis_url)
        runtime = Runtime(self.config, redis)
        runtime.zones.timeout_s = 0.2
        settings = kopf.OperatorSettings()
        configure(settings, self.config)
        settings.peering.lifetime = 5
        try:
            await kopf.operator(
                registry=build_registry(runtime, self._login),
                settings=settings,
                clusterwide=True,
                standalone=self.config.standalone,
                stop_flag=self.stop_flag,
            )
        finally:
            await redis.aclose()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as err:  # reported by stop()
            self.errors.append(err)

    def start(self) -> OperatorThread:
        self.thread.start()
        return self

    async def stop(self) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 20)
        assert not self.thread.is_alive(), "the operator did not stop"
        errors = [e for e in self.errors if not isinstance(e, asyncio.CancelledError)]
        assert not errors, errors


def operator_config(redis_url: str, **overrides: Any) -> OperatorConfig:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "zone_redis_url": "redis://redis.games.svc:6379/0",
        "interval_s": 0.3,
        "instance": "test-operator",
        "standalone": True,
        "service_client": ServiceClient("operator", "operator-secret-0123456789"),
    }
    return OperatorConfig(**{**base, **overrides})


@pytest.fixture
async def operator(cluster: Cluster, redis_server: LocalRedis) -> AsyncIterator[OperatorConfig]:
    """One standalone operator (no peering)."""
    running = OperatorThread(cluster, operator_config(redis_server.url)).start()
    yield running.config
    await running.stop()
