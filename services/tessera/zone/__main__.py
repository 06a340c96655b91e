"""Entry point: ``python -m tessera.zone``."""

from __future__ import annotations

import logging
import time

from tessera.common import store as common_store
from tessera.common.config import ServerConfig
from tessera.common.server import GrpcService, main
from tessera.v1 import zone_pb2_grpc
from tessera.zone import jitcache

log = logging.getLogger("tessera.zone")


async def build(config: ServerConfig) -> GrpcService:
    """Wire config, Redis, the servicer and its loops into a GrpcService; the
    compiled kernels are loaded (or compiled) before the zone registers itself."""
    # Imported here: numba reads NUMBA_CACHE_DIR once, after jitcache.prepare().
    from tessera.zone import metrics  # noqa: PLC0415
    from tessera.zone.config import ZoneConfig  # noqa: PLC0415
    from tessera.zone.servicer import ZoneServicer  # noqa: PLC0415
    from tessera.zone.simulation import warm_up  # noqa: PLC0415
    from tessera.zone.store import ZoneStore  # noqa: PLC0415

    cfg = ZoneConfig.from_env()
    began = time.perf_counter()
    warm_up(cfg)
    metrics.KERNELS_READY.set(time.perf_counter() - began)
    log.info("kernels ready in %.3f s", time.perf_counter() - began)
    redis = common_store.connect(config.redis_url)
    store = ZoneStore(redis, world=cfg.world, zone=cfg.zone, id_block=cfg.id_block)
    servicer = ZoneServicer(cfg, store)
    service = GrpcService(
        config,
        options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)],
    )
    service.add(zone_pb2_grpc.add_ZoneServicer_to_server, servicer, "tessera.v1.Zone")
    await servicer.start(lambda: service.grpc_port)
    service.on_shutdown(redis.aclose)
    service.on_shutdown(servicer.stop)
    # ZoneLink streams never end on their own: close them when the stop begins.
    service.on_stopping(servicer.links.close)
    return service


if __name__ == "__main__":
    jitcache.prepare()
    main("zone", build)
