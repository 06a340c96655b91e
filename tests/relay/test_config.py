"""Relay settings: defaults, and bad values naming their variable."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from tessera.common.config import ConfigError, Env, ServiceClient
from tessera.relay.config import GC_THRESHOLD, RelayConfig, uvloop_enabled

KEY = base64.b64encode(bytes(range(32))).decode()
SECRET = "relay-secret-0123456789"
BASE = {"TESSERA_CONNECT_KEY": KEY, "TESSERA_SERVICE_CLIENT_SECRET": SECRET}


def test_defaults_and_overrides() -> None:
    config = RelayConfig.from_env(Env(BASE))
    assert config.connect_key == bytes(range(32))
    assert (config.udp_port, config.batch_ms, config.upstream_timeout_s) == (7777, 0.5, 10.0)
    assert config.service_client == ServiceClient("relay", SECRET)
    config = RelayConfig.from_env(Env({**BASE, "TESSERA_UDP_PORT": "0", "TESSERA_WORLD": "w1"}))
    assert (config.udp_port, config.world) == (0, "w1")
    assert config.gc_threshold == GC_THRESHOLD
    config = RelayConfig.from_env(Env({**BASE, "TESSERA_RELAY_GC_THRESHOLD": "0"}))
    assert config.gc_threshold == 0


def test_workers_share_the_port_only_when_there_are_several() -> None:
    config = RelayConfig.from_env(Env(BASE))
    assert (config.workers, config.worker, config.reuse_port) == (1, 0, False)
    config = RelayConfig.from_env(Env({**BASE, "TESSERA_RELAY_WORKERS": "4"}))
    assert (config.workers, config.worker, config.reuse_port) == (4, 0, True)
    config = RelayConfig.from_env(Env({**BASE, "TESSERA_RELAY_WORKER": "3"}))
    assert (config.workers, config.worker, config.reuse_port) == (1, 3, True)


def test_uvloop_switch() -> None:
    assert uvloop_enabled(Env({})) is False
    assert uvloop_enabled(Env({"TESSERA_RELAY_UVLOOP": "on"})) is True
    assert uvloop_enabled(Env({"TESSERA_RELAY_UVLOOP": "false"})) is False
    with pytest.raises(ConfigError) as err:
        uvloop_enabled(Env({"TESSERA_RELAY_UVLOOP": "fast"}))
    assert err.value.variable == "TESSERA_RELAY_UVLOOP"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "TESSERA_CONNECT_KEY"),
        ({"TESSERA_CONNECT_KEY": "c2hvcnQ="}, "TESSERA_CONNECT_KEY"),
        ({**BASE, "TESSERA_UDP_PORT": "70000"}, "TESSERA_UDP_PORT"),
        ({**BASE, "TESSERA_WORLD": "Bad World"}, "TESSERA_WORLD"),
        ({**BASE, "TESSERA_RELAY_BATCH_MS": "-1"}, "TESSERA_RELAY_BATCH_MS"),
        ({**BASE, "TESSERA_RELAY_GC_THRESHOLD": "-5"}, "TESSERA_RELAY_GC_THRESHOLD"),
        ({**BASE, "TESSERA_RELAY_GC_THRESHOLD": "many"}, "TESSERA_RELAY_GC_THRESHOLD"),
        ({**BASE, "TESSERA_RELAY_WORKERS": "0"}, "TESSERA_RELAY_WORKERS"),
        ({**BASE, "TESSERA_RELAY_WORKERS": "65"}, "TESSERA_RELAY_WORKERS"),
        ({**BASE, "TESSERA_RELAY_WORKERS": "two"}, "TESSERA_RELAY_WORKERS"),
        ({**BASE, "TESSERA_RELAY_WORKER": "-1"}, "TESSERA_RELAY_WORKER"),
        # A worker never starts workers of its own.
        (
            {**BASE, "TESSERA_RELAY_WORKER": "1", "TESSERA_RELAY_WORKERS": "2"},
            "TESSERA_RELAY_WORKERS",
        ),
        # The relay calls zones as a service: without its secret it does not start.
        ({"TESSERA_CONNECT_KEY": KEY}, "TESSERA_SERVICE_CLIENT_SECRET"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as err:
        RelayConfig.from_env(Env(env))
    assert err.value.variable == variable


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TESSERA_CONNECT_KEY", "nope"),
        # Read before the event loop exists, and still refused with its name.
        ("TESSERA_RELAY_UVLOOP", "maybe"),
    ],
)
def test_process_exits_2_naming_a_bad_variable(variable: str, value: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tessera.relay"],
        env={variable: value, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert variable in proc.stderr
