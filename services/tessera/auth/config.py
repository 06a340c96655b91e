"""Auth settings from ``TESSERA_*`` environment variables (see docs/AUTH.md).

:func:`connect_sealing_key` is shared with the relay: both sides must load the
same 32-byte key that seals connect tokens' channel keys.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from tessera.auth.cheating import ACTIONS, CheatPolicy, parse_weights
from tessera.auth.limits import Backoff
from tessera.common.config import PREFIX, ConfigError, Env
from tessera.wire.names import NAME_RE

RELAYS_FORM = 'region=host:port[,host:port...][;region=...], e.g. "default=127.0.0.1:7777"'
CLIENTS_FORM = 'client_id=secret[,client_id=secret...], e.g. "matchmaking=s3cret"'


def _split_pairs(variable: str, raw: str, separator: str, expected: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in raw.split(separator):
        name, eq, value = item.strip().partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name or not value or name in out:
            raise ConfigError(variable, raw, expected)
        out[name] = value
    return out


def parse_relays(raw: str, variable: str = PREFIX + "AUTH_RELAYS") -> dict[str, tuple[str, ...]]:
    """``default=h:1;eu=h1:1,h2:1`` -> {"default": ("h:1",), "eu": ("h1:1", "h2:1")}."""
    regions = _split_pairs(variable, raw, ";", RELAYS_FORM)
    out: dict[str, tuple[str, ...]] = {}
    for region, addresses in regions.items():
        parsed = tuple(a.strip() for a in addresses.split(","))
        for address in parsed:
            host, colon, port = address.rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(variable, raw, RELAYS_FORM)
        if not 1 <= len(parsed) <= 8:
            raise ConfigError(variable, raw, RELAYS_FORM + " (1-8 addresses per region)")
        out[region] = parsed
    if "default" not in out:
        raise ConfigError(variable, raw, RELAYS_FORM + ' with a "default" region')
    return out


def parse_service_clients(
    raw: str, variable: str = PREFIX + "AUTH_SERVICE_CLIENTS"
) -> dict[str, str]:
    """``matchmaking=s1,relay=s2`` -> {"matchmaking": "s1", "relay": "s2"}."""
    if not raw:
        return {}
    clients = _split_pairs(variable, raw, ",", CLIENTS_FORM)
    for secret in clients.values():
        if len(secret) < 16:
            raise ConfigError(variable, "<hidden>", CLIENTS_FORM + " with secrets of >= 16 chars")
    return clients


def connect_sealing_key(env: Env | None = None) -> bytes:
    """The 32-byte connect-token sealing key shared by auth and the relays.

    ``TESSERA_CONNECT_KEY`` (base64) or ``TESSERA_CONNECT_KEY_FILE`` (a file
    holding the base64 text or the raw 32 bytes). Only when
    ``TESSERA_CONNECT_KEY_GENERATE=true`` (local runs) is a missing key made up:
    written to ``TESSERA_CONNECT_KEY_FILE`` when that is set (so a relay on the
    same machine can read it), otherwise kept in memory (single process only).
    """
    env = env or Env()
    inline = env.string("CONNECT_KEY", "")
    path = env.string("CONNECT_KEY_FILE", "")
    generate = env.flag("CONNECT_KEY_GENERATE", False)
    if inline:
        return _decode_key(PREFIX + "CONNECT_KEY", inline.encode())
    if path:
        file = Path(path)
        if not file.exists() and generate:
            _write_new_key(file)
        try:
            data = file.read_bytes()
        except OSError as err:
            raise ConfigError(
                PREFIX + "CONNECT_KEY_FILE", path, f"a readable file ({err})"
            ) from None
        return data if len(data) == 32 else _decode_key(PREFIX + "CONNECT_KEY_FILE", data)
    if generate:
        return os.urandom(32)
    raise ConfigError(
        PREFIX + "CONNECT_KEY",
        "",
        "a base64 32-byte key (or TESSERA_CONNECT_KEY_FILE, or TESSERA_CONNECT_KEY_GENERATE=true "
        "for local runs)",
    )


def _decode_key(variable: str, text: bytes) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(variable, "<hidden>", "base64 of exactly 32 bytes")
    return key


def _write_new_key(file: Path) -> None:
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it first
    with os.fdopen(fd, "wb") as out:
        out.write(base64.b64encode(os.urandom(32)) + b"\n")


@dataclass(frozen=True)
class Argon2Params:
    """argon2id cost: time (iterations), memory (KiB) and lanes."""

    time_cost: int
    memory_kib: int
    parallelism: int


def _ordered(policy: Backoff, base: str, cap: str) -> Backoff:
    """``policy``, once its cap (variable ``cap``) is known not to be below its base."""
    if policy.cap_s < policy.base_s:
        raise ConfigError(PREFIX + cap, f"{policy.cap_s:g}", f"at least {PREFIX}{base}")
    return policy


@dataclass(frozen=True)
class AuthConfig:
    """Everything auth needs besides the common server settings."""

    issuer: str
    audience: str
    access_ttl_s: int
    refresh_ttl_s: int
    reuse_window_s: int
    connect_ttl_s: int
    connect_timeout_s: int
    leeway_s: int
    key_dir: Path | None
    key_overlap_s: int
    key_reload_s: float
    keys_max_age_s: int
    argon2: Argon2Params
    password_min_length: int
    account_backoff: Backoff
    address_backoff: Backoff
    service_backoff: Backoff
    login_fail_window_s: int
    registrations_per_address: int
    registration_window_s: int
    relays: dict[str, tuple[str, ...]]
    service_clients: dict[str, str]
    admin_accounts: frozenset[str]
    sealing_key: bytes
    database_url: str
    cheat: CheatPolicy
    cheat_poll_s: float

    @classmethod
    def from_env(cls, env: Env | None = None) -> AuthConfig:
        env = env or Env()
        access_ttl = env.integer("AUTH_ACCESS_TTL_S", 900, lo=10, hi=86_400)
        connect_ttl = env.integer("AUTH_CONNECT_TTL_S", 30, lo=5, hi=3600)
        key_dir = env.string("AUTH_KEY_DIR", "")
        if not key_dir and not env.flag("AUTH_GENERATE_KEYS", False):
            raise ConfigError(
                PREFIX + "AUTH_KEY_DIR",
                "",
                "a directory of <activation>.pem Ed25519 keys "
                "(or TESSERA_AUTH_GENERATE_KEYS=true for local runs)",
            )
        admins = env.string("AUTH_ADMIN_ACCOUNTS", "")
        if env.string("AUTH_LOCKOUT_S", ""):
            raise ConfigError(
                PREFIX + "AUTH_LOCKOUT_S",
                env.string("AUTH_LOCKOUT_S", ""),
                "nothing: replaced by TESSERA_AUTH_LOCKOUT_BASE_S and TESSERA_AUTH_LOCKOUT_MAX_S",
            )
        lockout = _ordered(
            Backoff(
                env.integer("AUTH_LOGIN_FAILS_PER_ACCOUNT", 5, lo=1),
                env.number("AUTH_LOCKOUT_BASE_S", 30.0, lo=0.0, hi=86_400),
                env.number("AUTH_LOCKOUT_MAX_S", 900.0, lo=0.0, hi=86_400),
            ),
            "AUTH_LOCKOUT_BASE_S",
            "AUTH_LOCKOUT_MAX_S",
        )
        window = env.integer("AUTH_LOGIN_FAIL_WINDOW_S", 900, lo=1)
        if window < lockout.cap_s:
            # The lock is computed from the failure count, which must outlive it.
            raise ConfigError(
                PREFIX + "AUTH_LOGIN_FAIL_WINDOW_S",
                str(window),
                f"at least TESSERA_AUTH_LOCKOUT_MAX_S ({lockout.cap_s:g})",
            )
        return cls(
            issuer=env.string("AUTH_ISSUER", "tessera"),
            audience=env.string("AUTH_AUDIENCE", "tessera"),
            access_ttl_s=access_ttl,
            refresh_ttl_s=env.integer("AUTH_REFRESH_TTL_S", 30 * 86_400, lo=60, hi=365 * 86_400),
            reuse_window_s=env.integer("AUTH_REFRESH_REUSE_WINDOW_S", 7 * 86_400, lo=60),
            connect_ttl_s=connect_ttl,
            connect_timeout_s=env.integer("AUTH_CONNECT_TIMEOUT_S", 10, lo=1, hi=3600),
            leeway_s=env.integer("AUTH_LEEWAY_S", 5, lo=0, hi=300),
            key_dir=Path(key_dir) if key_dir else None,
            key_overlap_s=env.integer(
                "AUTH_KEY_OVERLAP_S", access_ttl + connect_ttl + 60, lo=0, hi=30 * 86_400
            ),
            key_reload_s=env.number("AUTH_KEY_RELOAD_S", 30.0, lo=0.1, hi=86_400),
            keys_max_age_s=env.integer("AUTH_KEYS_MAX_AGE_S", 60, lo=1, hi=3600),
            argon2=Argon2Params(
                time_cost=env.integer("AUTH_ARGON2_TIME_COST", 2, lo=1, hi=100),
                memory_kib=env.integer("AUTH_ARGON2_MEMORY_KIB", 19_456, lo=8, hi=4_194_304),
                parallelism=env.integer("AUTH_ARGON2_PARALLELISM", 1, lo=1, hi=64),
            ),
            password_min_length=env.integer("AUTH_PASSWORD_MIN_LENGTH", 10, lo=8, hi=128),
            account_backoff=lockout,
            address_backoff=_ordered(
                Backoff(
                    env.integer("AUTH_LOGIN_FAILS_PER_ADDRESS", 20, lo=1),
                    env.number("AUTH_ADDRESS_DELAY_BASE_S", 0.25, lo=0.0, hi=10.0),
                    env.number("AUTH_ADDRESS_DELAY_MAX_S", 2.0, lo=0.0, hi=10.0),
                ),
                "AUTH_ADDRESS_DELAY_BASE_S",
                "AUTH_ADDRESS_DELAY_MAX_S",
            ),
            service_backoff=Backoff(
                env.integer("AUTH_SERVICE_FAILS_PER_CLIENT", 10, lo=1),
                lockout.base_s,
                lockout.cap_s,
            ),
            login_fail_window_s=window,
            registrations_per_address=env.integer("AUTH_REGISTRATIONS_PER_ADDRESS", 10, lo=1),
            registration_window_s=env.integer("AUTH_REGISTRATION_WINDOW_S", 3600, lo=1),
            relays=parse_relays(env.string("AUTH_RELAYS", "default=127.0.0.1:7777")),
            service_clients=parse_service_clients(env.string("AUTH_SERVICE_CLIENTS", "")),
            admin_accounts=frozenset(a.strip() for a in admins.split(",") if a.strip()),
            sealing_key=connect_sealing_key(env),
            database_url=env.database_url("DATABASE_URL"),
            cheat=cheat_policy(env),
            cheat_poll_s=env.number("AUTH_CHEAT_POLL_S", 5.0, lo=0.1, hi=3600.0),
        )


def cheat_policy(env: Env) -> CheatPolicy:
    """The cheat policy of ``TESSERA_AUTH_CHEAT_*`` (docs/ZONE.md#anti-cheat)."""
    raw = env.string("AUTH_CHEAT_WEIGHTS", "speed_clamps=1,teleports=5")
    try:
        weights = parse_weights(raw)
    except ValueError as err:
        raise ConfigError(PREFIX + "AUTH_CHEAT_WEIGHTS", raw, str(err)) from None
    action = env.choice("AUTH_CHEAT_ACTION", "none", ACTIONS)
    worlds_raw = env.string("AUTH_CHEAT_WORLDS", "")
    worlds = tuple(w.strip() for w in worlds_raw.split(",") if w.strip())
    if any(NAME_RE.fullmatch(w) is None for w in worlds) or (action != "none" and not worlds):
        raise ConfigError(
            PREFIX + "AUTH_CHEAT_WORLDS",
            worlds_raw,
            "comma-separated world names (DNS labels); required when the action is not none",
        )
    return CheatPolicy(
        weights=weights,
        threshold=env.number("AUTH_CHEAT_THRESHOLD", 100.0, lo=0.001, hi=1e12),
        action=action,
        ban_s=env.integer("AUTH_CHEAT_BAN_S", 7 * 86_400, lo=0, hi=100 * 365 * 86_400),
        worlds=worlds,
    )
