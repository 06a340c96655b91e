"""Error statuses: messages cut to a bounded length."""

from __future__ import annotations

from tessera.common.errors import MAX_MESSAGE_CHARS, bounded


def test_status_messages_are_cut_to_a_bounded_length() -> None:
    assert bounded("short") == "short"
    assert bounded("x" * MAX_MESSAGE_CHARS) == "x" * MAX_MESSAGE_CHARS
    cut = bounded("x" * 10_000)
    assert len(cut) == MAX_MESSAGE_CHARS and cut.endswith("…")
