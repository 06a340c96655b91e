"""Entry point: ``python -m tessera.zone``."""

from __future__ import annotations

import logging
import time

from tessera.authclient.access import AccessInterceptor
from tessera.authclient.verifier import Trust, Verifier
from tessera.common import store as common_store
from tessera.common.audit import AuditLog
from tessera.common.config import Env, ServerConfig
from tessera.common.database import DatabaseUnavailable, Pool, open_database
from tessera.common.server import GrpcService, main
from tessera.game.errors import ModuleError
from tessera.game.module import DEFAULT, load
from tessera.v1 import zone_pb2_grpc
from tessera.zone import jitcache

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
    warm_up(cfg)
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
    servicer = ZoneServicer(cfg, store, persistence, audit)
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
    return service


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
    main("zone", build)
