"""A minimal service built with the shared bootstrap, for runtime tests.

``/tessera.test.Sleepy/Sleep`` takes seconds as ASCII and answers b"done" after
sleeping that long; it proves in-flight calls survive a graceful shutdown. With
``SLEEPY_STUCK_HOOK=1`` a shutdown hook never finishes, even when cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import grpc

from tessera.common.config import ServerConfig
from tessera.common.server import GrpcService, main


async def _sleep(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await asyncio.sleep(float(request.decode()))
    return b"done"


async def build(config: ServerConfig) -> GrpcService:
    service = GrpcService(config)
    handler = grpc.method_handlers_generic_handler(
        "tessera.test.Sleepy", {"Sleep": grpc.unary_unary_rpc_method_handler(_sleep)}
    )
    service.add_generic(handler, "tessera.test.Sleepy")
    if os.environ.get("SLEEPY_STUCK_HOOK") == "1":
        service.on_shutdown(_stuck)
    return service


async def _stuck() -> None:
    """A hook that swallows its cancellation and waits forever."""
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


if __name__ == "__main__":
    main("sleepy", build)
