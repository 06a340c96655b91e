"""Fixtures of the matchmaking tests: starting service processes reliably."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tessera.common.process import ServiceProcess

# grpcio >= 1.81 can crash a child between fork and exec when the parent has live
# gRPC state ("epoll_wait error: Bad file descriptor", grpc/grpc#43055); the child
# never reaches our code, so starting it again is the whole remedy.
_FORK_CRASH = "epoll_wait error"


def start_serving(process: ServiceProcess, attempts: int = 3) -> ServiceProcess:
    """Start ``process`` and wait for its ``serving`` line, retrying the gRPC fork crash."""
    for attempt in range(attempts):
        process.start()
        try:
            process.wait_serving()
            return process
        except RuntimeError:
            crashed = any(_FORK_CRASH in line for line in process.lines)
            process.kill()
            if not crashed or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture
def start_service() -> Callable[[ServiceProcess], ServiceProcess]:
    """``start_service(ServiceProcess(...))`` starts it and waits until it serves."""
    return start_serving
