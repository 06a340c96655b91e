"""The chart's matchmaking settings reach the matchmaker's environment."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from .conftest import CHART_DIR, Render


def frontend_workers(render: Render, values: dict[str, object]) -> str:
    deployment = next(
        o
        for o in render(values)
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "tessera-matchmaking"
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    return str(env["TESSERA_MM_FRONTEND_WORKERS"]["value"])


def test_frontend_workers_default_and_override(render: Render) -> None:
    assert frontend_workers(render, {}) == "1"
    assert frontend_workers(render, {"matchmaking": {"frontendWorkers": 3}}) == "3"


@pytest.mark.parametrize("bad", [0, 65, "2"])
def test_frontend_workers_schema(bad: object) -> None:
    schema = yaml.safe_load((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    values["matchmaking"]["frontendWorkers"] = bad
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, schema)
