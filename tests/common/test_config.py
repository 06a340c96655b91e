"""Environment configuration parsing."""

from __future__ import annotations

import re

import pytest

from tessera.common.config import ConfigError, Env, ServerConfig, cluster_address


def env(**values: str) -> Env:
    return Env({"TESSERA_" + k: v for k, v in values.items()})


def test_defaults_when_unset_or_blank() -> None:
    e = env(GRPC_PORT="  ")
    assert e.integer("GRPC_PORT", 7, lo=0, hi=10) == 7
    assert e.string("MISSING", "x") == "x"


@pytest.mark.parametrize("raw", ["1", "true", "YES", "on"])
def test_bool_truthy(raw: str) -> None:
    assert env(FLAG=raw).flag("FLAG", False) is True


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda e: e.integer("N", 0, lo=1, hi=5),
            "TESSERA_N='9' is invalid: expected an integer from 1 to 5",
        ),
        (lambda e: e.number("N", 0.0, hi=1.0), "expected a number <= 1.0"),
        (lambda e: e.flag("N", False), "expected true or false"),
        (lambda e: e.choice("N", "a", ("a", "b")), "expected one of a, b"),
    ],
)
def test_errors_name_variable_and_form(call, message: str) -> None:  # type: ignore[no-untyped-def]
    e = env(N="9")
    with pytest.raises(ConfigError) as info:
        call(e)
    assert info.value.variable == "TESSERA_N"
    assert message in str(info.value)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf"])
def test_float_rejects_non_finite(raw: str) -> None:
    with pytest.raises(ConfigError):
        env(X=raw).number("X", 1.0)


def test_server_config_from_env() -> None:
    config = ServerConfig.from_env(
        "zone", env(GRPC_PORT="0", REDIS_URL="redis://r:6379/1", LOG_LEVEL="DEBUG")
    )
    assert config.grpc_port == 0
    assert config.redis_url == "redis://r:6379/1"
    assert config.log_level == "debug"


@pytest.mark.parametrize("raw", ["postgresql://u:p@db:5432/tessera", "postgres://db/tessera"])
def test_database_url_accepts_postgres_urls(raw: str) -> None:
    assert env(DATABASE_URL=raw).database_url("DATABASE_URL") == raw


@pytest.mark.parametrize("raw", ["", "  ", "mysql://u:secret@db/x", "db:5432"])
def test_database_url_is_required_and_never_echoed(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        env(DATABASE_URL=raw).database_url("DATABASE_URL")
    assert info.value.variable == "TESSERA_DATABASE_URL"
    assert "a postgresql://" in str(info.value)
    assert "secret" not in str(info.value)


def test_cluster_address_lists_nodes_and_credentials() -> None:
    address = cluster_address("redis+cluster://zone:s%3Acret@r-0:6379,r-1:6380,[::1]:7000/0")
    assert address.nodes == (("r-0", 6379), ("r-1", 6380), ("::1", 7000))
    assert (address.username, address.password) == ("zone", "s:cret")
    bare = cluster_address("redis+cluster://r-0:6379")
    assert (bare.nodes, bare.username, bare.password) == ((("r-0", 6379),), None, None)
    assert cluster_address("redis+cluster://:pw@r:1").password == "pw"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("redis://r:1", "starting with redis+cluster://"),
        ("redis+cluster://r:1/2", "database 0"),
        ("redis+cluster://r:1?ssl=true", "without ?options"),
        ("redis+cluster://r", "host:port for every node"),
        ("redis+cluster://r:1,,r:2", "host:port for every node"),
        ("redis+cluster://r:0", "host:port for every node"),
        ("redis+cluster://r:70000", "host:port for every node"),
        ("redis+cluster://:1", "host:port for every node"),
    ],
)
def test_cluster_address_rejects_bad_forms(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        cluster_address(raw)


def test_redis_url_accepts_cluster_addresses_and_never_echoes_a_bad_one() -> None:
    good = "redis+cluster://u:pw@r-0:6379,r-1:6379"
    assert env(REDIS_URL=good).redis_url("REDIS_URL", "redis://x:1/0") == good
    with pytest.raises(ConfigError) as info:
        env(REDIS_URL="redis+cluster://u:pw@r-0:6379/1").redis_url("REDIS_URL", "")
    assert info.value.variable == "TESSERA_REDIS_URL"
    assert "database 0" in str(info.value)
    assert "pw" not in str(info.value)
    with pytest.raises(ConfigError, match="TESSERA_REDIS_URL"):
        env(REDIS_URL="redis-cluster://r:1").redis_url("REDIS_URL", "")
