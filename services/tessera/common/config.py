"""Configuration from environment variables, validated at start-up.

Every service reads its settings through :class:`Env`, which names the variable
and the expected form in the error when a value is bad, so a misconfigured pod
fails fast with a message an operator can act on.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar
from urllib.parse import unquote

T = TypeVar("T")

PREFIX = "TESSERA_"


class ConfigError(ValueError):
    """A configuration variable has a value outside its expected form."""

    def __init__(self, variable: str, value: str, expected: str) -> None:
        super().__init__(f"{variable}={value!r} is invalid: expected {expected}")
        self.variable = variable
        self.value = value
        self.expected = expected


class Env:
    """Typed access to environment variables named ``TESSERA_<NAME>``."""

    def __init__(self, environ: Mapping[str, str] | None = None, prefix: str = PREFIX) -> None:
        self._environ = os.environ if environ is None else environ
        self._prefix = prefix

    def _raw(self, name: str) -> tuple[str, str | None]:
        variable = self._prefix + name
        value = self._environ.get(variable)
        return variable, (value.strip() if value is not None and value.strip() != "" else None)

    def _parse(self, name: str, default: T, expected: str, parse: Callable[[str], T]) -> T:
        variable, raw = self._raw(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except (ValueError, TypeError):
            raise ConfigError(variable, raw, expected) from None

    def string(self, name: str, default: str, *, pattern: str | None = None) -> str:
        """A string, optionally matching a regular expression (fully)."""
        variable, raw = self._raw(name)
        if raw is None:
            return default
        if pattern is not None and re.fullmatch(pattern, raw) is None:
            raise ConfigError(variable, raw, f"a string matching {pattern}")
        return raw

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """One of a fixed set of strings (case-insensitive)."""
        expected = "one of " + ", ".join(choices)

        def parse(raw: str) -> str:
            if raw.lower() not in choices:
                raise ValueError(raw)
            return raw.lower()

        return self._parse(name, default, expected, parse)

    def integer(
        self, name: str, default: int, *, lo: int | None = None, hi: int | None = None
    ) -> int:
        """An integer within [lo, hi]."""
        expected = "an integer" + _range_text(lo, hi)

        def parse(raw: str) -> int:
            value = int(raw, 10)
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ValueError(raw)
            return value

        return self._parse(name, default, expected, parse)

    def number(
        self, name: str, default: float, *, lo: float | None = None, hi: float | None = None
    ) -> float:
        """A finite number within [lo, hi]."""
        expected = "a number" + _range_text(lo, hi)

        def parse(raw: str) -> float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ValueError(raw)
            return value

        return self._parse(name, default, expected, parse)

    def flag(self, name: str, default: bool) -> bool:
        """true/false, yes/no, on/off or 1/0."""
        truth = {"1": True, "true": True, "yes": True, "on": True}
        falsity = {"0": False, "false": False, "no": False, "off": False}

        def parse(raw: str) -> bool:
            key = raw.lower()
            if key in truth:
                return truth[key]
            if key in falsity:
                return falsity[key]
            raise ValueError(raw)

        return self._parse(name, default, "true or false", parse)

    def redis_url(self, name: str, default: str) -> str:
        """A redis:// or rediss:// URL, a unix:// socket path, or a Redis Cluster's
        ``redis+cluster://`` address (checked whole: see :func:`cluster_address`)."""
        url = self.string(name, default, pattern=r"(rediss?|unix|redis\+cluster)://\S+")
        if url.startswith(CLUSTER_SCHEME):
            try:
                cluster_address(url)
            except ValueError as e:
                # The value may hold a password: never echo it.
                raise ConfigError(self._prefix + name, "(not shown)", str(e)) from None
        return url

    def database_url(self, name: str, *, required: bool = True) -> str:
        """A postgresql:// (or postgres://) URL; "" when unset and not ``required``."""
        variable, raw = self._raw(name)
        if raw is None and not required:
            return ""
        if raw is None or re.fullmatch(r"postgres(ql)?://\S+", raw) is None:
            expected = "a postgresql://user:password@host:port/database URL (required)"
            # The value may hold a password: never echo it.
            raise ConfigError(variable, "" if raw is None else "(not shown)", expected)
        return raw


