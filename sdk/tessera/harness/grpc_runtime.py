"""gRPC core started once per process, for processes that open and drop channels.

``grpc.aio`` starts gRPC core (its event-engine threads and completion queue) with
the first channel, call or server and shuts it down again when the garbage
collector frees the last of them. A test process that opens channels per test
therefore stops and restarts core whenever a collection happens to free
everything between two channels, at moments no test chooses. In a restarted core
an ``event_engine`` thread once allocated without bound (about 700 MB/s) until
the kernel killed pytest. A long-lived service never restarts core: it keeps its
server and channels for its whole life.

:func:`hold` keeps one idle channel (it never connects) for the rest of the
process, so core starts once and stops only at exit. Call it before any event
loop runs (the tests' session fixture ``grpc_core`` does).
"""

from __future__ import annotations

import asyncio

import grpc

# Never dialled: an idle channel makes no connection and starts no resolver.
_TARGET = "unix:/nonexistent/tessera-grpc-runtime"
_held: list[grpc.aio.Channel] = []


def hold() -> None:
    """Start gRPC core for the rest of the process (again: nothing more)."""
    if _held:
        return
    loop = asyncio.new_event_loop()
    try:
        _held.append(loop.run_until_complete(_idle_channel()))
    finally:
        loop.close()


async def _idle_channel() -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(_TARGET)
