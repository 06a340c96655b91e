"""The chart's relay worker setting reaches the relay's environment."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from .conftest import CHART_DIR, Render, deployment_env


def relay_env(render: Render, values: dict[str, object]) -> dict[str, str]:
    return deployment_env(render, values, "tessera-relay")


def test_workers_default_and_override(render: Render) -> None:
    assert relay_env(render, {})["TESSERA_RELAY_WORKERS"] == "1"
    assert relay_env(render, {"relay": {"workers": 2}})["TESSERA_RELAY_WORKERS"] == "2"


@pytest.mark.parametrize("bad", [0, 65, "2"])
def test_workers_schema(bad: object) -> None:
    schema = yaml.safe_load((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    values["relay"]["workers"] = bad
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, schema)
