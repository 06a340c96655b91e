"""Entry point and wiring: ``python -m tessera.console`` (Redis, PostgreSQL for the
audit log, the auth verifier, the relays, the live feed and the HTTP server beside
gRPC health and metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from tessera.authclient.credentials import ServiceCredentials
from tessera.authclient.verifier import Verifier
from tessera.common import store as common_store
from tessera.common.audit import AuditLog
from tessera.common.config import ServerConfig
from tessera.common.database import DatabaseUnavailable, open_database
from tessera.common.server import GrpcService, main
from tessera.console.clients import Clients
from tessera.console.config import ConsoleConfig
from tessera.console.feed import Aggregator, Feed
from tessera.console.store import ConsoleStore
from tessera.console.web import Console, app

log = logging.getLogger(__name__)


async def build(server_config: ServerConfig) -> GrpcService:
    """The console: its HTTP port bound and its feed running."""
    config = ConsoleConfig.from_env()
    try:
        database = await open_database(config.database_url, max_size=2)
    except DatabaseUnavailable as err:
        log.error("cannot start: PostgreSQL unreachable", extra={"error": str(err)})
        raise SystemExit(1) from None
    audit = AuditLog(database)
    audit.start()
    redis = common_store.connect(server_config.redis_url)
    store = ConsoleStore(redis, config.world, events=config.events)
    credentials = ServiceCredentials(
        config.auth_address, config.service_client.client_id, config.service_client.secret
    )
    clients = Clients(relays=config.relays, credentials=credentials, world=config.world)
    aggregator = Aggregator(
        store, clients.relay_rows, cells=config.grid_cells, aura_m=config.aura_m
    )
    feed = Feed(aggregator.frame, config.interval_s)
    await feed.step()
    verifier = Verifier()
    console = Console(
        feed=feed,
        store=store,
        clients=clients,
        verifier=verifier,
        audit=audit,
        drain_deadline_s=config.drain_deadline_s,
    )
    # Open Server-Sent Events streams end with the feed; waiting longer for idle
    # connections would only hold up the stop.
    runner = web.AppRunner(app(console), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, server_config.host, config.http_port)
    await site.start()
    http_port = int(runner.addresses[0][1])
    tasks = [
        asyncio.create_task(feed.run(), name="console-feed"),
        # Keys and revocations load in the background: the map serves without auth,
        # admin actions are refused until the keys are in.
        asyncio.create_task(
            verifier.start(
                server_config.redis_url, auth_address=config.auth_address, timeout_s=1e9
            ),
            name="console-verifier",
        ),
    ]
    service = GrpcService(server_config)
    service.serving_fields = {"http_port": http_port}

    async def shutdown() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.cleanup()
        await verifier.close()
        await clients.close()
        await redis.aclose()
        await audit.close()
        await database.close()

    service.on_stopping(feed.close)
    service.on_shutdown(shutdown)
    return service


if __name__ == "__main__":
    main("console", build)
