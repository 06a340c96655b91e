"""Entry point: ``python -m tessera.zone``."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import grpc

from tessera.authclient.access import AccessInterceptor
from tessera.authclient.credentials import ServiceCredentials
from tessera.authclient.verifier import Trust, Verifier
from tessera.common import store as common_store
from tessera.common.audit import AuditLog
from tessera.common.config import ConfigError, Env, ServerConfig, ServiceClient
from tessera.common.database import DatabaseUnavailable, Pool, open_database
from tessera.common.heap import settle_heap
from tessera.common.server import GrpcService, main
from tessera.game.errors import ModuleError
from tessera.game.module import DEFAULT, Module, load
from tessera.v1 import zone_pb2_grpc
from tessera.zone import jitcache

if TYPE_CHECKING:
    from tessera.zone.config import ZoneConfig
    from tessera.zone.results import Reporter

log = logging.getLogger("tessera.zone")


async def build(config: ServerConfig) -> GrpcService:
    """Wire config, Redis, the servicer and its loops into a GrpcService; the
    compiled kernels are loaded (or compiled) before the zone registers itself."""
    # Imported here: numba reads NUMBA_CACHE_DIR once, after jitcache.prepare().
    from tessera.zone import messages, metrics  # noqa: PLC0415
    from tessera.zone.config import ZoneConfig  # noqa: PLC0415
    from tessera.zone.persistence import Persistence  # noqa: PLC0415
    from tessera.zone.servicer import RULES, ZoneServicer  # noqa: PLC0415
    from tessera.zone.simulation import warm_up  # noqa: PLC0415
    from tessera.zone.store import ZoneStore  # noqa: PLC0415

    cfg = ZoneConfig.from_env()
    trust = Trust.from_env(Env())
    began = time.perf_counter()
    try:  # imports the game module: a zone whose game cannot load never reports ready
        game = load(cfg.game_module)
        messages.game_schema(game)  # what clients get of it must fit their Accepted
    except ModuleError as err:
        log.error("cannot start: %s", err, extra={"game_module": cfg.game_module or DEFAULT})
        raise SystemExit(1) from None
    log.info("game module loaded", extra={"game_module": game.name})
    service_client = _service_client(cfg, trust, game)
    warm_up(cfg)
    messages.warm_up()
    metrics.KERNELS_READY.set(time.perf_counter() - began)
    log.info("kernels ready in %.3f s", time.perf_counter() - began)
    redis = common_store.connect(config.redis_url)
    store = ZoneStore(redis, world=cfg.world, zone=cfg.zone, id_block=cfg.id_block)
    database = await _database(cfg.database_url)
    persistence = audit = None
    if database is not None:
        audit = AuditLog(database)  # SetBounds and Drain, by whom, from where
        audit.start()
        persistence = Persistence(
            database,
            world=cfg.world,
            zone=cfg.zone,
            match=cfg.instance,
            capacity=cfg.persist_queue,
            event_capacity=cfg.event_queue,
            interval_s=cfg.persist_s,
            event_interval_s=cfg.event_flush_s,
            persisted=frozenset(c.name for c in game.components if c.persist),
        )
    reporter = await _reporter(cfg, trust, game, audit, service_client)
    servicer = ZoneServicer(cfg, store, persistence, audit, reporter)
    try:
        verifier = await Verifier.trusting(trust, config.redis_url)
    except ConnectionError as err:
        log.error("cannot start: auth or Redis unreachable", extra={"error": str(err)})
        raise SystemExit(1) from None
    service = GrpcService(
        config,
        options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)],
        interceptors=[AccessInterceptor(verifier, RULES)],
    )
    service.add(zone_pb2_grpc.add_ZoneServicer_to_server, servicer, "tessera.v1.Zone")
    await servicer.start(lambda: service.grpc_port)
    if reporter is not None:
        service.on_shutdown(reporter.close)
    service.on_shutdown(redis.aclose)
    service.on_shutdown(verifier.close)
    if database is not None:
        service.on_shutdown(database.close)
    if audit is not None:  # hooks run last first: the audit flushes before the pool closes

        async def close_audit() -> None:
            await audit.close()

        service.on_shutdown(close_audit)
    service.on_shutdown(servicer.stop)
    # ZoneLink streams never end on their own: close them when the stop begins.
    service.on_stopping(servicer.links.close)
    settle_heap()
    return service


def _service_client(cfg: ZoneConfig, trust: Trust, game: Module) -> ServiceClient | None:
    """The credentials an instance zone with match rules reports its result with;
    None for every other zone. Missing settings stop the zone with their name."""
    if not (cfg.instance and game.rules):
        return None
    if not cfg.matchmaking_address:
        raise ConfigError(
            "TESSERA_MATCHMAKING_ADDRESS", "", "host:port of matchmaking (the match result)"
        )
    if not trust.auth_address:
        raise ConfigError("TESSERA_AUTH_ADDRESS", "", "host:port of auth (the service login)")
    return ServiceClient.from_env(Env(), "zone")


async def _reporter(
    cfg: ZoneConfig,
    trust: Trust,
    game: Module,
    audit: AuditLog | None,
    client: ServiceClient | None,
) -> Reporter | None:
    """The reporter of an instance zone's match result, logged in (bad credentials
    stop the zone before it reports ready)."""
    from tessera.zone.results import Reporter  # noqa: PLC0415  (after jitcache.prepare)

    if client is None or game.rules is None:
        return None
    credentials = ServiceCredentials(trust.auth_address, client.client_id, client.secret)
    try:
        await credentials.login()
    except grpc.aio.AioRpcError as err:
        await credentials.close()
        log.error("cannot start: service login failed", extra={"error": err.code().name})
        raise SystemExit(1) from None
    return Reporter.connect(
        credentials,
        cfg.matchmaking_address,
        match_id=cfg.instance,
        mode=game.rules.mode,
        audit=audit,
    )


async def _database(url: str) -> Pool | None:
    """The zone's pool, migrated; None without TESSERA_DATABASE_URL (persistence off)."""
    if not url:
        log.info("no TESSERA_DATABASE_URL: player data and the event log are off")
        return None
    try:
        return await open_database(url, max_size=4)
    except DatabaseUnavailable as err:
        log.error("cannot start: PostgreSQL unreachable", extra={"error": str(err)})
        raise SystemExit(1) from None


if __name__ == "__main__":
    jitcache.prepare()
    jitcache.exclude_scipy()
    main("zone", build)
