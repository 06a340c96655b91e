"""Client sessions and their connection statistics (RTT, jitter, loss, traffic)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tessera.relay.limiter import ConnectionLimits
from tessera.wire.connection import Connection
from tessera.wire.link import LinkStats


@dataclass(slots=True, eq=False, weakref_slot=True)
class Session:
    """One connected client, whichever transport it uses.

    ``send`` delivers a serialized ServerMessage to the client (sealed into a
    DATA packet for UDP, a stream write for gRPC); ``post`` delivers one that
    must arrive (the reliable channel for UDP; the same stream write for gRPC).
    The UDP senders close over their session, so :meth:`release` drops the
    callbacks when the session ends:
    without that cycle a closed session is freed at once, not at the next full
    garbage collection.
    """

    player_id: str
    transport: str
    token_id: bytes
    timeout_s: float
    created: float
    last_seen: float
    send: Callable[[bytes], None]
    post: Callable[[bytes], None]
    address: tuple[str, int] | None = None
    connection: Connection | None = None
    limits: ConnectionLimits | None = None
    entity_id: int = 0
    zone: str = ""
    epoch: int = 0
    interp_delay_ms: float = 100.0
    last_sent: float = 0.0
    stats: LinkStats = field(default_factory=LinkStats)
    closed: bool = False
    # The last ClientInput messages, replayed to the new zone on a re-route.
    recent_inputs: list[Any] = field(default_factory=list)
    # The serialized Accepted message: nothing is sent to a UDP client before it
    # (it is reliable message 1, sent again at once when the handshake repeats).
    accepted: bytes = b""
    # The serialized GameSchema the client decodes by: Accepted.game, then the
    # schema of each zone it moved to whose module differs (ServerMessage.game).
    game: bytes = b""
    on_close: Callable[[str], None] = field(default=lambda _reason: None)
    # The auth session the connect token was issued in (revocation ends it).
    session_id: str = ""
    # The serialized ServerMessage{resume} with the current credential (UDP) and
    # when it was issued (monotonic); a new one is being issued if rotating; when
    # issuing one last failed (Redis), so the sweep retries it a little later.
    # The credential it replaced (``resume_previous``) still resumes this session
    # here: a client that went silent before the new one reached it holds that one.
    resume: bytes = b""
    resume_id: bytes = b""
    resume_previous: bytes = b""
    resume_issued: float = 0.0
    resume_failed: float = 0.0
    rotating: bool = False
    # Told to MOVE once because the relay had not heard it (gateway.UNHEARD_S).
    told_unheard: bool = False

    def release(self) -> None:
        """Forget the callbacks (and what they hold) once the session has ended."""
        self.send = self.post = _ended
        self.on_close = _ended

    @property
    def loss(self) -> float:
        return 0.0 if self.connection is None else self.connection.channel.window.loss

    def idle_s(self, now: float) -> float:
        return max(0.0, now - self.last_seen)


def _ended(_value: object) -> None:
    """A closed session's send / on_close: does nothing."""


class SessionTable:
    """Sessions indexed by player and, for UDP, by source address.

    A player has at most one session: a new one replaces the old, which the
    caller closes.
    """

    def __init__(self) -> None:
        self.by_player: dict[str, Session] = {}
        self.by_address: dict[tuple[str, int], Session] = {}

    def __len__(self) -> int:
        return len(self.by_player)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self.by_player.values()))

    def add(self, session: Session) -> Session | None:
        """Insert ``session``; return the player's previous session, if any."""
        old = self.by_player.get(session.player_id)
        if old is not None:
            self._unindex(old)
        self.by_player[session.player_id] = session
        if session.address is not None:
            self.by_address[session.address] = session
        return old

    def remove(self, session: Session) -> bool:
        """Remove ``session`` if it is the player's current one."""
        if self.by_player.get(session.player_id) is not session:
            return False
        self._unindex(session)
        del self.by_player[session.player_id]
        return True

    def _unindex(self, session: Session) -> None:
        if session.address is not None and self.by_address.get(session.address) is session:
            del self.by_address[session.address]

    def counts(self) -> dict[str, int]:
        """Sessions by transport. Read by the /metrics thread while the loop changes
        the table: it counts over a copy (``list`` of a dict's values allocates
        nothing while it copies, so no collection hands the GIL over mid-copy;
        iterating the view itself would fail if the table changed)."""
        counts: dict[str, int] = {}
        for session in list(self.by_player.values()):
            counts[session.transport] = counts.get(session.transport, 0) + 1
        return counts

    def idle(self, now: float) -> list[Session]:
        """UDP sessions silent for longer than their timeout (a gRPC stream's end,
        or its HTTP/2 keep-alive failing, is what ends a Play session)."""
        return [
            s
            for s in self.by_player.values()
            if s.transport == "udp" and now - s.last_seen > s.timeout_s
        ]
