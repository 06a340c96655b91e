"""The image's service entry points start with exactly the configuration the
chart gives them (the console enabled): each Deployment's env (Secrets resolved
from the rendered chart, secret volumes written to a directory, `$(VAR)`
expanded as the kubelet does) is handed to a real `python -m tessera.<service>`
process, against a real redis-server that requires the chart's generated
password and a real PostgreSQL with the bundled one's user and database (the
chart's generated DSN, its host mapped to the local server). The process must log
`serving`, answer gRPC health SERVING and exit 0 on SIGTERM.

The operator is started the same way, against KMock's Kubernetes emulator
(through a kubeconfig): it must serve kopf's /healthz and /metrics and exit 0 on
SIGTERM. Zone pods are built by the operator, not the chart: the zone entry point
is started with the environment of the Deployment tessera.operator.resources
makes for the static example zone.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import grpc
import helm_python
import kmock as kmock_lib
import pytest
import redis
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tessera.common import acl
from tessera.common.process import ServiceProcess, free_port
from tessera.harness.postgres import SUPERUSER, LocalPostgres, server_bin
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL

from .dockerfile import ROOT

NAMESPACE = "games"
REDIS_HOST = f"tessera-redis.{NAMESPACE}.svc:6379"
POSTGRES_HOST = f"tessera-postgresql.{NAMESPACE}.svc:5432"
# Started in this order: later services may call earlier ones (matchmaking -> auth).
SERVICES = ("auth", "matchmaking", "relay", "console")

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    with helm_python.Chart.load(ROOT / "charts" / "tessera") as chart:
        rendered = chart.render(
            {"console": {"enabled": True}}, name="tessera", namespace=NAMESPACE, is_install=True
        )
    return [
        obj
        for path, text in rendered.items()
        if path.endswith(".yaml")
        for obj in yaml.safe_load_all(text)
        if obj
    ]


@pytest.fixture(scope="module")
def secrets(objects: list[Obj]) -> dict[str, dict[str, bytes]]:
    return {
        o["metadata"]["name"]: {k: base64.b64decode(v) for k, v in o["data"].items()}
        for o in objects
        if o["kind"] == "Secret"
    }


@pytest.fixture(scope="module")
def chart_redis(
    tmp_path_factory: pytest.TempPathFactory, secrets: dict[str, dict[str, bytes]]
) -> Iterator[LocalRedis]:
    """A redis-server that, like the chart's, has one user per component with the
    generated passwords (and the administrator's)."""
    server = LocalRedis(tmp_path_factory.mktemp("chart-redis"))
    server.start()
    generated = {k: v.decode() for k, v in secrets["tessera-redis"].items()}
    passwords = {name: generated[f"{name}-password"] for name in acl.NAMES}
    server.aclfile.write_text(acl.acl_file(passwords, admin_password=generated["password"]))
    client = redis.Redis(host="127.0.0.1", port=server.port)
    client.acl_load()
    client.close()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chart_postgres(
    postgres_server: LocalPostgres, secrets: dict[str, dict[str, bytes]]
) -> Iterator[str]:
    """The bundled PostgreSQL's user and database (from the chart's generated DSN) on
    the session's server; yields the server's local address."""
    dsn = urlsplit(secrets["tessera-postgresql"]["url"].decode())
    user, database = dsn.username, dsn.path.lstrip("/")
    password = secrets["tessera-postgresql"]["password"].decode()
    assert dsn.password == password and user and database

    def psql(sql: str) -> None:
        command = [str(server_bin() / "psql"), "-h", "127.0.0.1", "-p", str(postgres_server.port)]
        command += ["-U", SUPERUSER, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    psql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
    psql(f"CREATE DATABASE {database} OWNER {user}")
    yield f"127.0.0.1:{postgres_server.port}"
    psql(f"DROP DATABASE {database} WITH (FORCE)")
    psql(f"DROP ROLE {user}")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion over the variables defined so far."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def pod_env(
    deployment: Obj,
    secrets: dict[str, dict[str, bytes]],
    directory: Path,
    replace: dict[str, str],
) -> dict[str, str]:
    """The container's environment as the kubelet would build it, with the
    in-cluster addresses in ``replace`` mapped to local ones."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            # The kubelet's layout: files in a timestamped directory, `..data`
            # pointing at it, and one symlink per key through `..data`.
            local = directory / volume["name"]
            stamped = local / "..2026_01_01_00_00_00.000000001"
            stamped.mkdir(parents=True)
            (local / "..data").symlink_to(stamped.name)
            for key, data in secrets[volume["secret"]["secretName"]].items():
                (stamped / key).write_bytes(data)
                (stamped / key).chmod(volume["secret"]["defaultMode"])
                (local / key).symlink_to(f"..data/{key}")
            replace[mounts[volume["name"]]] = str(local)
    fields = {
        "metadata.name": "test-pod-0",
        "metadata.namespace": NAMESPACE,
        "status.podIP": "127.0.0.1",
    }
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            value = expand(entry["value"], env)
        elif "secretKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]][ref["key"]].decode()
        else:
            value = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        for old, new in replace.items():
            value = value.replace(old, new)
        env[entry["name"]] = value
    return env


def start_and_stop(module: str, env: dict[str, str], name: str) -> None:
    """Start, wait for `serving` and health SERVING, then SIGTERM and exit 0."""
    service = ServiceProcess(module, env, name=name).start()
    try:
        service.wait_serving(timeout_s=30)
        assert health(service.grpc_address) == health_pb2.HealthCheckResponse.SERVING
        assert service.terminate() == 0, "\n".join(list(service.lines)[-20:])
    finally:
        service.kill()


def health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        status: int = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        return status


def test_services_start_with_the_charts_configuration(
    objects: list[Obj],
    secrets: dict[str, dict[str, bytes]],
    chart_redis: LocalRedis,
    chart_postgres: str,
    tmp_path: Path,
) -> None:
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    replace = {REDIS_HOST: f"127.0.0.1:{chart_redis.port}", POSTGRES_HOST: chart_postgres}
    started: list[ServiceProcess] = []
    try:
        for name in SERVICES:
            deployment = deployments[f"tessera-{name}"]
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            directory = tmp_path / name
            directory.mkdir()
            env = pod_env(deployment, secrets, directory, dict(replace))
            assert env["TESSERA_REDIS_URL"].startswith(f"redis://{name}:")
            env |= {
                "TESSERA_HOST": "127.0.0.1",
                "TESSERA_GRPC_PORT": "0",
                "TESSERA_METRICS_PORT": "0",
            }
            # Other listening ports (the relay's UDP) move to free local ports.
            for port in container["ports"]:
                if port["name"] not in ("grpc", "metrics"):
                    for key, value in env.items():
                        if value == str(port["containerPort"]):
                            env[key] = str(free_port())
            module = container["command"][-1]
            service = ServiceProcess(module, env, name=name).start()
            started.append(service)
            service.wait_serving(timeout_s=30)
            assert health(service.grpc_address) == health_pb2.HealthCheckResponse.SERVING
            grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
            replace[f"tessera-{name}:{grpc_port}"] = service.grpc_address
        for service in reversed(started):
            assert service.terminate() == 0, "\n".join(list(service.lines)[-20:])
    finally:
        for service in started:
            service.kill()


def test_zone_starts_with_the_operators_configuration(
    secrets: dict[str, dict[str, bytes]], chart_redis: LocalRedis, tmp_path: Path
) -> None:
    resources = importlib.import_module("tessera.operator.resources")
    example = ROOT / "manifests" / "examples" / "static-zone.yaml"
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    world = next(d for d in docs if d["kind"] == "World")
    zone = next(d for d in docs if d["kind"] == "ZoneServer")
    for doc in (world, zone):
        doc["metadata"] |= {"namespace": NAMESPACE, "uid": f"uid-{doc['metadata']['name']}"}
    password = secrets["tessera-redis"]["zone-password"].decode()
    redis_url = f"redis://zone:{password}@{REDIS_HOST}/0"
    settings = resources.WorkloadSettings(redis_url, auth_address="tessera-auth:50051")
    deployment = resources.deployment(zone, world, settings)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    local_port = free_port()
    env = pod_env(
        deployment,
        secrets,
        tmp_path,
        {REDIS_HOST: f"127.0.0.1:{chart_redis.port}", f":{grpc_port}": f":{local_port}"},
    )
    env |= {"TESSERA_HOST": "127.0.0.1", "TESSERA_GRPC_PORT": str(local_port)}
    env["TESSERA_METRICS_PORT"] = "0"
    # No auth runs here: the harness's key set stands in for the keys the zone
    # would fetch from TESSERA_AUTH_ADDRESS.
    assert env.pop("TESSERA_AUTH_ADDRESS").startswith("tessera-auth:")
    env |= LOCAL.env()
    assert container["command"] == ["python", "-m", "tessera.zone"]
    start_and_stop(container["command"][-1], env, "zone")


async def test_operator_starts_with_the_charts_configuration(
    objects: list[Obj],
    secrets: dict[str, dict[str, bytes]],
    chart_redis: LocalRedis,
    kmock: kmock_lib.KubernetesEmulator,
    tmp_path: Path,
) -> None:
    for resource, kind, namespaced in [
        ("kopf.dev/v1/clusterkopfpeerings", "ClusterKopfPeering", False),
        ("tessera.io/v1alpha1/worlds", "World", True),
        ("tessera.io/v1alpha1/zoneservers", "ZoneServer", True),
        ("v1/events", "Event", True),
    ]:
        kmock.resources[resource] = kmock_lib.ResourceInfo(
            kind=kind, namespaced=namespaced, verbs=["get", "list", "watch", "patch", "create"]
        )
    url = str(kmock.url).rstrip("/")
    (peering,) = [o for o in objects if o["kind"] == "ClusterKopfPeering"]
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/apis/kopf.dev/v1/clusterkopfpeerings", json=peering) as rsp,
    ):
        assert rsp.status < 300, await rsp.text()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": url}}],
                "users": [{"name": "test", "user": {}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )
    (deployment,) = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "tessera-operator"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = pod_env(deployment, secrets, tmp_path, {REDIS_HOST: f"127.0.0.1:{chart_redis.port}"})
    health_port, metrics_port = free_port(), free_port()
    env |= {
        "TESSERA_HEALTH_PORT": str(health_port),
        "TESSERA_METRICS_PORT": str(metrics_port),
        "KUBECONFIG": str(kubeconfig),
    }
    assert container["command"][:2] == ["python", "-m"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        container["command"][-1],
        env={**os.environ, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        probe = next(p for p in container["ports"] if p["name"] == "health")
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert probe["containerPort"] == int(deployment_env(container)["TESSERA_HEALTH_PORT"])
        async with aiohttp.ClientSession() as session:
            status = await poll(session, f"http://127.0.0.1:{health_port}/healthz")
            assert status == 200
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as rsp:
                assert rsp.status == 200
        proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, stderr.decode()[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def deployment_env(container: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


async def poll(session: aiohttp.ClientSession, url: str, timeout_s: float = 30.0) -> int:
    """The first HTTP status ``url`` answers with, waiting for it to listen."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            async with session.get(url) as rsp:
                return rsp.status
        except aiohttp.ClientConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)
