"""One end of a protocol-v2 connection: the AEAD channel, the reliable ordered
channel, fragmentation and the RTT echo, over datagrams the caller sends.

The relay and the client SDK both drive a :class:`Connection`: ``send`` (an
unreliable message, fragmented when it does not fit one datagram) and
``send_reliable`` return the datagrams to send now; ``receive`` turns a datagram
into the messages to act on, in order; ``poll`` returns what is due by time
(retransmissions, an ack that found nothing to ride on) and ``deadline`` says
when to poll next. Pure: times are arguments (monotonic seconds), nothing is sent
here. docs/protocol/udp.md and docs/protocol/reliable.md describe the format.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from tessera.wire import fragment, packet
from tessera.wire.reliable import ACK_DELAY_S, ReliableReceiver, ReliableSender, WindowFull

__all__ = ["Connection", "Received", "Tally", "WindowFull", "clock_ms", "rtt_sample_ms"]

_CLOCK_MASK = 0xFFFFFFFF
_HOLD_MAX_MS = 0xFFFF
# An echo older than this is no RTT sample (a clock wrap, or a stale packet).
_RTT_MAX_MS = 60_000


def clock_ms(now: float) -> int:
    """The wire clock: the sender's monotonic clock in whole ms, modulo 2**32."""
    return int(now * 1000.0) & _CLOCK_MASK


def rtt_sample_ms(now_ms: int, echo_ms: int, hold_ms: int) -> float | None:
    """The RTT (ms) an echo gives when it arrives at wire clock ``now_ms``: the
    clock's advance since ``echo_ms`` (modulo 2**32) less the peer's ``hold_ms``;
    None when that is negative, at least _RTT_MAX_MS, or the hold saturated."""
    sample = ((now_ms - echo_ms) & _CLOCK_MASK) - hold_ms
    if 0 <= sample < _RTT_MAX_MS and hold_ms < _HOLD_MAX_MS:
        return float(sample)
    return None


@dataclass
class Tally:
    """Counts several connections may share (the relay keeps one for all)."""

    retransmissions: int = 0
    drops: Counter[str] = field(default_factory=Counter)


class Received(NamedTuple):
    """What one datagram brought: ``messages`` in delivery order, each with whether
    it came on the reliable channel; an RTT sample (ms) if it echoed our clock."""

    messages: list[tuple[bytes, bool]]
    rtt_ms: float | None


class Connection:
    """See the module docstring. ``tally`` receives fragment and reliable drops
    (by reason) and retransmission counts."""

    __slots__ = (
        "channel",
        "group",
        "peer_time",
        "reassembler",
        "receiver",
        "sender",
        "tally",
    )

    def __init__(self, send_key: bytes, recv_key: bytes, tally: Tally | None = None) -> None:
        self.channel = packet.Channel(send_key, recv_key)
        self.sender = ReliableSender()
        self.receiver = ReliableReceiver()
        self.tally = Tally() if tally is None else tally
        self.reassembler = fragment.Reassembler(self.tally.drops)
        self.group = 0
        # The peer's clock from its latest packet and when it arrived, until echoed.
        self.peer_time: tuple[int, float] | None = None

    # -- sending ----------------------------------------------------------

    def _seal(self, frames: list[bytes], now: float) -> bytes:
        echo = None
        if self.peer_time is not None:
            peer_ms, arrived = self.peer_time
            hold = min(_HOLD_MAX_MS, max(0, round((now - arrived) * 1000.0)))
            echo = (peer_ms, hold)
            self.peer_time = None
        ack = None
        if self.receiver.ack_owed_since is not None:
            ack = self.receiver.ack_fields()
            self.receiver.ack_owed_since = None
        return self.channel.seal(packet.encode_contents(clock_ms(now), echo, ack, frames))

    def send(self, message: bytes, now: float) -> list[bytes]:
        """The datagrams of an unreliable message (one, or its fragments); an empty
        message is a keep-alive (a packet without frames)."""
        if not message:
            return [self._seal([], now)]
        if len(message) <= packet.MAX_MESSAGE:
            return [self._seal([packet.message_frame(message)], now)]
        chunks = fragment.split(message, packet.FRAGMENT_CHUNK)
        self.group = (self.group + 1) & 0xFFFF
        count = len(chunks)
        return [
            self._seal([packet.fragment_frame(self.group, i, count, chunk)], now)
            for i, chunk in enumerate(chunks)
        ]

    def send_reliable(self, message: bytes, now: float) -> list[bytes]:
        """The datagram of a reliable message (kept for retransmission until acked);
        WindowFull if the window is full, ValueError if it exceeds MAX_RELIABLE."""
        if len(message) > packet.MAX_RELIABLE:
            raise ValueError(f"reliable message of {len(message)} bytes exceeds one datagram")
        sequence = self.sender.push(message, now)
        return [self._seal([packet.reliable_frame(sequence, message)], now)]

    def poll(self, now: float) -> list[bytes]:
        """What is due at ``now``: retransmissions (packed several to a datagram),
        else an owed ack alone once it has waited ACK_DELAY_S."""
        due = self.sender.due(now)
        self.tally.retransmissions += len(due)
        out: list[bytes] = []
        frames: list[bytes] = []
        room = packet.FRAME_BUDGET
        for sequence, message in due:
            frame = packet.reliable_frame(sequence, message)
            if len(frame) > room:
                out.append(self._seal(frames, now))
                frames, room = [], packet.FRAME_BUDGET
            frames.append(frame)
            room -= len(frame)
        if frames:
            out.append(self._seal(frames, now))
        elif self.receiver.ack_due(now):
            out.append(self._seal([], now))
        self.reassembler.expire(now)
        return out

    def deadline(self) -> float | None:
        """When :meth:`poll` has something to do next (None: nothing pending)."""
        owed = self.receiver.ack_owed_since
        times = [self.sender.next_due(), None if owed is None else owed + ACK_DELAY_S]
        return min((t for t in times if t is not None), default=None)

    def resend(self, sequence: int, now: float) -> list[bytes]:
        """Retransmit reliable ``sequence`` now if it is still unacknowledged."""
        self.sender.resend_now(sequence, now)
        return self.poll(now)

    @property
    def unacked(self) -> int:
        return len(self.sender.unacked)

    # -- receiving --------------------------------------------------------

    def receive(self, datagram: bytes, now: float) -> Received:
        """Open a DATA datagram and deliver what it carries; PacketError if it is
        not an authentic, fresh, well-formed packet (then nothing changed)."""
        plain = self.channel.open(datagram)
        contents = packet.decode_contents(plain)
        self.reassembler.expire(now)
        self.peer_time = (contents.time_ms, now)
        rtt_ms = None
        if contents.echo is not None:
            rtt_ms = rtt_sample_ms(clock_ms(now), *contents.echo)
            if rtt_ms is not None:
                self.sender.rtt_sample(rtt_ms / 1000.0)
        if contents.ack is not None:
            self.sender.acknowledge(*contents.ack)
        messages: list[tuple[bytes, bool]] = []
        for frame in contents.frames:
            if frame.kind == packet.MESSAGE:
                messages.append((frame.data, False))
            elif frame.kind == packet.RELIABLE:
                before = self.receiver.refused
                delivered = self.receiver.receive(frame.sequence, frame.data, now)
                if self.receiver.refused != before:
                    self.tally.drops["reliable_ahead"] += 1
                messages.extend((message, True) for message in delivered)
            else:
                whole = self.reassembler.add(
                    frame.group, frame.piece, frame.pieces, frame.data, now
                )
                if whole is not None:
                    messages.append((whole, False))
        return Received(messages, rtt_ms)
