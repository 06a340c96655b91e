"""Entry point and wiring: ``python -m tessera.relay`` (Redis, auth keys, the gateway,
the UDP socket and the gRPC servicer)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket

import grpc
import uvloop

from tessera.authclient.access import AccessInterceptor
from tessera.authclient.connect import ConnectTokenOpener
from tessera.authclient.credentials import ServiceCredentials
from tessera.authclient.verifier import Verifier
from tessera.common import store as common_store
from tessera.common.config import ServerConfig, load_or_exit
from tessera.common.heap import settle_heap
from tessera.common.process import free_port
from tessera.common.server import GrpcService, main
from tessera.common.workers import Workers
from tessera.relay import metrics, resume
from tessera.relay.admission import rejecting
from tessera.relay.config import RelayConfig, uvloop_enabled
from tessera.relay.gateway import Gateway, GatewayConfig
from tessera.relay.servicer import RULES, RelayServicer
from tessera.relay.store import RelayStore
from tessera.relay.udp import UdpEndpoint, UdpLimits
from tessera.relay.workers import relay_workers
from tessera.v1 import relay_pb2_grpc

log = logging.getLogger(__name__)


async def build(server_config: ServerConfig) -> GrpcService:
    """The relay service, its UDP socket bound and its background tasks started."""
    config = RelayConfig.from_env()
    metrics.GcPauses().install()
    redis = common_store.connect(server_config.redis_url)
    relay_store = RelayStore(redis, config.world)
    counters = metrics.Counters()
    loop = asyncio.get_running_loop()
    tokens = ConnectTokenOpener(
        auth_address=config.auth_address,
        sealing_key=config.connect_key,
        relay_address=config.public_address,
    )
    # The relay's calls to zones (ZoneLink, Join, Leave) carry its service token.
    credentials = ServiceCredentials(
        config.auth_address, config.service_client.client_id, config.service_client.secret
    )
    gateway = Gateway(
        GatewayConfig(
            relay_id=config.relay_id,
            world=config.world,
            batch_s=config.batch_ms / 1000.0,
            input_lead=config.input_lead,
            upstream_timeout_s=config.upstream_timeout_s,
            default_timeout_s=config.default_timeout_s,
            zone_silence_s=config.zone_silence_s,
            orphan_grace_s=config.orphan_grace_s,
            resume_key=resume.derive_key(config.connect_key),
        ),
        store=relay_store,
        opener=rejecting(tokens.open),
        counters=counters,
        channel=credentials.link_channel,
        tokens=credentials,
    )
    endpoint = UdpEndpoint(
        gateway,
        counters,
        UdpLimits(
            packets_per_s=config.packets_per_s,
            bytes_per_s=config.bytes_per_s,
            handshakes_per_s=config.handshakes_per_s,
            pings_per_source_s=config.pings_per_source_s,
            handshakes_per_source_s=config.handshakes_per_source_s,
        ),
    )
    # With workers every process binds the port with SO_REUSEPORT (the parent
    # first, so a port of 0 becomes the one its workers share).
    udp, _ = await loop.create_datagram_endpoint(
        lambda: endpoint,
        local_addr=(config.udp_host, config.udp_port),
        reuse_port=config.reuse_port or None,
    )
    if config.udp_buffer_bytes:
        # A bigger receive buffer absorbs bursts but, when the relay falls behind,
        # turns into queueing delay (stale inputs); the kernel default keeps that
        # short. The kernel caps the value at net.core.rmem_max / wmem_max.
        sock = udp.get_extra_info("socket")
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, config.udp_buffer_bytes)
    udp_port = int(udp.get_extra_info("sockname")[1])
    if not config.public_address:
        tokens.relay_address = f"127.0.0.1:{udp_port}"
    gateway.config = dataclasses.replace(gateway.config, public_address=tokens.relay_address)
    gateway.presence.public_address = tokens.relay_address  # known once the port is bound
    try:
        await tokens.refresh()
    except Exception as err:
        # Keep starting; the key task retries, and handshakes fail until it succeeds.
        log.warning("auth keys unavailable", extra={"error": str(err)})
    metrics.register(
        metrics.RelayCollector(
            counters,
            gateway.sessions.counts,
            lambda: {link.zone: link.reconnects for link in list(gateway.links.values())},
        )
    )
    try:
        verifier = await Verifier.connect(config.auth_address, server_config.redis_url)
        await credentials.login()  # auth serves by now: bad credentials fail here
    except grpc.aio.AioRpcError as err:
        log.error(
            "cannot start: the relay's service login failed",
            extra={"client_id": config.service_client.client_id, "code": err.code().name},
        )
        raise SystemExit(1) from None
    except ConnectionError as err:
        log.error("cannot start: auth or Redis unreachable", extra={"error": str(err)})
        raise SystemExit(1) from None
    workers: Workers | None = None
    if config.workers > 1:
        if server_config.grpc_port == 0:
            server_config = dataclasses.replace(server_config, grpc_port=free_port())
        workers = relay_workers(
            config.workers,
            relay_id=config.relay_id,
            udp_port=udp_port,
            grpc_port=server_config.grpc_port,
            metrics_port=server_config.metrics_port,
            address=tokens.relay_address,
        )
    # gRPC binds with SO_REUSEPORT by default on Linux; asked for here when workers
    # share the port, so they never depend on that default.
    service = GrpcService(
        server_config,
        interceptors=[AccessInterceptor(verifier, RULES)],
        options=[("grpc.so_reuseport", 1)] if config.reuse_port else (),
    )
    service.add(
        relay_pb2_grpc.add_RelayServicer_to_server,
        RelayServicer(gateway, counters, connect_timeout_s=config.connect_timeout_s),
        "tessera.v1.Relay",
    )
    service.serving_fields = {"udp_port": udp_port, "relay_address": tokens.relay_address}
    ready = asyncio.Event()
    revocations_ready = asyncio.Event()
    tasks = [
        asyncio.create_task(gateway.maintain(), name="relay-maintain"),
        asyncio.create_task(gateway.presence.keep(), name="relay-presence"),
        asyncio.create_task(
            relay_store.watch_routes(gateway.on_route_change, ready, on_kick=gateway.kick),
            name="relay-routes",
        ),
        asyncio.create_task(tokens.keep_fresh(), name="relay-keys"),
        asyncio.create_task(
            relay_store.follow_revocations(
                revoke=gateway.revoke, prune=gateway.admission.prune, ready=revocations_ready
            ),
            name="relay-revocations",
        ),
    ]
    if config.warm_links_s > 0:
        warm = gateway.warm_links(config.warm_links_s)
        tasks.append(asyncio.create_task(warm, name="relay-warm-links"))
    await asyncio.wait_for(ready.wait(), 10.0)
    await asyncio.wait_for(revocations_ready.wait(), 10.0)
    if workers is not None:
        await workers.start()
        tasks.append(asyncio.create_task(workers.watch(), name="relay-workers"))
        # Every worker drains its own clients while this one drains its own.
        service.on_stopping(workers.begin_stop)
        service.serving_fields["worker_pids"] = workers.pids

    async def shutdown() -> None:
        await gateway.drain(config.drain_s)
        await gateway.close_all()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        udp.close()
        if workers is not None:
            await workers.stop()
        await tokens.close()
        await credentials.close()
        await verifier.close()
        await redis.aclose()

    service.on_stopping(gateway.end_play_sessions)
    service.on_shutdown(shutdown)
    settle_heap(config.gc_threshold)
    return service


if __name__ == "__main__":
    if load_or_exit(uvloop_enabled):
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    main("relay", build)
