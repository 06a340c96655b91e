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


def test_the_schedule_lists_waits_up_to_the_first_at_the_cap() -> None:
    assert POLICY.schedule_ms() == [30_000, 60_000, 120_000, 240_000, 480_000, 900_000]
    assert Backoff(1, 0.25, 0.25).schedule_ms() == [250]
    never = Backoff(1, 0.0, 5.0).schedule_ms()  # a zero base never reaches its cap
    assert len(never) == 65 and set(never) == {0}
