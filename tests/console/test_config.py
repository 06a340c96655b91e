"""Console settings: defaults, and a bad value names its variable."""

from __future__ import annotations

import pytest

from tessera.common.config import ConfigError, Env
from tessera.console.config import ConsoleConfig

DSN = {
    "TESSERA_DATABASE_URL": "postgresql://console:secret@db:5432/tessera",
    "TESSERA_SERVICE_CLIENT_SECRET": "console-secret-0123456789",
}


def test_defaults() -> None:
    c = ConsoleConfig.from_env(Env(DSN))
    assert (c.world, c.http_port, c.relays, c.interval_s, c.grid_cells) == (
        "default",
        8080,
        (),
        1.0,
        48,
    )


def test_relays_are_a_comma_separated_list() -> None:
    env = Env({**DSN, "TESSERA_CONSOLE_RELAYS": "relay-0:50051, relay-1:50051,"})
    assert ConsoleConfig.from_env(env).relays == ("relay-0:50051", "relay-1:50051")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TESSERA_CONSOLE_RELAYS", "relay-0"),
        ("TESSERA_CONSOLE_HTTP_PORT", "70000"),
        ("TESSERA_CONSOLE_INTERVAL_S", "0"),
        ("TESSERA_CONSOLE_GRID_CELLS", "2"),
        ("TESSERA_AUTH_ADDRESS", "auth"),
        ("TESSERA_WORLD", "Earth"),
        ("TESSERA_DATABASE_URL", "mysql://db/tessera"),
        ("TESSERA_SERVICE_CLIENT_SECRET", ""),
        ("TESSERA_SERVICE_CLIENT_ID", "a b"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        ConsoleConfig.from_env(Env({**DSN, name: value}))
    assert err.value.variable == name


def test_the_database_is_required_and_its_url_never_shown() -> None:
    with pytest.raises(ConfigError) as err:
        ConsoleConfig.from_env(Env({}))
    assert err.value.variable == "TESSERA_DATABASE_URL"
    shown = repr(ConsoleConfig.from_env(Env(DSN)))
    assert "secret" not in shown and "console-secret" not in shown
