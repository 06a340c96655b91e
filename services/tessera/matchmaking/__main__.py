"""Entry point: ``python -m tessera.matchmaking`` (on uvloop: less CPU per gRPC call)."""

import asyncio

import uvloop

from tessera.common.server import main
from tessera.matchmaking.service import build

if __name__ == "__main__":
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    main("matchmaking", build)
