"""Matchmaker settings from the environment (``TESSERA_MM_*``, ``TESSERA_AUTH_ADDRESS``,
``TESSERA_DATABASE_URL``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tessera.common.config import ConfigError, Env
from tessera.matchmaking.matching import resolve
from tessera.matchmaking.modes import DEFAULT_MODES, Mode, parse_modes
from tessera.matchmaking.ticket import REGION_RE


@dataclass(frozen=True)
class Settings:
    """Matchmaker settings (``TESSERA_MM_*``, ``TESSERA_AUTH_ADDRESS``)."""

    modes: Mapping[str, Mode]
    regions: frozenset[str]  # regions served (TESSERA_MM_REGIONS); empty = any
    frontend: bool
    frontend_workers: int
    matching: bool
    auth_address: str
    client_id: str
    client_secret: str
    connect_tokens: bool
    ticket_ttl_s: float
    retention_s: float
    tick_interval_s: float
    pool_limit: int
    max_watches: int
    rotate_ms: float
    database_url: str

    @classmethod
    def from_env(cls, env: Env | None = None) -> Settings:
        env = env or Env()
        text = env.string("MM_MODES", "")
        try:
            modes = parse_modes(text) if text else DEFAULT_MODES
            for mode in modes:
                resolve(mode.match_function)
        except ValueError as err:
            raise ConfigError("TESSERA_MM_MODES", text[:80], f"valid modes ({err})") from None
        regions_text = env.string("MM_REGIONS", "")
        regions = frozenset(r.strip() for r in regions_text.split(",") if r.strip())
        if any(REGION_RE.fullmatch(r) is None for r in regions):
            raise ConfigError(
                "TESSERA_MM_REGIONS", regions_text[:80], "comma-separated DNS labels, e.g. eu,us"
            )
        frontend = env.flag("MM_FRONTEND", True)
        workers = env.integer("MM_FRONTEND_WORKERS", 1, lo=1, hi=64)
        if workers > 1 and not frontend:
            raise ConfigError(
                "TESSERA_MM_FRONTEND_WORKERS", str(workers), "1 when TESSERA_MM_FRONTEND=false"
            )
        connect_tokens = env.flag("MM_CONNECT_TOKENS", True)
        auth_address = env.string("AUTH_ADDRESS", "", pattern=r"\S+:\d+")
        secret = env.string("MM_CLIENT_SECRET", "")
        if (frontend or connect_tokens) and not auth_address:
            raise ConfigError(
                "TESSERA_AUTH_ADDRESS",
                "",
                "host:port of the auth service (needed to verify "
                "callers and to issue connect tokens)",
            )
        if connect_tokens and not secret:
            raise ConfigError(
                "TESSERA_MM_CLIENT_SECRET",
                "",
                "the secret auth knows for this client id (or TESSERA_MM_CONNECT_TOKENS=false)",
            )
        return cls(
            modes={m.name: m for m in modes},
            regions=regions,
            frontend=frontend,
            frontend_workers=workers,
            matching=env.flag("MM_MATCHING", True),
            auth_address=auth_address,
            client_id=env.string("MM_CLIENT_ID", "matchmaking"),
            client_secret=secret,
            connect_tokens=connect_tokens,
            ticket_ttl_s=env.number("MM_TICKET_TTL_S", 30.0, lo=1.0, hi=3600.0),
            retention_s=env.number("MM_RETENTION_S", 600.0, lo=1.0, hi=7 * 86_400.0),
            tick_interval_s=env.number("MM_TICK_INTERVAL_S", 0.02, lo=0.001, hi=10.0),
            pool_limit=env.integer("MM_POOL_LIMIT", 20_000, lo=10, hi=10_000_000),
            max_watches=env.integer("MM_MAX_WATCHES", 1000, lo=1, hi=1_000_000),
            rotate_ms=env.number("MM_SHARE_ROTATE_MS", 200.0, lo=0.0, hi=600_000.0),
            database_url=env.database_url("DATABASE_URL"),
        )
