"""Relay links in-process: attach, inputs, fan-out per link, handovers, pending attaches,
big batches split and paced."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Mapping

import pytest
from prometheus_client import REGISTRY

from tessera.common.config import Env
from tessera.game import Action, Argument, Component, Module
from tessera.game.view import Events, View
from tessera.v1 import zone_pb2
from tessera.zone.config import ZoneConfig
from tessera.zone.links import Links, LinkSnapshots, Outgoing
from tessera.zone.simulation import Simulation


def make(module: Module | None = None) -> tuple[Simulation, Links]:
    cfg = ZoneConfig.from_env(Env({"TESSERA_ZONE_BOUNDS": "-100,-100,100,100"}))
    assert cfg.bounds is not None
    sim = Simulation(cfg, area=cfg.bounds, module=module)
    for i, name in enumerate(("a", "b", "c")):
        sim.add_player(entity_id=i + 1, player_id=name, pos=(0.0, 0.0, 0.0), team=0)
    return sim, Links(sim=sim, world="w", queue_size=8)


class Upstream:
    """What a relay sends up a link."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[zone_pb2.ZoneLinkUp] = asyncio.Queue()

    def send(self, **msg: object) -> None:
        self.queue.put_nowait(zone_pb2.ZoneLinkUp(**msg))  # type: ignore[arg-type]

    async def __aiter__(self) -> AsyncIterator[zone_pb2.ZoneLinkUp]:
        while True:
            yield await self.queue.get()


def drain(queue: asyncio.Queue[Outgoing | None]) -> list[str]:
    out = []
    while not queue.empty():
        msg = queue.get_nowait()
        out.append("end" if msg is None else str(parsed(msg).WhichOneof("msg")))
    return out


def parsed(msg: Outgoing | bytes) -> zone_pb2.ZoneLinkDown:
    """A queued or sent link message as the relay reads it."""
    if isinstance(msg, LinkSnapshots):
        msg = msg.message(0, len(msg.ends))
    return zone_pb2.ZoneLinkDown.FromString(msg) if isinstance(msg, bytes) else msg


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_inputs_count_only_from_attached_players_and_frames_fan_out_per_link() -> None:
    sim, links = make()
    up1, up2 = Upstream(), Upstream()
    one = links.open("r1", aiter(up1))
    two = links.open("r2", aiter(up2))
    up1.send(attach=zone_pb2.Attach(player_id="a"))
    up2.send(attach=zone_pb2.Attach(player_id="b"))
    up2.send(attach=zone_pb2.Attach(player_id="nobody"))
    await settle()
    assert one.players == {"a"} and two.players == {"b"}
    assert links.pending_attach.keys() == {"nobody"}
    batch = zone_pb2.InputBatch(
        inputs=[
            zone_pb2.PlayerInput(player_id="a", sequence=1, move_z=1.0),
            zone_pb2.PlayerInput(player_id="b", sequence=1, move_z=1.0),  # not on this link
        ]
    )
    up1.send(inputs=batch)
    await settle()
    assert sim.ents.seen_seq[:2].tolist() == [1, 0]
    frame = sim.step()
    assert sim.ents.last_seq[:2].tolist() == [1, 0]
    links.publish(frame)
    assert drain(one.queue) == ["snapshots"] and drain(two.queue) == ["snapshots"]
    links.end(one)
    assert links.player_link == {"b": two.id} and "a" not in sim.attached
    links.close()
    assert drain(two.queue) == ["end"]
    links.end(two)


def held(outcome: str) -> float:
    value = REGISTRY.get_sample_value("tessera_zone_held_input_batches_total", {"outcome": outcome})
    return value or 0.0


