"""The heap a service settles once started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tessera.common.heap import settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_settle_heap_freezes_what_is_alive_and_sets_the_threshold() -> None:
    gc.unfreeze()
    kept = [[i] for i in range(1000)]  # tracked containers alive at start-up
    settle_heap(25_000)
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold()[0] == 25_000
    assert gc.get_threshold()[1:] == (10, 10)  # the older generations' are kept
    # Frozen: in no generation a collection walks.
    assert not any(obj is kept for obj in gc.get_objects())


@pytest.mark.usefixtures("restored_gc")
def test_a_zero_threshold_turns_automatic_collection_off() -> None:
    settle_heap(0)
    assert gc.get_threshold()[0] == 0
    counts = gc.get_count()[0]
    garbage = [[i] for i in range(5000)]
    assert gc.get_count()[0] >= counts + len(garbage)  # nothing collected them


@pytest.mark.usefixtures("restored_gc")
def test_without_a_threshold_the_collector_keeps_its_own() -> None:
    before = gc.get_threshold()
    settle_heap()
    assert gc.get_threshold() == before and gc.get_freeze_count() > 0
