"""A network-conditions shim for tests: an in-process asyncio UDP proxy on loopback.

Clients send to the proxy's address instead of the relay's; the proxy forwards
each datagram to the target from one upstream socket per client (so the target
sees one source per client, as through a NAT) and sends the answers back. Each
direction applies its own :class:`Conditions` — seeded random loss, latency with
jitter, duplication and reordering — and counts what it did (:class:`Counters`).
The decision for one datagram is the pure :meth:`Impairment.plan`, so it is
tested without sockets. A direction holds at most ``queue_limit`` datagrams in
flight (more are dropped and counted as ``overflow``); :meth:`NetemProxy.close`
cancels everything in flight and closes every socket.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Address = tuple[str, int]


@dataclass(frozen=True)
class Conditions:
    """What one direction does to datagrams. Probabilities are per datagram;
    delays are milliseconds: each copy waits ``delay_ms`` plus a uniform jitter
    in ``[-jitter_ms, +jitter_ms]`` (never below 0), and a reordered one waits
    ``reorder_ms`` more, so datagrams sent after it overtake it."""

    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_ms: float = 30.0
    queue_limit: int = 4096

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        for name in ("delay_ms", "jitter_ms", "reorder_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")


@dataclass
class Counters:
    """What one direction did: datagrams received, dropped by loss or by a full
    queue, extra copies made, datagrams held back for reordering, copies sent."""

    received: int = 0
    lost: int = 0
    overflow: int = 0
    duplicated: int = 0
    reordered: int = 0
    delivered: int = 0


class Impairment:
    """One direction's conditions, seeded random state and counters."""

    def __init__(self, conditions: Conditions, seed: int) -> None:
        self.conditions = conditions
        self.rng = random.Random(seed)
        self.counters = Counters()

    def plan(self) -> tuple[float, ...]:
        """Delays in seconds, one per copy to send, for the next datagram (empty:
        it is lost). Counts the datagram as received, and what was decided."""
        c, rng, counters = self.conditions, self.rng, self.counters
        counters.received += 1
        if rng.random() < c.loss:
            counters.lost += 1
            return ()
        copies = 1
        if rng.random() < c.duplicate:
            copies = 2
            counters.duplicated += 1
        extra = 0.0
        if rng.random() < c.reorder:
            extra = c.reorder_ms
            counters.reordered += 1
        return tuple(
            max(0.0, c.delay_ms + rng.uniform(-c.jitter_ms, c.jitter_ms) + extra) / 1000.0
            for _ in range(copies)
        )


class _Direction:
    """Schedules the copies :meth:`Impairment.plan` asks for, within the queue limit."""

    def __init__(self, impairment: Impairment) -> None:
        self.impairment = impairment
        self.pending: dict[int, asyncio.TimerHandle] = {}
        self._next = 0

    def forward(self, data: bytes, send: Callable[[bytes], None]) -> None:
        loop = asyncio.get_running_loop()
        for delay in self.impairment.plan():
            if delay == 0.0:  # at once: timers due at the same instant may swap
                self.impairment.counters.delivered += 1
                send(data)
                continue
            if len(self.pending) >= self.impairment.conditions.queue_limit:
                self.impairment.counters.overflow += 1
                continue
            self._next += 1
            self.pending[self._next] = loop.call_later(delay, self._deliver, self._next, data, send)

    def _deliver(self, key: int, data: bytes, send: Callable[[bytes], None]) -> None:
        del self.pending[key]
        self.impairment.counters.delivered += 1
        send(data)

    def cancel(self) -> None:
        for handle in self.pending.values():
            handle.cancel()
        self.pending.clear()


class _Upstream(asyncio.DatagramProtocol):
    """The proxy's socket towards the target for one client."""

    def __init__(self, proxy: NetemProxy, client: Address) -> None:
        self.proxy = proxy
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.proxy._from_target(data, self.client)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data)


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, proxy: NetemProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.proxy._from_client(data, (addr[0], addr[1]))


class NetemProxy:
    """A UDP proxy on ``127.0.0.1`` in front of ``target`` (see the module docstring).

    ``up`` applies to client → target datagrams, ``down`` to target → client;
    each direction draws from its own generator seeded from ``seed``.
    """

    def __init__(
        self,
        target: Address,
        *,
        up: Conditions = Conditions(),
        down: Conditions = Conditions(),
        seed: int = 0,
    ) -> None:
        self.target = target
        self.up = _Direction(Impairment(up, seed * 2))
        self.down = _Direction(Impairment(down, seed * 2 + 1))
        self.upstreams: dict[Address, _Upstream] = {}
        self._listener: asyncio.DatagramTransport | None = None
        self._opening: dict[Address, asyncio.Task[_Upstream]] = {}

    @property
    def counters(self) -> tuple[Counters, Counters]:
        """(client → target, target → client) counters."""
        return self.up.impairment.counters, self.down.impairment.counters

    @property
    def address(self) -> str:
        """``host:port`` clients send to."""
        if self._listener is None:
            raise RuntimeError("the proxy is not started")
        host, port = self._listener.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    async def start(self) -> NetemProxy:
        """Bind the listening socket on a free loopback port."""
        loop = asyncio.get_running_loop()
        self._listener, _ = await loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=("127.0.0.1", 0)
        )
        return self

    def _from_client(self, data: bytes, client: Address) -> None:
        upstream = self.upstreams.get(client)
        if upstream is not None:
            self.up.forward(data, upstream.send)
            return
        opening = self._opening.get(client)
        if opening is None:
            opening = self._opening[client] = asyncio.ensure_future(self._open(client))
        opening.add_done_callback(lambda task: self._opened(task, data))

    def _opened(self, task: asyncio.Task[_Upstream], data: bytes) -> None:
        if not task.cancelled() and task.exception() is None:
            self.up.forward(data, task.result().send)

    async def _open(self, client: Address) -> _Upstream:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_datagram_endpoint(
            lambda: _Upstream(self, client), remote_addr=self.target
        )
        self.upstreams[client] = upstream
        del self._opening[client]
        return upstream

    def _from_target(self, data: bytes, client: Address) -> None:
        listener = self._listener
        if listener is not None and not listener.is_closing():
            self.down.forward(data, lambda packet: listener.sendto(packet, client))

    async def close(self) -> None:
        """Drop everything in flight and close every socket."""
        self.up.cancel()
        self.down.cancel()
        for task in list(self._opening.values()):
            task.cancel()
        for upstream in self.upstreams.values():
            if upstream.transport is not None:
                upstream.transport.close()
        self.upstreams.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        await asyncio.sleep(0)

    async def __aenter__(self) -> NetemProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
