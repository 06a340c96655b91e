"""The chart's matchmaking settings reach the matchmaker's environment."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from .conftest import CHART_DIR, Render, deployment_env


def matchmaker_env(render: Render, values: dict[str, object]) -> dict[str, str]:
    return deployment_env(render, values, "tessera-matchmaking")


def test_frontend_workers_default_and_override(render: Render) -> None:
    assert matchmaker_env(render, {})["TESSERA_MM_FRONTEND_WORKERS"] == "1"
    env = matchmaker_env(render, {"matchmaking": {"frontendWorkers": 3}})
    assert env["TESSERA_MM_FRONTEND_WORKERS"] == "3"


def test_regions_and_watch_limit(render: Render) -> None:
    env = matchmaker_env(render, {})
    assert "TESSERA_MM_REGIONS" not in env
    assert env["TESSERA_MM_MAX_WATCHES"] == "1000"
    env = matchmaker_env(render, {"matchmaking": {"regions": ["eu", "us"], "maxWatches": 50}})
    assert env["TESSERA_MM_REGIONS"] == "eu,us"
    assert env["TESSERA_MM_MAX_WATCHES"] == "50"


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("frontendWorkers", 0),
        ("frontendWorkers", 65),
        ("frontendWorkers", "2"),
        ("regions", ["EU"]),
        ("regions", "eu,us"),
        ("maxWatches", 0),
    ],
)
def test_matchmaking_schema(key: str, bad: object) -> None:
    schema = yaml.safe_load((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    values["matchmaking"][key] = bad
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, schema)
