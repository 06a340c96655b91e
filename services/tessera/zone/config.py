"""Zone settings from ``TESSERA_*`` environment variables (documented in docs/ZONE.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tessera.common.config import ConfigError, Env
from tessera.wire.geometry import Rect
from tessera.wire.names import MODULE_PATH, NAME_RE
from tessera.zone.combat import Weapons
from tessera.zone.interest import Tiers
from tessera.zone.movement import Limits
from tessera.zone.npc import Behaviour
from tessera.zone.overload import Ladder
from tessera.zone.synthetic import Hotspots

DNS_LABEL = NAME_RE.pattern


def parse_rect(variable: str, raw: str) -> Rect:
    """``min_x,min_z,max_x,max_z`` with min < max, all finite."""
    expected = "min_x,min_z,max_x,max_z with min < max"
    try:
        parts = [float(p) for p in raw.split(",")]
    except ValueError:
        raise ConfigError(variable, raw, expected) from None
    if len(parts) != 4 or not all(abs(p) < 1e7 for p in parts):
        raise ConfigError(variable, raw, expected)
    rect = Rect(*parts)
    if rect.min_x >= rect.max_x or rect.min_z >= rect.max_z:
        raise ConfigError(variable, raw, expected)
    return rect


@dataclass(frozen=True)
class ZoneConfig:
    """Everything a zone process needs besides the common server settings."""

    world: str
    zone: str
    bounds: Rect | None
    world_bounds: Rect
    tick_hz: int
    advertise_address: str
    npcs: int
    heartbeat_s: float
    checkpoint_s: float
    cheat_ttl_s: int
    max_rewind_ms: float
    history_s: float
    snapshot_history: int
    snapshot_every: int
    link_queue: int
    id_block: int
    seed: int
    tiers: Tiers
    limits: Limits
    weapons: Weapons
    behaviour: Behaviour
    hysteresis_m: float = 5.0
    handoff_timeout_s: float = 1.0
    handoff_scan_s: float = 0.25
    drain_timeout_s: float = 30.0
    map_poll_s: float = 1.0
    aura_m: float = 50.0
    ghost_hz: float = 15.0
    ghost_ttl_s: float = 0.5
    # Match id when this is an instance zone (never in the zone map), else "".
    instance: str = ""
    # Overload ladder (tessera.zone.overload): tick CPU budget, 0 = one tick period;
    # the window of ticks each level change is decided over, 0 = one second.
    tick_budget_ms: float = 0.0
    overload_window: int = 0
    # PostgreSQL (docs/ZONE.md, "Persistence"): "" = persistence off. Player-data
    # write-behind interval and spool size, event-log flush interval and spool size.
    database_url: str = field(default="", repr=False)  # may hold a password
    persist_s: float = 5.0
    persist_queue: int = 20_000
    event_flush_s: float = 0.25
    event_queue: int = 200_000
    # A link's snapshots of one tick go out in messages of at most link_chunk
    # snapshots, spread evenly over this fraction of the tick (0: all at once), so a
    # relay never gets one tick's whole fan-out in one burst.
    link_chunk: int = 32
    link_spread: float = 0.5
    # Synthetic players (docs/ZONE.md, "Synthetic players"): whether Join may create
    # them (off: refused), and the hotspots every synthetic player here is steered to.
    synthetic: bool = False
    hotspots: Hotspots = field(default_factory=Hotspots)
    # The game module (docs/GAME.md): a Python module path, "" = tessera.game.default;
    # a system or action failing this many times in a row is disabled.
    game_module: str = ""
    game_disable_after: int = 30
    # Where an instance zone whose module has rules reports its match result
    # (docs/GAME.md, "Rules"); "" elsewhere.
    matchmaking_address: str = ""

    @property
    def ladder(self) -> Ladder:
        """When the overload level moves."""
        budget_s = self.tick_budget_ms / 1000.0 if self.tick_budget_ms else self.dt
        return Ladder(budget_s=budget_s, window=self.overload_window or self.tick_hz)

    @property
    def dt(self) -> float:
        return 1.0 / self.tick_hz

    @property
    def link_spread_s(self) -> float:
        """How long a link's snapshot fan-out of one tick may take."""
        return self.link_spread * self.dt

    @classmethod
    def from_env(cls, env: Env | None = None) -> ZoneConfig:
        env = env or Env()
        world_raw = env.string("WORLD_BOUNDS", "-1000,-1000,1000,1000")
        world_bounds = parse_rect("TESSERA_WORLD_BOUNDS", world_raw)
        bounds_raw = env.string("ZONE_BOUNDS", "")
        bounds = parse_rect("TESSERA_ZONE_BOUNDS", bounds_raw) if bounds_raw else None
        if bounds is not None and not (
            world_bounds.min_x <= bounds.min_x
            and world_bounds.min_z <= bounds.min_z
            and bounds.max_x <= world_bounds.max_x
            and bounds.max_z <= world_bounds.max_z
        ):
            raise ConfigError("TESSERA_ZONE_BOUNDS", bounds_raw, "a rectangle inside the world")
        near = env.number("AOI_NEAR_M", 50.0, lo=1.0, hi=10_000.0)
        mid = env.number("AOI_MID_M", 100.0, lo=near, hi=10_000.0)
        far = env.number("AOI_FAR_M", 200.0, lo=mid, hi=10_000.0)
        return cls(
            world=env.string("WORLD", "default", pattern=DNS_LABEL),
            zone=env.string("ZONE", "zone-0", pattern=DNS_LABEL),
            bounds=bounds,
            world_bounds=world_bounds,
            tick_hz=env.integer("TICK_HZ", 30, lo=5, hi=60),
            advertise_address=env.string("ADVERTISE_ADDRESS", "", pattern=r"[^\s:]+:\d{1,5}"),
            npcs=env.integer("NPCS", 0, lo=0, hi=100_000),
            heartbeat_s=env.number("HEARTBEAT_S", 1.0, lo=0.05, hi=60.0),
            checkpoint_s=env.number("CHECKPOINT_S", 1.0, lo=0.05, hi=60.0),
            cheat_ttl_s=env.integer("CHEAT_TTL_S", 86_400, lo=60, hi=30 * 86_400),
            max_rewind_ms=env.number("MAX_REWIND_MS", 250.0, lo=0.0, hi=1000.0),
            history_s=env.number("HISTORY_S", 1.0, lo=1.0, hi=10.0),
            snapshot_history=env.integer("SNAPSHOT_HISTORY", 32, lo=32, hi=256),
            snapshot_every=env.integer("SNAPSHOT_EVERY", 1, lo=1, hi=6),
            link_queue=env.integer("LINK_QUEUE", 64, lo=2, hi=10_000),
            link_chunk=env.integer("LINK_CHUNK", 32, lo=1, hi=100_000),
            link_spread=env.number("LINK_SPREAD", 0.5, lo=0.0, hi=0.9),
            id_block=env.integer("ID_BLOCK", 1024, lo=1, hi=1_000_000),
            seed=env.integer("SEED", 0, lo=0),
            tiers=Tiers(
                near=near,
                mid=mid,
                far=far,
                cap=env.integer("AOI_CAP", 100, lo=1, hi=1024),
                refresh_every=env.integer("AOI_REFRESH_TICKS", 3, lo=1, hi=60),
            ),
            limits=Limits(
                max_speed=env.number("MAX_SPEED_MPS", 6.0, lo=0.1, hi=100.0),
                accel=env.number("ACCEL_MPS2", 40.0, lo=0.1, hi=1000.0),
            ),
            weapons=Weapons(),
            behaviour=Behaviour(),
            hysteresis_m=env.number("HYSTERESIS_M", 5.0, lo=0.0, hi=1000.0),
            handoff_timeout_s=env.number("HANDOFF_TIMEOUT_S", 1.0, lo=0.05, hi=60.0),
            handoff_scan_s=env.number("HANDOFF_SCAN_S", 0.25, lo=0.005, hi=5.0),
            drain_timeout_s=env.number("DRAIN_TIMEOUT_S", 30.0, lo=0.1, hi=3600.0),
            map_poll_s=env.number("MAP_POLL_S", 1.0, lo=0.01, hi=60.0),
            aura_m=env.number(
                "AURA_M", max(50.0, near, Weapons().ranged_range), lo=near, hi=10_000.0
            ),
            ghost_hz=env.number("GHOST_HZ", 15.0, lo=10.0, hi=60.0),
            ghost_ttl_s=env.number("GHOST_TTL_S", 0.5, lo=0.1, hi=10.0),
            instance=env.string("ZONE_INSTANCE", "", pattern=DNS_LABEL),
            tick_budget_ms=env.number("TICK_BUDGET_MS", 0.0, lo=0.0, hi=1000.0),
            overload_window=env.integer("OVERLOAD_WINDOW_TICKS", 0, lo=0, hi=3600),
            database_url=env.database_url("DATABASE_URL", required=False),
            persist_s=env.number("PERSIST_S", 5.0, lo=0.05, hi=600.0),
            persist_queue=env.integer("PERSIST_QUEUE", 20_000, lo=1, hi=10_000_000),
            event_flush_s=env.number("EVENT_FLUSH_S", 0.25, lo=0.01, hi=60.0),
            event_queue=env.integer("EVENT_QUEUE", 200_000, lo=1, hi=10_000_000),
            synthetic=env.flag("SYNTHETIC", False),
            hotspots=Hotspots(
                count=env.integer("HOTSPOTS", 4, lo=1, hi=1000),
                speed=env.number("HOTSPOT_SPEED_MPS", 2.0, lo=0.0, hi=100.0),
                spread=env.number("HOTSPOT_SPREAD_M", 60.0, lo=0.0, hi=100_000.0),
                seed=env.integer("HOTSPOT_SEED", 0, lo=0),
            ),
            game_module=env.string("GAME_MODULE", "", pattern=MODULE_PATH),
            game_disable_after=env.integer("GAME_DISABLE_AFTER", 30, lo=1, hi=1_000_000),
            matchmaking_address=env.string("MATCHMAKING_ADDRESS", "", pattern=r"\S+:\d{1,5}"),
        )
