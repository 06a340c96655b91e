"""Zone settings: defaults, standby, and errors that name the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tessera.common.config import ConfigError, Env
from tessera.zone.config import ZoneConfig


def test_defaults_and_standby() -> None:
    cfg = ZoneConfig.from_env(Env({}))
    assert cfg.bounds is None and cfg.tick_hz == 30 and cfg.max_rewind_ms == 250.0
    assert (cfg.tiers.near, cfg.tiers.mid, cfg.tiers.far) == (50.0, 100.0, 200.0)
    assert cfg.snapshot_history >= 32 and cfg.history_s >= 1.0
    assert cfg.instance == ""


def test_link_spread_is_a_fraction_of_the_tick() -> None:
    assert ZoneConfig.from_env(Env({})).link_spread_s == pytest.approx(0.5 / 30)  # the default
    assert ZoneConfig.from_env(Env({"TESSERA_LINK_SPREAD": "0.3"})).link_spread_s == pytest.approx(
        0.3 / 30
    )
    cfg = ZoneConfig.from_env(
        Env({"TESSERA_TICK_HZ": "20", "TESSERA_LINK_SPREAD": "0.2", "TESSERA_LINK_CHUNK": "8"})
    )
    assert cfg.link_spread_s == pytest.approx(0.01) and cfg.link_chunk == 8
    assert ZoneConfig.from_env(Env({"TESSERA_LINK_SPREAD": "0"})).link_spread_s == 0.0


def test_instance_zone() -> None:
    cfg = ZoneConfig.from_env(Env({"TESSERA_ZONE_INSTANCE": "9f86d081884c7d65"}))
    assert cfg.instance == "9f86d081884c7d65"


def test_persistence_is_off_without_a_database_url() -> None:
    off = ZoneConfig.from_env(Env({}))
    assert off.database_url == "" and off.persist_s == 5.0 and off.event_queue == 200_000
    url = "postgresql://tessera:secret@db:5432/tessera"
    on = ZoneConfig.from_env(Env({"TESSERA_DATABASE_URL": url, "TESSERA_PERSIST_S": "2"}))
    assert on.database_url == url and on.persist_s == 2.0
    assert "secret" not in repr(on)  # a logged config never shows the password


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TESSERA_TICK_HZ": "61"}, "TESSERA_TICK_HZ"),
        ({"TESSERA_TICK_HZ": "4"}, "TESSERA_TICK_HZ"),
        ({"TESSERA_ZONE_BOUNDS": "1,2,3"}, "TESSERA_ZONE_BOUNDS"),
        ({"TESSERA_ZONE_BOUNDS": "5,0,1,10"}, "TESSERA_ZONE_BOUNDS"),
        ({"TESSERA_ZONE_BOUNDS": "0,0,5000,10"}, "TESSERA_ZONE_BOUNDS"),
        ({"TESSERA_WORLD_BOUNDS": "a,b,c,d"}, "TESSERA_WORLD_BOUNDS"),
        ({"TESSERA_ZONE": "Bad_Name"}, "TESSERA_ZONE"),
        ({"TESSERA_ZONE_INSTANCE": "Match/1"}, "TESSERA_ZONE_INSTANCE"),
        ({"TESSERA_ZONE_INSTANCE": "x" * 64}, "TESSERA_ZONE_INSTANCE"),
        ({"TESSERA_AOI_MID_M": "10"}, "TESSERA_AOI_MID_M"),
        ({"TESSERA_DATABASE_URL": "mysql://x@h/db"}, "TESSERA_DATABASE_URL"),
        ({"TESSERA_PERSIST_S": "0"}, "TESSERA_PERSIST_S"),
        ({"TESSERA_EVENT_QUEUE": "0"}, "TESSERA_EVENT_QUEUE"),
        ({"TESSERA_LINK_CHUNK": "0"}, "TESSERA_LINK_CHUNK"),
        ({"TESSERA_LINK_SPREAD": "1"}, "TESSERA_LINK_SPREAD"),
        ({"TESSERA_LINK_SPREAD": "-0.1"}, "TESSERA_LINK_SPREAD"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as err:
        ZoneConfig.from_env(Env(env))
    assert err.value.variable == variable


def test_the_process_exits_2_naming_a_bad_variable() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tessera.zone"],
        env={**os.environ, "TESSERA_TICK_HZ": "4"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "TESSERA_TICK_HZ" in proc.stderr
