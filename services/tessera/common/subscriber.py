"""A pub/sub subscription read straight off its socket.

redis-py's asyncio pub/sub wakes a task, runs its parser, timeout and health-check
layers and builds a dict for every message: ~230 µs of CPU per message, against
~30–50 µs for the socket read itself (docs/BENCHMARKS.md, "Ghost feed"). A zone
receives a ghost batch from every neighbour every tick, so :class:`Subscriber`
parses the connection's bytes with hiredis in the protocol's own callback and
hands each message to a function there: no task wakes per message.

It takes its address, TLS settings and ACL user and password from the redis-py
client the service already has (a single server's pool, or on a cluster the
master of the channels' slot), so it reaches whatever that client reaches (not
through a redis-py credential provider, which Tessera does not use). It speaks
RESP2 to Redis 6 or later: ``AUTH <user> <password>``, then SUBSCRIBE,
UNSUBSCRIBE and PING.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tessera.common.store import Client, follow_slot

log = logging.getLogger(__name__)

Deliver = Callable[[bytes, bytes], None]
"""Called with ``(channel, data)`` for each message, inside the socket's callback."""

PING_S = 1.0  # a silent subscription is pinged after this long (by default)
DEAD_S = 4.0  # and given up when that PING has no answer after this long
LOG_EVERY_S = 10.0  # a failing handler's traceback, at most this often


class _Protocol(asyncio.Protocol):
    def __init__(self, deliver: Deliver, subscribed: Callable[[bytes], None] | None) -> None:
        self.deliver = deliver
        self.subscribed = subscribed
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.heard = self.loop.time()
        self.failed: Exception | None = None  # why the connection ended
        self.authed: asyncio.Future[None] = self.loop.create_future()
        # Read here: a connection lost with nobody awaiting is no "never retrieved".
        self.authed.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.handler_failed_at = -LOG_EVERY_S

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.heard = self.loop.time()
        try:
            self.reader.feed(data)
            while self.failed is None and (reply := self.reader.gets()) is not False:
                self._reply(reply)
        except hiredis.ProtocolError as exc:
            self._fail(RedisConnectionError(f"pub/sub: bad reply from the server ({exc})"))

    def _reply(self, reply: object) -> None:
        if isinstance(reply, list):
            if len(reply) == 3 and reply[0] == b"message":
                try:
                    self.deliver(reply[1], reply[2])
                except Exception:  # one bad message must not end the subscription
                    if self.loop.time() - self.handler_failed_at >= LOG_EVERY_S:
                        self.handler_failed_at = self.loop.time()
                        log.exception("pub/sub message handler failed (logged once per 10 s)")
            if len(reply) == 3 and reply[0] == b"subscribe" and self.subscribed is not None:
                self.subscribed(reply[1])
            return  # (un)subscribe acknowledgements, PONG
        if isinstance(reply, hiredis.ReplyError):
            self._fail(RedisError(f"pub/sub: {reply}"))
        elif not self.authed.done():
            self.authed.set_result(None)  # +OK to AUTH, or +PONG without it

    def _fail(self, exc: Exception) -> None:
        self.failed = self.failed or exc
        if not self.authed.done():
            self.authed.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"pub/sub connection lost ({exc or 'closed'})"))


class Subscriber:
    """One pub/sub connection; :meth:`open` it, then (un)subscribe and :meth:`check`
    it now and then: it raises once the connection is lost or silent."""

    def __init__(
        self,
        redis: Client,
        deliver: Deliver,
        *,
        timeout_s: float = 2.0,
        ping_s: float = PING_S,
        dead_s: float = DEAD_S,
        subscribed: Callable[[bytes], None] | None = None,
    ) -> None:
        """``subscribed(channel)`` is called when the server has subscribed us to
        ``channel``: from then on every message published on it reaches ``deliver``."""
        self.redis = redis
        self.deliver = deliver
        self.subscribed = subscribed
        self.timeout_s, self.ping_s, self.dead_s = timeout_s, ping_s, dead_s
        self._proto: _Protocol | None = None
        self._pinged = 0.0

    async def open(self, channel: str) -> None:
        """Connect where ``channel`` is served and authenticate."""
        conn: AbstractConnection
        if isinstance(self.redis, RedisCluster):
            await follow_slot(self.redis, channel)  # a fresh slot map after a failover
            node = self.redis.get_node_from_key(channel)  # the master; raises when none
            assert node is not None
            conn = node.connection_class(**node.connection_kwargs)
        else:
            pool = self.redis.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
        self.close()
        self._pinged = 0.0
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._connect(conn)
                assert self._proto is not None
                await self._proto.authed
        except TimeoutError:
            self.close()
            raise RedisTimeoutError(
                f"pub/sub: no answer from {conn} in {self.timeout_s} s"
            ) from None
        except OSError as exc:
            self.close()
            raise RedisConnectionError(f"pub/sub: cannot connect to {conn}: {exc}") from exc
        except BaseException:  # an error, or cancelled: no transport left open
            self.close()
            raise

    async def _connect(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()

        def proto() -> _Protocol:
            return _Protocol(self.deliver, self.subscribed)

        if isinstance(conn, UnixDomainSocketConnection):
            _t, self._proto = await loop.create_unix_connection(proto, conn.path)
        elif isinstance(conn, Connection):
            ssl = conn.ssl_context.get() if isinstance(conn, SSLConnection) else None
            _t, self._proto = await loop.create_connection(proto, conn.host, conn.port, ssl=ssl)
        else:
            raise RedisConnectionError(f"pub/sub: cannot reach a {type(conn).__name__}")
        if conn.password:
            self._send("AUTH", conn.username or "default", conn.password)
        else:
            self._send("PING")

    def subscribe(self, *channels: str) -> None:
        self._send("SUBSCRIBE", *channels)

    def unsubscribe(self, *channels: str) -> None:
        self._send("UNSUBSCRIBE", *channels)

    def check(self) -> None:
        """Raise if the connection ended, or a PING has had no answer for ``dead_s``;
        ping it when it has been silent for ``ping_s``."""
        p = self._proto
        if p is None:
            raise RedisConnectionError("pub/sub: not open")
        if p.failed is not None:
            raise p.failed
        now = p.loop.time()
        if self._pinged > p.heard and now - self._pinged > self.dead_s:
            raise RedisTimeoutError(f"pub/sub: no answer to PING for {now - self._pinged:.1f} s")
        if now - p.heard > self.ping_s and self._pinged <= p.heard:
            self._pinged = now
            self._send("PING")

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None

    def _send(self, *args: str) -> None:
        if self._proto is None or self._proto.transport is None:
            raise RedisConnectionError("pub/sub: not open")
        # hiredis' stub types the argument as a 1-tuple; it takes any tuple
        self._proto.transport.write(hiredis.pack_command(cast(Any, args)))
