"""The failed-login backoff rules (pure)."""

from __future__ import annotations

import pytest

from tessera.auth.limits import Backoff

POLICY = Backoff(threshold=3, base_s=30.0, cap_s=900.0)


@pytest.mark.parametrize(
    ("failures", "wait"),
    [(0, 0.0), (2, 0.0), (3, 30.0), (4, 60.0), (5, 120.0), (7, 480.0), (8, 900.0), (10**9, 900.0)],
)
def test_wait_doubles_from_the_threshold_up_to_the_cap(failures: int, wait: float) -> None:
    assert POLICY.wait_s(failures) == wait


def test_a_zero_base_never_waits() -> None:
    off = Backoff(threshold=1, base_s=0.0, cap_s=0.0)
    assert [off.wait_s(n) for n in (1, 2, 100)] == [0.0, 0.0, 0.0]


def test_only_the_threshold_failure_starts_a_backoff() -> None:
    assert [POLICY.starts(n) for n in (2, 3, 4)] == [False, True, False]


@pytest.mark.parametrize(
    ("failures", "elapsed_ms", "left"),
    [(2, 0, 0.0), (3, 0, 30.0), (3, 10_000, 20.0), (3, 30_000, 0.0), (4, 59_500, 0.5)],
)
def test_remaining_counts_from_the_last_failure(
    failures: int, elapsed_ms: int, left: float
) -> None:
    assert POLICY.remaining_s(failures, 1_000_000, 1_000_000 + elapsed_ms) == pytest.approx(left)


def test_a_clock_behind_the_last_failure_leaves_the_whole_wait() -> None:
    assert POLICY.remaining_s(3, 1_000_000, 999_000) == 30.0
