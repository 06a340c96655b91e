"""gRPC service bootstrap shared by every Tessera service.

:class:`GrpcService` wires an asyncio gRPC server with the standard health
service, server reflection (unless ``TESSERA_GRPC_REFLECTION=false``) and a
Prometheus ``/metrics`` endpoint, and shuts down gracefully: on SIGTERM/SIGINT
health turns NOT_SERVING, the server stops accepting calls, in-flight RPCs get
``shutdown_grace_s`` to finish, then the registered shutdown hooks run (stop
loops, close Redis) and the process exits 0. A stop that has not finished
``shutdown_hooks_s`` after the grace (a hook stuck on a dead peer) ends the
process with status 1 rather than leaving it running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tessera.common import decoding, logs, metrics, process, tls, tracing
from tessera.common.config import ConfigError, ServerConfig, fail, load_or_exit

log = logging.getLogger(__name__)

S = TypeVar("S")
# gRPC's own default made explicit: a larger request is refused by gRPC with
# RESOURCE_EXHAUSTED ("received message larger than max") before any servicer runs.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MESSAGE_LIMITS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
ShutdownHook = Callable[[], Awaitable[None]]


class GrpcService:
    """An asyncio gRPC server with health, reflection, metrics and graceful shutdown."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.config = config
        self.server = grpc.aio.server(
            interceptors=list(interceptors), options=[*MESSAGE_LIMITS, *options]
        )
        # grpc-stubs does not know the asyncio health servicer.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = [
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        ]
        self._shutdown_hooks: list[ShutdownHook] = []
        self._stopping_hooks: list[Callable[[], None]] = []
        self._stopping = asyncio.Event()
        # TESSERA_TLS_CERT_FILE / _KEY_FILE: serve TLS (None: plaintext).
        self.tls = tls.process_server_tls()
        self.grpc_port = 0
        self.metrics_port = 0
        # Extra fields for the `serving` log line (e.g. a UDP port bound by the service).
        self.serving_fields: dict[str, Any] = {}

    def add(
        self, add_to_server: Callable[[S, grpc.aio.Server], None], servicer: S, name: str
    ) -> None:
        """Register a servicer under its full service name (e.g. ``tessera.v1.Zone``);
        an undecodable request gets INVALID_ARGUMENT (:mod:`tessera.common.decoding`)."""
        decoding.registering(add_to_server)(servicer, self.server)
        self._service_names.append(name)

    def add_generic(self, handler: grpc.GenericRpcHandler[Any, Any], name: str) -> None:
        """Register a generic handler (services without generated stubs)."""
        self.server.add_generic_rpc_handlers((handler,))
        self._service_names.append(name)

    def on_stopping(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` as soon as a stop begins, before the grace period: end
        long-lived streams here so the grace is not spent waiting on them."""
        self._stopping_hooks.append(hook)

    def on_shutdown(self, hook: ShutdownHook) -> None:
        """Run ``hook`` after the server has stopped, in reverse order of registration."""
        self._shutdown_hooks.append(hook)

    async def start(self) -> None:
        """Bind the gRPC and metrics ports, mark every service SERVING."""
        if self.config.reflection:
            reflection.enable_server_reflection(
                [*self._service_names, reflection.SERVICE_NAME], self.server
            )
        address = f"{self.config.host}:{self.config.grpc_port}"
        if self.tls is None:
            self.grpc_port = self.server.add_insecure_port(address)
        else:
            self.grpc_port = self.server.add_secure_port(address, self.tls.credentials())
        self.metrics_port = metrics.serve(self.config.host, self.config.metrics_port)
        await self.server.start()
        for name in ["", *self._service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            extra={
                "grpc_port": self.grpc_port,
                "tls": self.tls is not None,
                "metrics_port": self.metrics_port,
                "services": self._service_names,
                **self.serving_fields,
            },
        )

    def request_stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does)."""
        self._stopping.set()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or :meth:`request_stop`), then stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        await self._stopping.wait()
        limit_s = self.config.shutdown_grace_s + self.config.shutdown_hooks_s
        # A thread, not the loop: a stuck await (or a blocked loop) cannot stop it.
        watchdog = threading.Timer(limit_s, _stop_overdue, (limit_s,))
        watchdog.daemon = True
        watchdog.start()
        await self.stop()
        watchdog.cancel()

    async def stop(self) -> None:
        """Graceful stop: stopping hooks, NOT_SERVING, finish in-flight RPCs within the
        grace, then the shutdown hooks."""
        log.info("stopping", extra={"grace_s": self.config.shutdown_grace_s})
        for begin in self._stopping_hooks:
            begin()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.shutdown_grace_s)
        for hook in reversed(self._shutdown_hooks):
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        log.info("stopped")


async def end_tasks(tasks: Sequence[asyncio.Task[Any]], *, every_s: float = 0.1) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again every
    ``every_s`` the ones still running. One cancel is not enough: a library can
    absorb it (redis-py inside a blocking read does), and a loop that then catches
    ``Exception`` and goes on would hold the stop until the watchdog ends the
    process; a second cancel lands at the loop's next await."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=every_s)
    await asyncio.gather(*tasks, return_exceptions=True)


def _stop_overdue(limit_s: float) -> None:
    """End a process whose graceful stop overran its limit (status 1)."""
    log.error("stop did not finish in time; exiting", extra={"limit_s": limit_s})
    logging.shutdown()
    os._exit(1)


def main(name: str, build: Callable[[ServerConfig], Awaitable[GrpcService]]) -> None:
    """Entry point of a service process: config, logging, tracing, serve, exit 0 on
    SIGTERM (the spans still buffered are flushed on the way out).

    ``build`` turns the validated config into a ready (not yet started) service;
    it may raise :class:`~tessera.common.config.ConfigError` for its own settings.
    """
    process.die_with_parent()
    config = load_or_exit(lambda: ServerConfig.from_env(name))
    # Certificates and CA bundles are checked before anything starts.
    load_or_exit(tls.process_server_tls)
    load_or_exit(tls.process_client_tls)
    logs.setup(name, config.log_level)
    end_tracing = load_or_exit(lambda: tracing.setup(name))

    async def _run() -> None:
        service = await build(config)
        await service.run()

    try:
        asyncio.run(_run())
    except ConfigError as err:
        fail(f"configuration error: {err}")
    finally:
        end_tracing()
    _exit_now()


def _exit_now() -> None:
    """Exit 0 without the interpreter's teardown: the stop closed everything this
    process owns, and tearing down gRPC's core and the loaded modules takes 0.5 s
    on a quiet machine and seconds on a busy one, which a zone being replaced
    would add to the operator's pass."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)
