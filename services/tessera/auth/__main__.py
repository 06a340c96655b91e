"""Entry point and wiring: ``python -m tessera.auth``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from tessera.auth.config import AuthConfig
from tessera.auth.keys import KeyRingError
from tessera.auth.records import AccountRecords, BanRecords
from tessera.auth.servicer import RULES, SERVICE, AuthServicer, KeySource
from tessera.auth.store import AuthStore
from tessera.authclient.access import AccessInterceptor
from tessera.authclient.verifier import Verifier
from tessera.common import store as common_store
from tessera.common.audit import AuditLog
from tessera.common.config import PREFIX, ConfigError, ServerConfig, load_or_exit
from tessera.common.database import DatabaseUnavailable, open_database
from tessera.common.database_outage import DatabaseOutageInterceptor
from tessera.common.server import GrpcService, main
from tessera.v1 import auth_pb2_grpc

log = logging.getLogger(__name__)


async def _keep_keys_fresh(keys: KeySource, verifier: Verifier, period_s: float) -> None:
    """Re-read the key directory and re-derive the accepted keys (retirements lapse)."""
    while True:
        await asyncio.sleep(period_s)
        keys.reload()
        published = keys.ring.public_keys(time.time())
        if published.keys() != verifier.public_keys.keys():
            verifier.set_keys(published)


async def _police_cheats(servicer: AuthServicer, worlds: tuple[str, ...], period_s: float) -> None:
    """Apply the cheat policy to each watched world every ``period_s``."""
    while True:
        await asyncio.sleep(period_s)
        for world in worlds:
            try:
                await servicer.enforce_cheat_policy(world)
            except Exception:
                log.exception("cheat policy pass failed", extra={"world": world})


async def build(server_config: ServerConfig) -> GrpcService:
    """Assemble the auth service from the environment."""
    return await assemble(server_config, load_or_exit(AuthConfig.from_env))


async def assemble(server_config: ServerConfig, config: AuthConfig) -> GrpcService:
    """The auth service, ready to start: servicer, interceptor, key refresh, hooks."""
    try:
        keys = KeySource(config)
    except KeyRingError as err:
        raise ConfigError(PREFIX + "AUTH_KEY_DIR", str(config.key_dir), str(err)) from None
    redis = common_store.connect(server_config.redis_url)
    verifier = Verifier(
        keys.ring.public_keys(time.time()),
        issuer=config.issuer,
        audience=config.audience,
        leeway_s=config.leeway_s,
    )
    try:
        await verifier.start(server_config.redis_url)
    except ConnectionError as err:
        await redis.aclose()
        log.error("cannot start: Redis unreachable", extra={"error": str(err)})
        raise SystemExit(1) from None
    try:
        database = await open_database(config.database_url)
    except DatabaseUnavailable as err:
        await verifier.close()
        await redis.aclose()
        log.error("cannot start: PostgreSQL unreachable", extra={"error": str(err)})
        raise SystemExit(1) from None
    audit = AuditLog(database)
    audit.start()
    interceptor = AccessInterceptor(verifier, RULES)
    servicer = AuthServicer(
        config,
        AuthStore(redis),
        AccountRecords(database),
        keys,
        database=database,
        bans=BanRecords(database),
        audit=audit,
        hash_workers=max(1, os.cpu_count() or 1),
    )
    service = GrpcService(server_config, interceptors=[DatabaseOutageInterceptor(), interceptor])
    service.add(auth_pb2_grpc.add_AuthServicer_to_server, servicer, SERVICE)
    tasks = [asyncio.create_task(_keep_keys_fresh(keys, verifier, config.key_reload_s))]
    if config.cheat.action != "none":
        tasks.append(
            asyncio.create_task(_police_cheats(servicer, config.cheat.worlds, config.cheat_poll_s))
        )
    log.info(
        "auth configured",
        extra={
            "kids": [k.kid for k in keys.ring.keys],
            "generated_keys": config.key_dir is None,
            "argon2": vars(config.argon2),
            "regions": sorted(config.relays),
            "service_clients": sorted(config.service_clients),
            "cheat_action": config.cheat.action,
            "cheat_worlds": list(config.cheat.worlds),
        },
    )

    async def shutdown() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await verifier.close()
        await redis.aclose()
        await audit.close()
        await database.close()
        servicer.pool.shutdown(wait=False, cancel_futures=True)

    service.on_shutdown(shutdown)
    return service


if __name__ == "__main__":
    main("auth", build)
