"""Every component's /metrics endpoint (``tessera.common.metrics.serve``) as a
real process serves it: auth, matchmaking, relay, zone and the operator, against
a real redis-server. Each page must pass ``promtool check metrics`` (Prometheus'
own linter: names, suffixes, units, help texts) and hold its component's series."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from tessera.common.process import ServiceProcess, free_port
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import relay_login_env, service_clients

PROMTOOL = shutil.which("promtool")
SECRET = "metrics-test-secret-0123456789"
COMMON = {
    "TESSERA_HOST": "127.0.0.1",
    "TESSERA_GRPC_PORT": "0",
    "TESSERA_METRICS_PORT": "0",
    "TESSERA_SHUTDOWN_GRACE_S": "1",
    "TESSERA_WORLD": "meadow",
}
# The series each component's page must hold, whatever happened before the scrape.
EXPECTED = {
    "auth": ("tessera_auth_", "process_cpu_seconds_total"),
    "matchmaking": ("tessera_matchmaking_", "tessera_auth_verifications_total"),
    "relay": ("tessera_relay_sessions", "tessera_relay_rtt_seconds_bucket"),
    "zone": ("tessera_zone_tick_duration_seconds_bucket", "tessera_zone_players"),
    "operator": ("tessera_operator_planner_duration_seconds_bucket",),
}


@pytest.fixture(scope="module")
def pages(
    redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> Iterator[dict[str, str]]:
    """Each component's /metrics page, scraped once all of them serve."""
    if redis_server.proc is None:
        redis_server.start()
    connect_key = base64.b64encode(os.urandom(32)).decode()
    base = {**COMMON, "TESSERA_REDIS_URL": redis_server.url, "TESSERA_DATABASE_URL": database_url}
    started: list[ServiceProcess] = []

    def start(module: str, env: dict[str, str]) -> ServiceProcess:
        process = ServiceProcess(module, env, name=module.rsplit(".", 1)[-1]).start()
        started.append(process)
        process.wait_serving(timeout_s=60)
        return process

    kubeconfig = tmp_path_factory.mktemp("kube") / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                # Nothing listens there: the operator serves /metrics before it
                # reaches the Kubernetes API, and retries meanwhile.
                "clusters": [
                    {"name": "none", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}
                ],
                "users": [{"name": "none", "user": {}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    try:
        auth = start(
            "tessera.auth",
            {
                **base,
                "TESSERA_AUTH_GENERATE_KEYS": "true",
                "TESSERA_CONNECT_KEY": connect_key,
                "TESSERA_AUTH_SERVICE_CLIENTS": service_clients(
                    f"matchmaking={SECRET},operator={SECRET}"
                ),
            },
        )
        start(
            "tessera.matchmaking",
            {**base, "TESSERA_AUTH_ADDRESS": auth.grpc_address, "TESSERA_MM_CLIENT_SECRET": SECRET},
        )
        start(
            "tessera.relay",
            {
                **base,
                "TESSERA_UDP_HOST": "127.0.0.1",
                "TESSERA_UDP_PORT": "0",
                "TESSERA_AUTH_ADDRESS": auth.grpc_address,
                "TESSERA_CONNECT_KEY": connect_key,
                **relay_login_env(),
            },
        )
        start(
            "tessera.zone",
            {
                **base,
                "TESSERA_ZONE": "meadow-0",
                "TESSERA_ZONE_BOUNDS": "0,0,100,100",
                "TESSERA_WORLD_BOUNDS": "0,0,100,100",
                "TESSERA_AUTH_ADDRESS": auth.grpc_address,
            },
        )
        start(
            "tessera.operator",
            {
                **base,
                "KUBECONFIG": str(kubeconfig),
                "KUBERNETES_SERVICE_HOST": "",
                "TESSERA_STANDALONE": "true",
                "TESSERA_HEALTH_PORT": str(free_port()),
                "TESSERA_AUTH_ADDRESS": auth.grpc_address,
                "TESSERA_SERVICE_CLIENT_SECRET": SECRET,
            },
        )
        out = {}
        for process in started:
            url = f"http://127.0.0.1:{process.ports['metrics_port']}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                out[process.name] = response.read().decode()
        yield out
    finally:
        for process in reversed(started):
            process.kill()


@pytest.mark.parametrize("component", EXPECTED)
def test_metrics_page_passes_promtool(pages: dict[str, str], component: str) -> None:
    assert PROMTOOL, "promtool not found: make install puts Debian's prometheus package in"
    page = pages[component]
    for name in EXPECTED[component]:
        assert name in page, (component, name)
    run = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=page,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0 and run.stdout + run.stderr == "", run.stdout + run.stderr


def test_promtool_finds_a_misnamed_metric() -> None:
    assert PROMTOOL
    page = (
        "# HELP tessera_bad_requests Requests.\n"
        "# TYPE tessera_bad_requests counter\n"
        "tessera_bad_requests 1\n"
    )
    run = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=page,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0 and "_total" in run.stdout + run.stderr


def test_pages_are_from_distinct_processes(pages: dict[str, str]) -> None:
    assert sorted(pages) == sorted(EXPECTED)
    assert "tessera_zone_" not in pages["relay"] and "tessera_relay_" not in pages["zone"]
