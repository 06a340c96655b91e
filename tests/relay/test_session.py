"""Session table and connection statistics."""

from __future__ import annotations

import threading

from tessera.relay.session import Session, SessionTable


def make(player: str, address: tuple[str, int] | None = None, last_seen: float = 0.0) -> Session:
    return Session(
        player_id=player,
        transport="udp" if address else "grpc",
        token_id=b"t",
        timeout_s=10.0,
        created=0.0,
        last_seen=last_seen,
        send=lambda _b: None,
        post=lambda _b: None,
        address=address,
    )


def test_one_session_per_player_and_address_index() -> None:
    table = SessionTable()
    first = make("p1", ("127.0.0.1", 1000))
    assert table.add(first) is None
    second = make("p1", ("127.0.0.1", 2000))
    assert table.add(second) is first
    assert table.by_address == {("127.0.0.1", 2000): second}
    assert not table.remove(first)
    table.add(make("p2"))
    assert table.counts() == {"udp": 1, "grpc": 1}
    assert table.remove(second)
    assert len(table) == 1 and table.by_address == {}


def test_idle_sessions() -> None:
    table = SessionTable()
    table.add(make("old", ("127.0.0.1", 1), last_seen=0.0))
    table.add(make("new", ("127.0.0.1", 2), last_seen=5.0))
    table.add(make("stream", last_seen=0.0))  # gRPC: ended by the stream, not a timer
    assert [s.player_id for s in table.idle(now=12.0)] == ["old"]


def test_counts_can_be_read_from_the_metrics_thread_while_sessions_change() -> None:
    """The /metrics server thread counts sessions while the event loop adds and
    removes them: a count never fails with the table changing under it."""
    table = SessionTable()
    stop = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        while not stop.is_set():
            try:
                table.counts()
            except RuntimeError as err:  # dictionary changed size during iteration
                errors.append(err)
                return

    reader = threading.Thread(target=scrape)
    reader.start()
    try:
        for i in range(20_000):
            session = make(f"p{i}", ("127.0.0.1", i))
            table.add(session)
            if i % 2:
                table.remove(session)
    finally:
        stop.set()
        reader.join()
    assert errors == [] and len(table) == 10_000
