"""Console settings from TESSERA_* environment variables (docs/CONSOLE.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tessera.common.config import ConfigError, Env, ServiceClient

ADDRESS = r"\S+:\d{1,5}"


@dataclass(frozen=True)
class ConsoleConfig:
    world: str
    database_url: str = field(repr=False)  # may hold a password
    http_port: int
    auth_address: str
    relays: tuple[str, ...]
    interval_s: float
    grid_cells: int
    aura_m: float
    events: int
    drain_deadline_s: float
    # Reads the relays' GetStatus; admin actions use the admin's own token.
    service_client: ServiceClient

    @classmethod
    def from_env(cls, env: Env | None = None) -> ConsoleConfig:
        env = env or Env()
        return cls(
            database_url=env.database_url("DATABASE_URL"),
            world=env.string("WORLD", "default", pattern=r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"),
            http_port=env.integer("CONSOLE_HTTP_PORT", 8080, lo=0, hi=65535),
            auth_address=env.string("AUTH_ADDRESS", "127.0.0.1:50051", pattern=ADDRESS),
            relays=_addresses(env),
            interval_s=env.number("CONSOLE_INTERVAL_S", 1.0, lo=0.1, hi=60.0),
            grid_cells=env.integer("CONSOLE_GRID_CELLS", 48, lo=4, hi=256),
            aura_m=env.number("CONSOLE_AURA_M", 60.0, lo=0.0, hi=10_000.0),
            events=env.integer("CONSOLE_EVENTS", 100, lo=1, hi=10_000),
            drain_deadline_s=env.number("CONSOLE_DRAIN_DEADLINE_S", 0.0, lo=0.0, hi=3600.0),
            service_client=ServiceClient.from_env(env, "console"),
        )


def _addresses(env: Env) -> tuple[str, ...]:
    """TESSERA_CONSOLE_RELAYS: comma-separated gRPC addresses of the relays."""
    raw = env.string("CONSOLE_RELAYS", "")
    out = tuple(a.strip() for a in raw.split(",") if a.strip())
    for address in out:
        if re.fullmatch(ADDRESS, address) is None:
            raise ConfigError("TESSERA_CONSOLE_RELAYS", raw, "comma-separated host:port addresses")
    return out
