"""Entry point and wiring: ``python -m tessera.matchmaking`` (on uvloop: less CPU per gRPC
call): settings, store, auth, servicer and matching loop.

A process serves the Matchmaker API (``TESSERA_MM_FRONTEND``, needs auth to
verify callers) and/or runs the matching loop (``TESSERA_MM_MATCHING``); every
replica may do both, and any number of replicas may share one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from typing import Any

import grpc
import uvloop

from tessera.authclient.access import AccessInterceptor, current_claims
from tessera.authclient.issuer import AuthIssuer
from tessera.authclient.verifier import Verifier
from tessera.common import store as common_store
from tessera.common.config import Env, ServerConfig
from tessera.common.database import DatabaseUnavailable, open_database
from tessera.common.database_outage import DatabaseOutageInterceptor
from tessera.common.process import free_port
from tessera.common.server import GrpcService, main
from tessera.common.workers import Workers
from tessera.matchmaking.config import Settings
from tessera.matchmaking.director import Director
from tessera.matchmaking.records import RatingRecords
from tessera.matchmaking.servicer import RULES, MatchmakerServicer, Watchers
from tessera.matchmaking.store import Store
from tessera.matchmaking.workers import frontend_workers
from tessera.v1 import matchmaking_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "tessera.v1.Matchmaker"


async def build(config: ServerConfig) -> GrpcService:
    """The matchmaking service for ``python -m tessera.matchmaking``."""
    settings = Settings.from_env(Env())
    try:
        database = await open_database(settings.database_url)
    except DatabaseUnavailable as err:
        log.error("cannot start: PostgreSQL unreachable", extra={"error": str(err)})
        raise SystemExit(1) from None
    redis = common_store.connect(config.redis_url, max_connections=256)
    store = Store(
        redis,
        RatingRecords(database),
        ticket_ttl_s=settings.ticket_ttl_s,
        retention_s=settings.retention_s,
    )
    interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = [DatabaseOutageInterceptor()]
    verifier: Verifier | None = None
    if settings.frontend:
        verifier = await Verifier.connect(settings.auth_address, config.redis_url)
        interceptors.append(AccessInterceptor(verifier, RULES))
    workers: Workers | None = None
    # Front-end workers bind the same port (SO_REUSEPORT; grpc's default on Linux,
    # set here so a worker never depends on it); the kernel spreads connections.
    options = [("grpc.so_reuseport", 1)]
    if settings.frontend_workers > 1:
        if config.grpc_port == 0:
            config = dataclasses.replace(config, grpc_port=free_port())
        workers = frontend_workers(settings.frontend_workers, config.grpc_port, config.metrics_port)
    service = GrpcService(config, interceptors=interceptors, options=options)
    tasks: list[asyncio.Task[None]] = []
    if settings.frontend:
        watchers = Watchers(limit=settings.max_watches)
        servicer = MatchmakerServicer(
            store, settings.modes, current_claims, watchers, regions=settings.regions
        )
        service.add(pb_grpc.add_MatchmakerServicer_to_server, servicer, SERVICE_NAME)
        tasks.append(asyncio.create_task(watchers.follow(store), name="mm-watchers"))
    issuer: AuthIssuer | None = None
    stop = asyncio.Event()
    if settings.matching:
        if settings.connect_tokens:
            issuer = AuthIssuer(settings.auth_address, settings.client_id, settings.client_secret)
            await issuer.login()
        director = Director(
            store,
            settings.modes,
            issuer=issuer,
            interval_s=settings.tick_interval_s,
            pool_limit=settings.pool_limit,
            rotate_ms=settings.rotate_ms,
        )
        tasks.append(asyncio.create_task(director.run(stop), name="mm-director"))
    if workers is not None:
        await workers.start()
        tasks.append(asyncio.create_task(workers.watch(), name="mm-frontend-workers"))
        service.on_stopping(workers.begin_stop)
        service.serving_fields["frontend_worker_pids"] = workers.pids
    log.info(
        "matchmaker configured",
        extra={
            "modes": sorted(settings.modes),
            "frontend": settings.frontend,
            "frontend_workers": settings.frontend_workers,
            "matching": settings.matching,
            "connect_tokens": settings.connect_tokens,
            "pid": os.getpid(),
        },
    )

    async def shutdown() -> None:
        stop.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if workers is not None:
            await workers.stop()
        if issuer is not None:
            await issuer.close()
        if verifier is not None:
            await verifier.close()
        await redis.aclose()
        await database.close()

    service.on_shutdown(shutdown)
    return service


if __name__ == "__main__":
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    main("matchmaking", build)