async def test_a_batch_held_for_a_tick_already_run_is_counted_late() -> None:
    """The relay names the tick it held a batch for (InputBatch.for_tick): read
    before that tick runs it is on time, after it late; one not held is neither."""
    sim, links = make()
    up = Upstream()
    links.open("r1", aiter(up))
    up.send(attach=zone_pb2.Attach(player_id="a"))
    sim.step()  # tick 1
    before = {k: held(k) for k in ("on_time", "late")}
    for seq, for_tick in ((1, 2), (2, 0), (3, 1)):
        one = zone_pb2.PlayerInput(player_id="a", sequence=seq, move_z=1.0)
        up.send(inputs=zone_pb2.InputBatch(inputs=[one], for_tick=for_tick))
    await settle()
    assert held("on_time") - before["on_time"] == 1
    assert held("late") - before["late"] == 1
    assert sim.ents.seen_seq[0] == 3  # late inputs are applied all the same


def add(view: View, row: int, args: Mapping[str, float], events: Events) -> None:
    view["score"][row] += int(args["amount"])


SCORE = Module(
    name="score",
    components=(Component("score", "int32"),),
    actions=(Action(3, "add", add, arguments=(Argument("amount", 1, 9, integer=True),)),),
)


async def test_actions_of_attached_players_run_as_their_own_and_others_are_counted() -> None:
    sim, links = make(SCORE)
    up = Upstream()
    link = links.open("r1", aiter(up))
    up.send(attach=zone_pb2.Attach(player_id="a"))
    for player, args in (("a", [4.0]), ("b", [4.0]), ("a", [40.0]), ("ghost", [1.0])):
        up.send(action=zone_pb2.PlayerAction(player_id=player, action_id=3, args=args))
    await settle()
    sim.step()
    score = sim.ents.columns["score"]
    assert score[sim.ents.index[1]] == 4 and score[sim.ents.index[2]] == 0
    counted = {k: v for k, v in sim.counts.items() if k.startswith("game_action:")}
    # "b" is here but served by no link of this relay; "ghost" is nobody here.
    assert counted == {
        "game_action:accepted": 1,
        "game_action:arguments": 1,
        "game_action:not_attached": 2,
    }
    links.end(link)


