"""Fixtures of the matchmaking tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tessera.common.process import ServiceProcess


def start_serving(process: ServiceProcess) -> ServiceProcess:
    """Start ``process`` and wait for its ``serving`` line."""
    process.start().wait_serving()
    return process


@pytest.fixture
def start_service() -> Callable[[ServiceProcess], ServiceProcess]:
    """``start_service(ServiceProcess(...))`` starts it and waits until it serves."""
    return start_serving
