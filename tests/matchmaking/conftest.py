"""Fixtures of the matchmaking tests."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from tessera.common.database import Pool
from tessera.common.process import ServiceProcess
from tessera.harness.redis import LocalRedis

COMMON = {
    "TESSERA_HOST": "127.0.0.1",
    "TESSERA_GRPC_PORT": "0",
    "TESSERA_METRICS_PORT": "0",
    "TESSERA_SHUTDOWN_GRACE_S": "1",
}


def start_serving(process: ServiceProcess) -> ServiceProcess:
    """Start ``process`` and wait for its ``serving`` line."""
    process.start().wait_serving()
    return process


@pytest.fixture
def start_service() -> Callable[[ServiceProcess], ServiceProcess]:
    """``start_service(ServiceProcess(...))`` starts it and waits until it serves."""
    return start_serving


@pytest.fixture
def auth(redis_server: LocalRedis, database: Pool, database_url: str) -> Iterator[ServiceProcess]:
    """A real auth process: generated keys, guest logins, the ``gameserver``
    service client (secret ``gs-secret-0123456789``)."""
    proc = start_serving(
        ServiceProcess(
            "tessera.auth",
            {
                **COMMON,
                "TESSERA_REDIS_URL": redis_server.url_for("auth"),
                "TESSERA_DATABASE_URL": database_url,
                "TESSERA_AUTH_GENERATE_KEYS": "true",
                "TESSERA_CONNECT_KEY_GENERATE": "true",
                "TESSERA_AUTH_REGISTRATIONS_PER_ADDRESS": "1000",
                "TESSERA_AUTH_SERVICE_CLIENTS": "gameserver=gs-secret-0123456789",
            },
            name="auth",
        )
    )
    yield proc
    proc.terminate()


def scrape(metrics_port: int, name: str, *labels: str) -> float:
    """The sum of a metric's samples (``name`` up to its labels or value) whose
    labels contain every one of ``labels`` (e.g. ``'state="created"'``)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if re.match(re.escape(name) + r"[{ ]", line) and all(label in line for label in labels)
    )