async def test_handover_tells_the_serving_relay_and_arrivals_attach_when_asked() -> None:
    sim, links = make()
    up = Upstream()
    link = links.open("r1", aiter(up))
    up.send(attach=zone_pb2.Attach(player_id="a"))
    up.send(attach=zone_pb2.Attach(player_id="d"))  # handed to us later
    await settle()
    links.handover("a", "east", 7, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    msg = link.queue.get_nowait()
    assert isinstance(msg, zone_pb2.ZoneLinkDown)
    assert msg.handover.to.zone == "east" and msg.handover.epoch == 7
    assert msg.handover.trace_context["traceparent"].startswith("00-111")
    assert link.players == set() and links.forget("a") is None
    sim.add_player(entity_id=4, player_id="d", pos=(0.0, 0.0, 0.0), team=0)
    links.arrived("d")
    assert link.players == {"d"} and "d" in sim.attached and not links.pending_attach
    links.end(link)


async def test_an_arrival_nobody_asked_for_attaches_to_the_newest_link_of_its_relay() -> None:
    sim, links = make()
    old, new, other = Upstream(), Upstream(), Upstream()
    links.open("r1", aiter(old))
    newest = links.open("r1", aiter(new))  # the relay reconnected
    elsewhere = links.open("r2", aiter(other))
    sim.add_player(entity_id=4, player_id="d", pos=(0.0, 0.0, 0.0), team=0)
    sim.ents.extra[sim.ents.players["d"]].relay_id = "r1"
    links.arrived("d")  # its Attach came too early and was forgotten, or was lost
    assert newest.players == {"d"} and links.player_link == {"d": newest.id}
    assert "d" in sim.attached and elsewhere.players == set()
    sim.add_player(entity_id=5, player_id="e", pos=(0.0, 0.0, 0.0), team=0)
    links.arrived("e")  # no relay known: stays unattached until one asks
    assert "e" not in links.player_link and "e" not in sim.attached
    links.close()


def observed(phase: str) -> float:
    count = REGISTRY.get_sample_value("tessera_zone_arrival_seconds_count", {"phase": phase})
    return count or 0.0


async def test_an_arrival_is_timed_through_attach_commit_and_first_snapshot() -> None:
    sim, links = make()
    up = Upstream()
    link = links.open("r1", aiter(up))
    before = {p: observed(p) for p in ("pending", "unattached", "first_snapshot")}
    up.send(attach=zone_pb2.Attach(player_id="d"))  # before its COMMIT
    await settle()
    sim.add_player(entity_id=4, player_id="d", pos=(0.0, 0.0, 0.0), team=0)
    links.arrived("d")
    sim.add_player(entity_id=5, player_id="e", pos=(0.0, 0.0, 0.0), team=0)
    links.arrived("e")  # COMMIT first: waits for its relay's Attach
    assert links.unattached.keys() == {"e"} and links.first_due.keys() == {"d"}
    up.send(attach=zone_pb2.Attach(player_id="e"))
    await settle()
    assert not links.unattached and links.first_due.keys() == {"d", "e"}
    links.publish(sim.step())
    assert not links.first_due
    after = {p: observed(p) for p in before}
    assert after == {
        "pending": before["pending"] + 1,
        "unattached": before["unattached"] + 1,
        "first_snapshot": before["first_snapshot"] + 2,
    }
    assert link.players == {"d", "e"}
    links.end(link)


async def test_a_relay_linking_after_its_players_arrived_gets_their_snapshots_at_once() -> None:
    sim, links = make()
    for eid, player, relay in ((4, "d", "r1"), (5, "e", "r2"), (6, "f", "r1")):
        sim.add_player(entity_id=eid, player_id=player, pos=(0.0, 0.0, 0.0), team=0)
        sim.ents.extra[eid].relay_id = relay
        links.arrived(player)  # handed here before any relay linked to this zone
    assert not links.player_link
    up, other = Upstream(), Upstream()
    link = links.open("r1", aiter(up))
    assert link.players == {"d", "f"} and set(sim.attached) == {"d", "f"}
    assert links.unattached.keys() == {"d", "e", "f"}
    assert {p: phase for p, (_, phase) in links.first_due.items()} == {
        "d": "self_attached",
        "f": "self_attached",
    }
    self_attached = observed("self_attached")
    links.publish(sim.step())  # before the relay's Attaches have come down the stream
    assert observed("self_attached") == self_attached + 2 and not links.first_due
    msg = link.queue.get_nowait()
    assert msg is not None and {s.player_id for s in parsed(msg).snapshots.snapshots} == {"d", "f"}
    stream = sim.encoder.stream[sim.attached["d"]]
    up.send(attach=zone_pb2.Attach(player_id="d"))  # the relay followed the route
    await settle()
    assert "d" not in links.unattached and links.first_due["d"][1] == "first_snapshot"
    assert sim.encoder.stream[sim.attached["d"]] == stream  # its first Attach keeps it
    up.send(attach=zone_pb2.Attach(player_id="d"))  # any later Attach restarts it
    await settle()
    assert sim.encoder.stream[sim.attached["d"]] != stream and not links.unasked - {"f"}
    two = links.open("r2", aiter(other))
    assert two.players == {"e"} and link.players == {"d", "f"}
    links.end(link)
    links.end(two)


async def test_a_full_link_makes_room_for_handovers_and_events_by_dropping_old_snapshots() -> None:
    sim, links = make()
    up = Upstream()
    link = links.open("r1", aiter(up))
    for name in ("a", "b"):
        up.send(attach=zone_pb2.Attach(player_id=name))
    await settle()
    for _ in range(8):  # queue_size 8: full of snapshot batches
        links.publish(sim.step())
    links.publish(sim.step())  # a ninth batch is dropped, not queued
    links.handover("a", "east", 3)  # room is made: the oldest batch (tick 1) goes
    queued = [parsed(m) for m in (link.queue.get_nowait() for _ in range(link.queue.qsize())) if m]
    assert [m.WhichOneof("msg") for m in queued] == ["snapshots"] * 7 + ["handover"]
    assert [m.snapshots.tick for m in queued[:7]] == list(range(2, 9))
    links.close()


def entries(n: int) -> list[zone_pb2.PlayerSnapshot]:
    return [
        zone_pb2.PlayerSnapshot(player_id=f"p{i}", sequence=i, payload=bytes([i])) for i in range(n)
    ]


def snapshots(n: int, tick: int = 7) -> LinkSnapshots:
    """A tick's ``n`` snapshots for a link, as publish queues them."""
    parts = [zone_pb2.SnapshotBatch(snapshots=[e]).SerializeToString() for e in entries(n)]
    ends = list(itertools.accumulate(len(p) for p in parts))
    return LinkSnapshots(tick, 1234.5, 1250.0, b"".join(parts), ends)


@pytest.mark.parametrize(("first", "last"), [(0, 1), (0, 10), (4, 8), (9, 10)])
def test_link_snapshots_are_sent_as_the_zone_link_message_protobuf_writes(
    first: int, last: int
) -> None:
    """A chunk of a tick's snapshots is byte for byte the ZoneLinkDown built of
    those PlayerSnapshots, with the tick, server time and next tick's time."""
    batch = zone_pb2.SnapshotBatch(
        tick=7, server_time_ms=1234.5, next_tick_ms=1250.0, snapshots=entries(10)[first:last]
    )
    assert (
        snapshots(10).message(first, last)
        == zone_pb2.ZoneLinkDown(snapshots=batch).SerializeToString()
    )


async def test_a_big_batch_goes_out_in_chunks_spread_over_the_spread() -> None:
    sim, _ = make()
    links = Links(sim=sim, world="w", queue_size=8, chunk=4, spread_s=0.12)
    link = links.open("r1", aiter(Upstream()))
    link.queue.put_nowait(snapshots(10))
    got: list[tuple[float, int]] = []
    start = time.monotonic()
    stream = aiter(links.outgoing(link))
    for _ in range(3):
        msg = await asyncio.wait_for(anext(stream), 5.0)
        got.append((time.monotonic() - start, len(parsed(msg).snapshots.snapshots)))
    link.queue.put_nowait(None)
    assert [msg async for msg in stream] == []
    assert [size for _, size in got] == [4, 4, 2]
    # Three chunks, 0.04 s apart: the last leaves at least 0.08 s after the first.
    assert got[2][0] - got[0][0] >= 0.075
    links.close()


async def test_a_link_that_fell_behind_gets_whole_batches_without_pacing() -> None:
    sim, _ = make()
    links = Links(sim=sim, world="w", queue_size=8, chunk=2, spread_s=30.0)
    link = links.open("r1", aiter(Upstream()))
    for item in (snapshots(6, tick=1), snapshots(4, tick=2), None):
        link.queue.put_nowait(item)

    async def sizes() -> list[tuple[int, int]]:
        sent = [parsed(msg).snapshots async for msg in links.outgoing(link)]
        return [(batch.tick, len(batch.snapshots)) for batch in sent]

    # Split and paced, this would take 10 s per gap.
    assert await asyncio.wait_for(sizes(), 5.0) == [(1, 6), (2, 4)]
    links.close()


async def test_a_batch_falling_behind_sends_its_rest_in_one_message() -> None:
    sim, _ = make()
    links = Links(sim=sim, world="w", queue_size=8, chunk=2, spread_s=0.03)
    link = links.open("r1", aiter(Upstream()))
    link.queue.put_nowait(snapshots(7, tick=1))
    stream = aiter(links.outgoing(link))
    first = parsed(await asyncio.wait_for(anext(stream), 5.0))
    link.queue.put_nowait(snapshots(1, tick=2))  # the next tick is waiting now
    link.queue.put_nowait(None)
    rest = [parsed(msg) async for msg in stream]
    assert [len(m.snapshots.snapshots) for m in [first, *rest]] == [2, 5, 1]
    ids = [s.player_id for m in [first, *rest[:1]] for s in m.snapshots.snapshots]
    assert ids == [f"p{i}" for i in range(7)]
    assert rest[0].snapshots.tick == 1 and rest[0].snapshots.server_time_ms == 1234.5
    links.close()
