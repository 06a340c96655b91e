"""Entry point: ``python -m tessera.zone``."""

from __future__ import annotations

from tessera.common import store as common_store
from tessera.common.config import ServerConfig
from tessera.common.server import GrpcService, main
from tessera.v1 import zone_pb2_grpc
from tessera.zone.config import ZoneConfig
from tessera.zone.servicer import ZoneServicer
from tessera.zone.store import ZoneStore


async def build(config: ServerConfig) -> GrpcService:
    """Wire config, Redis, the servicer and its loops into a GrpcService."""
    cfg = ZoneConfig.from_env()
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
    main("zone", build)
