"""Session table and connection statistics."""

from __future__ import annotations

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
