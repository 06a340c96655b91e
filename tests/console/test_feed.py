"""The live feed: one aggregation per step shared by every viewer, deltas after
a full frame, slow viewers reset to a full frame, closing ends every stream."""

from __future__ import annotations

import json

from tessera.console.feed import QUEUE, Feed, event
from tessera.console.frame import Frame


def decode(chunk: bytes) -> tuple[str, Frame]:
    head, data = chunk.decode().strip().split("\n")
    return head.removeprefix("event: "), json.loads(data.removeprefix("data: "))


class Frames:
    """Hands out the given frames in turn, counting the aggregations."""

    def __init__(self, *frames: Frame) -> None:
        self.frames = list(frames)
        self.calls = 0

    async def __call__(self) -> Frame:
        self.calls += 1
        return self.frames.pop(0)


def test_event_encoding() -> None:
    assert event("delta", {"a": 1}) == b'event: delta\ndata: {"a":1}\n\n'


async def test_viewers_share_one_aggregation_and_get_deltas_after_the_full_frame() -> None:
    one = {"zones": {"a": {"players": 1}}}
    two = {"zones": {"a": {"players": 2}, "b": {"players": 0}}}
    produce = Frames(one, two)
    feed = Feed(produce, 1.0)
    await feed.step()
    first, second = feed.subscribe(), feed.subscribe()
    assert feed.viewers == 2
    assert decode(first.get_nowait()) == ("full", one)
    await feed.step()
    assert produce.calls == 2
    change = {"zones": {"set": {"a": {"players": 2}, "b": {"players": 0}}, "del": []}}
    assert decode(first.get_nowait()) == ("delta", change)
    assert decode(second.get_nowait()) == ("full", one)
    assert decode(second.get_nowait()) == ("delta", change)
    feed.unsubscribe(first)
    assert feed.viewers == 1


async def test_a_slow_viewer_is_reset_to_the_full_frame() -> None:
    frames = [{"meta": {"n": i}} for i in range(QUEUE + 2)]
    feed = Feed(Frames(*frames), 1.0)
    await feed.step()
    slow = feed.subscribe()
    for _ in range(QUEUE):
        await feed.step()
    assert slow.qsize() == 1 and decode(slow.get_nowait()) == ("full", frames[QUEUE])
    await feed.step()
    assert decode(slow.get_nowait())[0] == "delta"


async def test_close_ends_every_stream() -> None:
    feed = Feed(Frames({}), 1.0)
    await feed.step()
    viewer = feed.subscribe()
    feed.close()
    assert viewer.get_nowait() == b""