CLUSTER_SCHEME = "redis+cluster://"


@dataclass(frozen=True)
class ClusterAddress:
    """A Redis Cluster's startup nodes and the credentials for all of them."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None


def cluster_address(url: str) -> ClusterAddress:
    """Parse ``redis+cluster://[user:password@]host:port[,host:port...][/0]``.

    Several startup nodes let a client start while one of them is down; the
    client discovers the other nodes itself. A cluster has only database 0, and
    options (``?...``) are not accepted. Raises ValueError saying what is wrong.
    """
    if not url.startswith(CLUSTER_SCHEME):
        raise ValueError(f"a URL starting with {CLUSTER_SCHEME}")
    rest = url[len(CLUSTER_SCHEME) :]
    if "?" in rest or "#" in rest:
        raise ValueError(f"{CLUSTER_SCHEME}host:port,... without ?options or #fragment")
    hosts, slash, db = rest.partition("/")
    if slash and db not in ("", "0"):
        raise ValueError("database 0 (a Redis Cluster has no other), i.e. no path or /0")
    userinfo, at, hosts = hosts.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = []
    for node in hosts.split(","):
        host, colon, port = node.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"host:port for every node, comma-separated; got {node!r}")
        nodes.append((host.strip("[]"), int(port)))
    return ClusterAddress(tuple(nodes), username, password)


@dataclass(frozen=True)
class ServiceClient:
    """A component's service credentials for auth's ``ServiceLogin``
    (TESSERA_SERVICE_CLIENT_ID / TESSERA_SERVICE_CLIENT_SECRET; docs/AUTH.md)."""

    client_id: str
    secret: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Env, default_id: str) -> ServiceClient:
        """The credentials; a missing secret is a start-up error naming the variable."""
        client_id = env.string("SERVICE_CLIENT_ID", default_id, pattern=r"[A-Za-z0-9._-]{1,64}")
        secret = env.string("SERVICE_CLIENT_SECRET", "")
        if not secret:
            raise ConfigError(
                PREFIX + "SERVICE_CLIENT_SECRET",
                "",
                f"the secret auth knows for service client {client_id!r} "
                "(TESSERA_AUTH_SERVICE_CLIENTS on auth)",
            )
        return cls(client_id, secret)


def _range_text(lo: object, hi: object) -> str:
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


@dataclass(frozen=True)
class ServerConfig:
    """Settings every gRPC service shares."""

    name: str
    host: str
    grpc_port: int
    metrics_port: int
    redis_url: str
    log_level: str
    shutdown_grace_s: float
    shutdown_hooks_s: float = 10.0
    # gRPC server reflection (open to anyone, like health); off hides the API's shape.
    reflection: bool = True

    @classmethod
    def from_env(cls, name: str, env: Env | None = None, *, grpc_port: int = 50051) -> ServerConfig:
        env = env or Env()
        return cls(
            name=name,
            host=env.string("HOST", "0.0.0.0"),
            grpc_port=env.integer("GRPC_PORT", grpc_port, lo=0, hi=65535),
            metrics_port=env.integer("METRICS_PORT", 9090, lo=0, hi=65535),
            redis_url=env.redis_url("REDIS_URL", "redis://127.0.0.1:6379/0"),
            log_level=env.choice(
                "LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
            ),
            shutdown_grace_s=env.number("SHUTDOWN_GRACE_S", 10.0, lo=0.0, hi=3600.0),
            shutdown_hooks_s=env.number("SHUTDOWN_HOOKS_S", 10.0, lo=0.1, hi=3600.0),
            reflection=env.flag("GRPC_REFLECTION", True),
        )


def load_or_exit(load: Callable[[], T]) -> T:
    """Run a config loader; on a bad value print the reason and exit with status 2."""
    try:
        return load()
    except ConfigError as err:
        fail(f"configuration error: {err}")


def fail(message: str) -> NoReturn:
    """Print a start-up error and exit with status 2."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(2)
