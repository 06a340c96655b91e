"""The reliable channel's sender and receiver: order, duplicates, acks, RTO, window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.wire import reliable
from tessera.wire.reliable import ReliableReceiver, ReliableSender, WindowFull


def test_in_order_delivery_holds_back_until_the_gap_fills() -> None:
    receiver = ReliableReceiver()
    assert receiver.receive(2, b"b", 0.0) == []
    assert receiver.receive(4, b"d", 0.0) == []
    assert receiver.ack_fields() == (0, 0b101)  # 2 and 4 held: bits for 0+2 and 0+4
    assert receiver.receive(1, b"a", 0.0) == [b"a", b"b"]
    assert receiver.receive(3, b"c", 0.0) == [b"c", b"d"]
    assert receiver.ack_fields() == (4, 0)


def test_duplicates_are_delivered_once_but_acknowledged_again() -> None:
    receiver = ReliableReceiver()
    assert receiver.receive(1, b"a", 0.0) == [b"a"]
    assert receiver.ack_due(reliable.ACK_DELAY_S)
    receiver.ack_owed_since = None  # the ack went out
    assert receiver.receive(1, b"a", 1.0) == []
    assert receiver.duplicates == 1
    assert receiver.ack_due(1.0 + reliable.ACK_DELAY_S)  # owed again: it may have been lost
    receiver.receive(3, b"c", 1.0)
    assert receiver.receive(3, b"c", 1.0) == []
    assert receiver.duplicates == 2


def test_beyond_the_window_is_refused_and_owes_no_ack() -> None:
    receiver = ReliableReceiver()
    assert receiver.receive(reliable.WINDOW + 1, b"x", 0.0) == []
    assert receiver.receive(0, b"x", 0.0) == []
    assert receiver.refused == 2 and receiver.ack_owed_since is None
    assert receiver.receive(reliable.WINDOW, b"y", 0.0) == []  # inside: held
    assert receiver.buffered == {reliable.WINDOW: b"y"}


def test_ack_is_due_after_the_delay() -> None:
    receiver = ReliableReceiver()
    assert not receiver.ack_due(10.0)
    receiver.receive(1, b"a", 10.0)
    assert not receiver.ack_due(10.0 + reliable.ACK_DELAY_S / 2)
    assert receiver.ack_due(10.0 + reliable.ACK_DELAY_S)


def test_cumulative_and_selective_acks_release_messages() -> None:
    sender = ReliableSender()
    for i in range(1, 8):
        assert sender.push(bytes([i]), 0.0) == i
    sender.acknowledge(2, 0b1001)  # 1, 2 and 4 (2+2+0), 7 (2+2+3)
    assert sorted(sender.unacked) == [3, 5, 6]
    sender.acknowledge(6, 0)
    assert sender.unacked == {}
    sender.acknowledge(3, 0)  # an old ack changes nothing
    assert sender.next_sequence == 8


def test_retransmission_after_rto_with_backoff() -> None:
    sender = ReliableSender()
    sender.push(b"a", 0.0)
    assert sender.rto == reliable.INITIAL_RTO_S
    assert sender.due(reliable.INITIAL_RTO_S - 0.01) == []
    assert sender.due(reliable.INITIAL_RTO_S) == [(1, b"a")]
    assert sender.due(reliable.INITIAL_RTO_S + 0.01) == []
    first_retry = sender.unacked[1].due
    sender.due(first_retry)
    second_retry = sender.unacked[1].due
    assert second_retry - first_retry > first_retry - reliable.INITIAL_RTO_S
    assert second_retry - first_retry <= reliable.MAX_RTO_S


def test_rto_follows_measured_rtt_within_bounds() -> None:
    sender = ReliableSender()
    for _ in range(20):
        sender.rtt_sample(0.04)
    assert sender.rto == pytest.approx(0.04 + 0.01 + reliable.ACK_DELAY_S, abs=0.005)
    fast = ReliableSender()
    fast.rtt_sample(0.0001)
    for _ in range(20):
        fast.rtt_sample(0.0001)
    assert fast.rto == reliable.MIN_RTO_S
    slow = ReliableSender()
    slow.rtt_sample(5.0)
    assert slow.rto == reliable.MAX_RTO_S


def test_the_window_is_bounded() -> None:
    sender = ReliableSender()
    for i in range(reliable.WINDOW):
        sender.push(b"m", float(i))
    with pytest.raises(WindowFull):
        sender.push(b"one too many", 0.0)
    assert len(sender.unacked) == reliable.WINDOW
    sender.acknowledge(1, 0)
    assert sender.push(b"room again", 0.0) == reliable.WINDOW + 1


def test_resend_now_makes_a_message_due() -> None:
    sender = ReliableSender()
    sender.push(b"accepted", 0.0)
    sender.resend_now(1, 0.01)
    sender.resend_now(99, 0.01)  # unknown: ignored
    assert sender.due(0.01) == [(1, b"accepted")]


@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=200),
)
def test_any_arrival_order_with_duplicates_delivers_each_once_in_order(arrivals: list[int]) -> None:
    receiver = ReliableReceiver()
    delivered: list[bytes] = []
    for sequence in arrivals:
        delivered += receiver.receive(sequence, sequence.to_bytes(2, "little"), 0.0)
    assert [int.from_bytes(m, "little") for m in delivered] == list(
        range(1, receiver.delivered + 1)
    )
    missing = min(set(range(1, 42)) - set(arrivals))
    assert receiver.delivered == missing - 1
