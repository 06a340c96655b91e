"""Relay settings: defaults, and bad values naming their variable."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from tessera.common.config import ConfigError, Env
from tessera.relay.config import RelayConfig

KEY = base64.b64encode(bytes(range(32))).decode()


def test_defaults_and_overrides() -> None:
    config = RelayConfig.from_env(Env({"TESSERA_CONNECT_KEY": KEY}))
    assert config.connect_key == bytes(range(32))
    assert (config.udp_port, config.batch_ms, config.upstream_timeout_s) == (7777, 0.5, 10.0)
    config = RelayConfig.from_env(
        Env({"TESSERA_CONNECT_KEY": KEY, "TESSERA_UDP_PORT": "0", "TESSERA_WORLD": "w1"})
    )
    assert (config.udp_port, config.world) == (0, "w1")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "TESSERA_CONNECT_KEY"),
        ({"TESSERA_CONNECT_KEY": "c2hvcnQ="}, "TESSERA_CONNECT_KEY"),
        ({"TESSERA_CONNECT_KEY": KEY, "TESSERA_UDP_PORT": "70000"}, "TESSERA_UDP_PORT"),
        ({"TESSERA_CONNECT_KEY": KEY, "TESSERA_WORLD": "Bad World"}, "TESSERA_WORLD"),
        ({"TESSERA_CONNECT_KEY": KEY, "TESSERA_RELAY_BATCH_MS": "-1"}, "TESSERA_RELAY_BATCH_MS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as err:
        RelayConfig.from_env(Env(env))
    assert err.value.variable == variable


def test_process_exits_2_on_bad_config() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tessera.relay"],
        env={"TESSERA_CONNECT_KEY": "nope", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "TESSERA_CONNECT_KEY" in proc.stderr
