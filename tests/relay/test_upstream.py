"""ZoneLink bookkeeping that needs no zone: input merging for replay, ordering of
control messages and inputs, shedding when a zone stops reading."""

from __future__ import annotations

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
