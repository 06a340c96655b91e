"""``python -m tessera.operator`` as a real process: configuration errors, and a
run against the KMock emulator (logged in through a kubeconfig) and a real Redis,
with its health and metrics endpoints."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tessera.common.config import ConfigError, Env, ServiceClient
from tessera.common.process import ServiceProcess, free_port
from tessera.harness.redis import LocalRedis
from tessera.operator.handlers import OperatorConfig

from .conftest import Cluster, eventually


def test_bad_configuration_exits_2_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tessera.operator"],
        env={"TESSERA_OPERATOR_INTERVAL_S": "fast", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "TESSERA_OPERATOR_INTERVAL_S" in result.stderr


SECRET = {"TESSERA_SERVICE_CLIENT_SECRET": "operator-secret-0123456789"}


def test_config_from_env() -> None:
    config = OperatorConfig.from_env(
        Env({"TESSERA_REDIS_URL": "redis://r:1/0", "TESSERA_STANDALONE": "yes", **SECRET})
    )
    assert config.zone_redis_url == "redis://r:1/0" and config.standalone
    assert config.priority > 0  # drawn at random: equal priorities would pause both replicas
    assert config.service_client == ServiceClient(
        "operator", SECRET["TESSERA_SERVICE_CLIENT_SECRET"]
    )
    priority = Env({"TESSERA_PEERING_PRIORITY": "7", **SECRET})
    assert OperatorConfig.from_env(priority).priority == 7
    with pytest.raises(ConfigError, match="TESSERA_PEERING"):
        OperatorConfig.from_env(Env({"TESSERA_PEERING": "Bad Name", **SECRET}))
    # The operator calls zones as a service: no secret, no start.
    with pytest.raises(ConfigError, match="TESSERA_SERVICE_CLIENT_SECRET"):
        OperatorConfig.from_env(Env({}))


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, response.read().decode()


async def test_entry_point_runs_the_operator(
    cluster: Cluster, redis_server: LocalRedis, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": cluster.url}}],
                "users": [{"name": "test", "user": {"token": "secret"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )
    health_port = free_port()
    process = ServiceProcess(
        "tessera.operator",
        {
            "KUBECONFIG": str(kubeconfig),
            "KUBERNETES_SERVICE_HOST": "",
            "TESSERA_REDIS_URL": redis_server.url_for("operator"),
            "TESSERA_STANDALONE": "true",
            "TESSERA_OPERATOR_INTERVAL_S": "0.3",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_HEALTH_PORT": str(health_port),
            **SECRET,
        },
    ).start()
    try:
        ports = process.wait_serving()
        await cluster.apply(
            "/apis/tessera.io/v1alpha1/namespaces/games/worlds",
            {
                "apiVersion": "tessera.io/v1alpha1",
                "kind": "World",
                "metadata": {"name": "moon", "namespace": "games"},
                "spec": {
                    "bounds": {"minX": 0, "minZ": 0, "maxX": 800, "maxZ": 800},
                    "zoneTemplate": {"image": "tessera:test"},
                    "standby": 1,
                    "autoscaling": {"minZones": 2},
                },
            },
        )
        await eventually(
            lambda: len(cluster.objects("tessera.io/v1alpha1/zoneservers")) == 3,
            what="two zones and a standby",
        )

        def healthy() -> bool:
            try:
                return get(f"http://127.0.0.1:{health_port}/healthz")[0] == 200
            except OSError:
                return False

        await eventually(healthy, what="/healthz")

        def counted() -> bool:
            text = get(f"http://127.0.0.1:{ports['metrics_port']}/metrics")[1]
            return (
                "tessera_operator_planner_duration_seconds_count" in text
                and 'tessera_operator_decisions_total{decision="Initial"} 2.0' in text
                and 'tessera_operator_decisions_total{decision="Standby"} 1.0' in text
            )

        await eventually(counted, what="metrics")
    finally:
        assert process.terminate() == 0, "\n".join(list(process.lines)[-20:])
