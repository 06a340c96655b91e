"""ZoneLink bookkeeping that needs no zone: input merging for replay, ordering of
control messages and inputs, shedding when a zone stops reading."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from tessera.relay import upstream
from tessera.relay.upstream import ZoneLink, keep_recent
from tessera.v1 import zone_pb2


def batch(*items: tuple[str, int]) -> zone_pb2.InputBatch:
    return zone_pb2.InputBatch(
        inputs=[zone_pb2.PlayerInput(player_id=p, sequence=s) for p, s in items]
    )


def test_keep_recent_inputs_per_player_in_order() -> None:
    merged = keep_recent([batch(("a", 1), ("b", 1), ("a", 2)), batch(("a", 3))], per_player=2)
    assert [(i.player_id, i.sequence) for i in merged.inputs] == [("b", 1), ("a", 2), ("a", 3)]


def test_keep_recent_newest_ack_per_stream() -> None:
    first = zone_pb2.InputBatch(
        acks=[
            zone_pb2.SnapshotAck(player_id="a", stream=1, sequence=5),
            zone_pb2.SnapshotAck(player_id="a", stream=2, sequence=1),
        ]
    )
    second = zone_pb2.InputBatch(acks=[zone_pb2.SnapshotAck(player_id="a", stream=1, sequence=4)])
    merged = keep_recent([first, second], per_player=8)
    assert sorted((k.stream, k.sequence) for k in merged.acks) == [(1, 5), (2, 1)]


class Handler:
    def on_snapshots(self, *args: object) -> None: ...
    def on_event(self, *args: object) -> None: ...
    def on_handover(self, *args: object) -> None: ...
    async def on_link_up(self, *args: object) -> None: ...
    def on_link_down(self, *args: object) -> None: ...
    def on_link_resumed(self, *args: object) -> None: ...
    def on_shed(self, *args: object) -> None: ...


async def no_address(zone: str) -> str | None:
    return None


def make_link() -> ZoneLink:
    return ZoneLink("zone-a", relay_id="r", resolve=no_address, handler=Handler())


def kinds(link: ZoneLink) -> list[str]:
    link._close_batch()
    return [str(m.WhichOneof("msg")) for m in link._outbox]


def test_attach_and_inputs_keep_their_order() -> None:
    link = make_link()
    link.send_inputs([zone_pb2.PlayerInput(player_id="a", sequence=1)], 0.0)
    link.attach("b")
    link.send_inputs([zone_pb2.PlayerInput(player_id="b", sequence=1)], 0.0)
    link.send_ack(zone_pb2.SnapshotAck(player_id="b", stream=1, sequence=1), 0.0)
    assert kinds(link) == ["inputs", "attach", "inputs"]
    assert link.attached == {"b"}
    # Detaching while down sends nothing (the link re-attaches its players on connect).
    link.detach("b")
    link.detach("never-attached")
    assert kinds(link) == ["inputs", "attach", "inputs"]


def test_broken_stream_keeps_recent_inputs_only() -> None:
    link = make_link()
    link.attach("a")
    for seq in range(1, 21):
        link.send_inputs([zone_pb2.PlayerInput(player_id="a", sequence=seq)], 0.0)
        link._close_batch()
    link._buffer_for_replay()
    assert kinds(link) == ["inputs"]
    kept = [i.sequence for i in link._outbox[0].inputs.inputs]
    assert kept == list(range(21 - upstream.REPLAY_INPUTS, 21))


def test_backlog_is_shed() -> None:
    link = make_link()
    link.attach("a")
    for seq in range(1, upstream.MAX_OUTBOX + 10):
        link.send_inputs([zone_pb2.PlayerInput(player_id="a", sequence=seq)], 0.0)
        link._close_batch()
    assert len(link._outbox) <= upstream.MAX_OUTBOX
    assert kinds(link)[0] == "attach"
    assert link.shed_inputs > 0
    newest = link._outbox[-1].inputs.inputs[-1].sequence
    assert newest == upstream.MAX_OUTBOX + 9


NOW = 1000.0  # the relay's monotonic clock, s
WALL = 1.7e12  # its wall clock at NOW, ms


def tick_batch(next_in_ms: float, sent_ago_ms: float = 0.0) -> zone_pb2.SnapshotBatch:
    """A snapshot batch sent ``sent_ago_ms`` before NOW (one clock with the
    zone's), whose zone ticks next ``next_in_ms`` after sending it."""
    sent = WALL - sent_ago_ms
    return zone_pb2.SnapshotBatch(tick=1, server_time_ms=sent, next_tick_ms=sent + next_in_ms)


def ticking_link(hz: int = 10, lead: float = 0.25) -> ZoneLink:
    link = ZoneLink("zone-a", relay_id="r", resolve=no_address, handler=Handler(), lead=lead)
    link._period = 1.0 / hz
    return link


def test_inputs_wait_for_the_lead_before_the_zones_next_tick() -> None:
    link = ticking_link()
    assert link._hold(NOW) == (link.batch_s, 0)  # no tick times yet
    link._note_tick(tick_batch(next_in_ms=80.0), NOW, WALL)
    # 80 ms - a quarter of 100 ms, for the tick after the batch's (tick 1)
    assert link._hold(NOW) == pytest.approx((0.055, 2))
    assert link._hold(NOW + 0.06) == (link.batch_s, 0)  # inside the lead: the batch window
    link._note_tick(tick_batch(next_in_ms=20.0), NOW, WALL)
    assert link._hold(NOW) == (link.batch_s, 0)


def test_a_tick_passed_is_followed_on_the_zones_grid() -> None:
    link = ticking_link()
    link._note_tick(tick_batch(next_in_ms=70.0), NOW, WALL)
    # 200 ms on, that tick and the next slot have passed: the slot at 270 ms, minus
    # 25; which tick it is is not known (a step that overran skips slots)
    assert link._hold(NOW + 0.2) == pytest.approx((0.045, 0))


def test_late_batches_do_not_move_the_estimate_later() -> None:
    """The clocks are read against each other by the least delay seen: a batch
    that waited 40 ms on its way names a tick 40 ms nearer than its arrival
    would suggest."""
    link = ticking_link()
    link._note_tick(tick_batch(next_in_ms=80.0), NOW, WALL)
    link._note_tick(tick_batch(next_in_ms=80.0, sent_ago_ms=40.0), NOW, WALL)
    assert link._hold(NOW) == pytest.approx((0.015, 2))


def test_nothing_is_held_without_fresh_plausible_tick_times_with_control_or_lead_one() -> None:
    link = ticking_link()
    link._note_tick(tick_batch(next_in_ms=80.0), NOW, WALL)
    assert link._hold(NOW + 0.5) == (link.batch_s, 0)  # five periods on: stale
    for bogus in (-10.0, 250.0):  # before the batch was sent, or past two periods
        link = ticking_link()
        link._note_tick(tick_batch(next_in_ms=bogus), NOW, WALL)
        assert link._hold(NOW) == (link.batch_s, 0)
    link = ticking_link()
    link._note_tick(tick_batch(next_in_ms=80.0), NOW, WALL)
    link.attach("a")
    assert link._hold(NOW) == (link.batch_s, 0)
    link = ticking_link(lead=1.0)
    link._note_tick(tick_batch(next_in_ms=80.0), NOW, WALL)
    assert link._hold(NOW) == (link.batch_s, 0)


def test_a_hold_never_exceeds_a_period() -> None:
    link = ticking_link(lead=0.05)
    link._note_tick(tick_batch(next_in_ms=180.0), NOW, WALL)
    assert link._hold(NOW) == pytest.approx((0.1, 2))


def test_clock_skew_is_the_least_sample_of_the_last_windows() -> None:
    skew = upstream.ClockSkew(window_s=5.0)
    assert skew.add(10.0, now=0.0) == 10.0
    assert skew.add(3.0, now=1.0) == 3.0
    assert skew.add(8.0, now=5.5) == 3.0  # the previous window still counts
    assert skew.add(9.0, now=11.0) == 8.0  # ... until it is two windows old
    assert skew.add(20.0, now=30.0) == 20.0  # after a gap, nothing older counts


async def test_a_control_message_or_newer_tick_times_bring_a_held_batch_forward() -> None:
    loop = asyncio.get_running_loop()
    link = ticking_link()
    link._stub = object()  # the stream is up
    wall_ms = time.time() * 1000.0
    sent = zone_pb2.SnapshotBatch(server_time_ms=wall_ms, next_tick_ms=wall_ms + 90.0)
    link._note_tick(sent, time.monotonic(), wall_ms)
    link.send_inputs([zone_pb2.PlayerInput(player_id="a", sequence=1)], time.perf_counter())
    assert link._flush is not None and link._flush.when() - loop.time() > 0.050
    assert link._due > 0  # held: its up latency counts from then
    sent.next_tick_ms = sent.server_time_ms + 50.0  # the zone is back on its grid, earlier
    link._note_tick(sent, time.monotonic(), wall_ms)
    assert link._flush is not None and link._flush.when() - loop.time() < 0.030
    link.attach("b")
    assert link._flush is not None and link._flush.when() - loop.time() <= link.batch_s
    assert link._due == 0
    await asyncio.sleep(0.01)
    assert link._wake.is_set() and link._flush is None


class Call:
    """The writing end of a ZoneLink stream: what was written."""

    def __init__(self) -> None:
        self.written: list[zone_pb2.ZoneLinkUp] = []
        self.wrote = asyncio.Event()

    async def write(self, message: zone_pb2.ZoneLinkUp) -> None:
        self.written.append(message)
        self.wrote.set()


async def test_a_held_batch_names_the_tick_it_was_held_for() -> None:
    """The zone counts a held batch that comes after that tick (tessera.zone.links);
    a batch sent after the batch window names none."""
    link = ticking_link(hz=50)
    link._stub = object()  # the stream is up
    call = Call()
    writer = asyncio.create_task(link._write_loop(call))
    try:
        wall_ms = time.time() * 1000.0
        sent = zone_pb2.SnapshotBatch(tick=41, server_time_ms=wall_ms, next_tick_ms=wall_ms + 15.0)
        link._note_tick(sent, time.monotonic(), wall_ms)
        link.send_inputs([zone_pb2.PlayerInput(player_id="a", sequence=1)], time.perf_counter())
        assert link._for_tick == 42
        await asyncio.wait_for(call.wrote.wait(), 1.0)
        assert call.written[-1].inputs.for_tick == 42
        assert link._for_tick == 0
        call.wrote.clear()
        assert link._flush is None and link._released == (0.0, 0)
        link._tick_seen = -math.inf  # no fresh tick times: the batch window
        link.send_inputs([zone_pb2.PlayerInput(player_id="a", sequence=2)], time.perf_counter())
        await asyncio.wait_for(call.wrote.wait(), 1.0)
        assert call.written[-1].inputs.for_tick == 0
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


async def test_a_flush_keeps_its_tick_from_a_packet_that_comes_before_the_writer() -> None:
    """Between the flush and the writer's turn, a new input schedules the next
    batch (here in the batch window); the batch flushed still names its tick."""
    link = ticking_link()
    link._stub = object()
    wall_ms = time.time() * 1000.0
    sent = zone_pb2.SnapshotBatch(tick=7, server_time_ms=wall_ms, next_tick_ms=wall_ms + 80.0)
    link._note_tick(sent, time.monotonic(), wall_ms)
    link.send_inputs([zone_pb2.PlayerInput(player_id="a", sequence=1)], time.perf_counter())
    assert link._flush is not None
    link._flush.cancel()
    link._wake_writer()  # the flush fires
    link._tick_seen = -math.inf
    link.send_inputs([zone_pb2.PlayerInput(player_id="a", sequence=2)], time.perf_counter())
    assert link._for_tick == 0 and link._released[1] == 8
    call = Call()
    writer = asyncio.create_task(link._write_loop(call))
    try:
        await asyncio.wait_for(call.wrote.wait(), 1.0)
        assert call.written[0].inputs.for_tick == 8
        assert [i.sequence for i in call.written[0].inputs.inputs] == [1, 2]
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
