"""Auth configuration parsing and the shared sealing-key loader."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tessera.auth.config import AuthConfig, connect_sealing_key, parse_relays, parse_service_clients
from tessera.auth.limits import Backoff
from tessera.common.config import ConfigError, Env

KEY_B64 = base64.b64encode(b"k" * 32).decode()


def env(**values: str) -> Env:
    return Env({f"TESSERA_{k}": v for k, v in values.items()})


def test_defaults_with_generated_keys() -> None:
    config = AuthConfig.from_env(
        env(AUTH_GENERATE_KEYS="true", CONNECT_KEY=KEY_B64, DATABASE_URL="postgresql://db/t")
    )
    assert config.access_ttl_s == 900
    assert config.connect_ttl_s == 30
    assert config.key_dir is None
    assert config.relays == {"default": ("127.0.0.1:7777",)}
    assert config.sealing_key == b"k" * 32
    assert config.argon2.memory_kib == 19_456
    assert config.database_url == "postgresql://db/t"


LOCAL = {"AUTH_GENERATE_KEYS": "true", "CONNECT_KEY": KEY_B64, "DATABASE_URL": "postgresql://d/t"}


def test_failed_login_policy_defaults() -> None:
    config = AuthConfig.from_env(env(**LOCAL))
    assert config.account_backoff == Backoff(5, 30.0, 900.0)
    assert config.address_backoff == Backoff(20, 0.25, 2.0)
    assert config.service_backoff == Backoff(10, 30.0, 900.0)
    assert config.login_fail_window_s == 900


def test_failed_login_policy_from_env() -> None:
    config = AuthConfig.from_env(
        env(
            **LOCAL,
            AUTH_LOGIN_FAILS_PER_ACCOUNT="3",
            AUTH_LOCKOUT_BASE_S="0.5",
            AUTH_LOCKOUT_MAX_S="60",
            AUTH_LOGIN_FAILS_PER_ADDRESS="50",
            AUTH_ADDRESS_DELAY_BASE_S="0",
            AUTH_ADDRESS_DELAY_MAX_S="0",
            AUTH_SERVICE_FAILS_PER_CLIENT="4",
            AUTH_LOGIN_FAIL_WINDOW_S="60",
        )
    )
    assert config.account_backoff == Backoff(3, 0.5, 60.0)
    assert config.address_backoff == Backoff(50, 0.0, 0.0)
    assert config.service_backoff == Backoff(4, 0.5, 60.0)


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"AUTH_LOCKOUT_S": "900"}, "TESSERA_AUTH_LOCKOUT_S"),  # retired: names its successors
        ({"AUTH_LOCKOUT_BASE_S": "60", "AUTH_LOCKOUT_MAX_S": "30"}, "TESSERA_AUTH_LOCKOUT_MAX_S"),
        ({"AUTH_LOCKOUT_MAX_S": "-1"}, "TESSERA_AUTH_LOCKOUT_MAX_S"),
        ({"AUTH_ADDRESS_DELAY_MAX_S": "60"}, "TESSERA_AUTH_ADDRESS_DELAY_MAX_S"),
        ({"AUTH_ADDRESS_DELAY_BASE_S": "nan"}, "TESSERA_AUTH_ADDRESS_DELAY_BASE_S"),
        ({"AUTH_LOGIN_FAILS_PER_ADDRESS": "0"}, "TESSERA_AUTH_LOGIN_FAILS_PER_ADDRESS"),
        ({"AUTH_SERVICE_FAILS_PER_CLIENT": "x"}, "TESSERA_AUTH_SERVICE_FAILS_PER_CLIENT"),
        ({"AUTH_LOGIN_FAIL_WINDOW_S": "600"}, "TESSERA_AUTH_LOGIN_FAIL_WINDOW_S"),
    ],
)
def test_bad_failed_login_policy_is_refused(values: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        AuthConfig.from_env(env(**LOCAL, **values))
    assert info.value.variable == variable


def test_keys_must_be_configured() -> None:
    with pytest.raises(ConfigError) as info:
        AuthConfig.from_env(env(CONNECT_KEY=KEY_B64))
    assert info.value.variable == "TESSERA_AUTH_KEY_DIR"


def test_relays() -> None:
    assert parse_relays("default=127.0.0.1:7777;eu-west=h1:7777,h2:7777") == {
        "default": ("127.0.0.1:7777",),
        "eu-west": ("h1:7777", "h2:7777"),
    }
    for bad in ("eu=h:1", "default=h", "default=h:0", "default=:1", "default=h:1;default=h:2", "x"):
        with pytest.raises(ConfigError) as info:
            parse_relays(bad)
        assert info.value.variable == "TESSERA_AUTH_RELAYS"


def test_service_clients() -> None:
    assert parse_service_clients("matchmaking=0123456789abcdef=x, relay=fedcba9876543210") == {
        "matchmaking": "0123456789abcdef=x",
        "relay": "fedcba9876543210",
    }
    assert parse_service_clients("") == {}
    with pytest.raises(ConfigError) as info:
        parse_service_clients("matchmaking=short")
    assert "short" not in str(info.value)  # secrets are not echoed
    with pytest.raises(ConfigError):
        parse_service_clients("matchmaking")


def test_sealing_key_sources(tmp_path: Path) -> None:
    assert connect_sealing_key(env(CONNECT_KEY=KEY_B64)) == b"k" * 32
    raw = tmp_path / "raw"
    raw.write_bytes(b"r" * 32)
    assert connect_sealing_key(env(CONNECT_KEY_FILE=str(raw))) == b"r" * 32
    text = tmp_path / "text"
    text.write_text(KEY_B64 + "\n")
    assert connect_sealing_key(env(CONNECT_KEY_FILE=str(text))) == b"k" * 32
    with pytest.raises(ConfigError) as info:
        connect_sealing_key(env())
    assert info.value.variable == "TESSERA_CONNECT_KEY"
    with pytest.raises(ConfigError):
        connect_sealing_key(env(CONNECT_KEY=base64.b64encode(b"short").decode()))
    with pytest.raises(ConfigError):
        connect_sealing_key(env(CONNECT_KEY_FILE=str(tmp_path / "missing")))


def test_sealing_key_generated_only_when_allowed(tmp_path: Path) -> None:
    path = tmp_path / "connect.key"
    first = connect_sealing_key(env(CONNECT_KEY_FILE=str(path), CONNECT_KEY_GENERATE="true"))
    assert path.stat().st_mode & 0o777 == 0o600
    again = connect_sealing_key(env(CONNECT_KEY_FILE=str(path), CONNECT_KEY_GENERATE="true"))
    assert first == again and len(first) == 32
    assert connect_sealing_key(env(CONNECT_KEY_GENERATE="true")) != first


def test_cheat_policy_defaults_and_settings() -> None:
    base = {"AUTH_GENERATE_KEYS": "true", "CONNECT_KEY": KEY_B64, "DATABASE_URL": "postgresql://d"}
    default = AuthConfig.from_env(env(**base)).cheat
    assert (default.action, default.threshold, default.ban_s, default.worlds) == (
        "none",
        100.0,
        7 * 86_400,
        (),
    )
    assert default.weights == {"speed_clamps": 1.0, "teleports": 5.0}
    config = AuthConfig.from_env(
        env(
            **base,
            AUTH_CHEAT_ACTION="Ban",
            AUTH_CHEAT_WORLDS="w1, w2",
            AUTH_CHEAT_WEIGHTS="teleports=2",
            AUTH_CHEAT_THRESHOLD="4",
            AUTH_CHEAT_BAN_S="0",
        )
    )
    assert (config.cheat.action, config.cheat.worlds, config.cheat.ban_s) == (
        "ban",
        ("w1", "w2"),
        0,
    )
    assert (config.cheat.weights, config.cheat.threshold) == ({"teleports": 2.0}, 4.0)


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        ({"AUTH_CHEAT_ACTION": "kick"}, "TESSERA_AUTH_CHEAT_WORLDS"),
        ({"AUTH_CHEAT_WORLDS": "Not_A_Label"}, "TESSERA_AUTH_CHEAT_WORLDS"),
        ({"AUTH_CHEAT_ACTION": "shout"}, "TESSERA_AUTH_CHEAT_ACTION"),
        ({"AUTH_CHEAT_WEIGHTS": "aimbot=3"}, "TESSERA_AUTH_CHEAT_WEIGHTS"),
        ({"AUTH_CHEAT_THRESHOLD": "0"}, "TESSERA_AUTH_CHEAT_THRESHOLD"),
        ({"AUTH_CHEAT_BAN_S": "-1"}, "TESSERA_AUTH_CHEAT_BAN_S"),
    ],
)
def test_a_bad_cheat_policy_names_its_variable(settings: dict[str, str], variable: str) -> None:
    base = {"AUTH_GENERATE_KEYS": "true", "CONNECT_KEY": KEY_B64, "DATABASE_URL": "postgresql://d"}
    with pytest.raises(ConfigError) as info:
        AuthConfig.from_env(env(**base, **settings))
    assert info.value.variable == variable
