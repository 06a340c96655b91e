"""The network shim: seeded decisions per datagram (loss, delay bounds, duplicates,
reordering), and a real loopback proxy in front of a UDP echo server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tessera.harness.netem import Conditions, Impairment, NetemProxy

N = 20_000


def plans(conditions: Conditions, seed: int = 7, n: int = N) -> list[tuple[float, ...]]:
    impairment = Impairment(conditions, seed)
    return [impairment.plan() for _ in range(n)]


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.3, 1.0])
def test_a_seeded_run_drops_about_p_of_the_datagrams(loss: float) -> None:
    impairment = Impairment(Conditions(loss=loss), seed=3)
    lost = sum(not impairment.plan() for _ in range(N))
    assert abs(lost / N - loss) < 0.01
    assert impairment.counters.lost == lost
    assert impairment.counters.received == N


def test_the_same_seed_makes_the_same_decisions() -> None:
    c = Conditions(loss=0.1, delay_ms=50, jitter_ms=10, duplicate=0.1, reorder=0.1)
    assert plans(c, seed=11, n=500) == plans(c, seed=11, n=500)
    assert plans(c, seed=11, n=500) != plans(c, seed=12, n=500)


def test_delays_stay_within_delay_plus_minus_jitter() -> None:
    delays = [d for plan in plans(Conditions(delay_ms=100, jitter_ms=20)) for d in plan]
    assert len(delays) == N
    assert min(delays) >= 0.080 and max(delays) <= 0.120
    # The jitter is spread over the whole range, not a constant.
    assert min(delays) < 0.082 and max(delays) > 0.118


def test_jitter_never_makes_a_negative_delay() -> None:
    delays = [d for plan in plans(Conditions(delay_ms=5, jitter_ms=20)) for d in plan]
    assert min(delays) == 0.0 and max(delays) <= 0.025


def test_duplicates_happen_at_the_configured_rate() -> None:
    impairment = Impairment(Conditions(duplicate=0.2, delay_ms=10), seed=5)
    copies = [len(impairment.plan()) for _ in range(N)]
    assert set(copies) == {1, 2}
    assert abs(copies.count(2) / N - 0.2) < 0.01
    assert impairment.counters.duplicated == copies.count(2)


def test_reordered_datagrams_wait_reorder_ms_longer() -> None:
    impairment = Impairment(Conditions(reorder=0.25, delay_ms=10, reorder_ms=30), seed=9)
    delays = [impairment.plan()[0] for _ in range(N)]
    held = [d for d in delays if d > 0.011]
    assert abs(len(held) / N - 0.25) < 0.01
    assert set(held) == {0.040} and impairment.counters.reordered == len(held)


@pytest.mark.parametrize(
    "bad",
    [
        {"loss": -0.1},
        {"loss": 1.5},
        {"duplicate": 2.0},
        {"reorder": -1.0},
        {"delay_ms": -1.0},
        {"jitter_ms": -5.0},
        {"queue_limit": 0},
    ],
)
def test_bad_conditions_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Conditions(**bad)


class Echo(asyncio.DatagramProtocol):
    """A UDP server answering every datagram with the same bytes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


class Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)


async def echo_server() -> tuple[asyncio.DatagramTransport, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[:2]


async def client_of(proxy: NetemProxy) -> tuple[asyncio.DatagramTransport, Collect]:
    host, port = proxy.address.split(":")
    loop = asyncio.get_running_loop()
    transport, collect = await loop.create_datagram_endpoint(Collect, remote_addr=(host, int(port)))
    return transport, collect


async def wait_until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_clean_proxy_forwards_both_ways_in_order() -> None:
    server, target = await echo_server()
    async with NetemProxy(target) as proxy:
        client, got = await client_of(proxy)
        for i in range(50):
            client.sendto(b"%d" % i)
            await asyncio.sleep(0.001)
        await wait_until(lambda: len(got.received) == 50)
        assert got.received == [b"%d" % i for i in range(50)]
        up, down = proxy.counters
        assert (up.received, up.delivered, down.received, down.delivered) == (50, 50, 50, 50)
        client.close()
    server.close()


async def test_each_client_gets_its_own_upstream_source() -> None:
    server, target = await echo_server()
    async with NetemProxy(target) as proxy:
        (a, got_a), (b, got_b) = await client_of(proxy), await client_of(proxy)
        a.sendto(b"from a")
        b.sendto(b"from b")
        await wait_until(lambda: got_a.received and got_b.received)
        assert got_a.received == [b"from a"] and got_b.received == [b"from b"]
        assert len(proxy.upstreams) == 2
        a.close()
        b.close()
    server.close()


async def test_loss_duplication_and_delay_on_a_real_socket() -> None:
    server, target = await echo_server()
    up = Conditions(loss=0.2, duplicate=0.2, delay_ms=20, jitter_ms=10)
    async with NetemProxy(target, up=up, seed=1) as proxy:
        client, got = await client_of(proxy)
        for i in range(200):
            client.sendto(b"%d" % i)
        counters, _ = proxy.counters
        await wait_until(lambda: counters.received == 200 and not proxy.up.pending)
        await wait_until(lambda: len(got.received) == counters.delivered)
        assert counters.lost > 0 and counters.duplicated > 0
        assert counters.delivered == 200 - counters.lost + counters.duplicated
        assert len(set(got.received)) == 200 - counters.lost
        client.close()
    server.close()


async def test_reordering_delivers_later_datagrams_first() -> None:
    server, target = await echo_server()
    async with NetemProxy(target, up=Conditions(reorder=0.3, reorder_ms=50), seed=2) as proxy:
        client, got = await client_of(proxy)
        for i in range(100):
            client.sendto(b"%d" % i)
            await asyncio.sleep(0.002)
        await wait_until(lambda: len(got.received) == 100)
        order = [int(x) for x in got.received]
        assert sorted(order) == list(range(100))
        assert order != sorted(order)
        assert proxy.counters[0].reordered > 0
        client.close()
    server.close()


async def test_a_full_queue_drops_and_counts_overflow() -> None:
    server, target = await echo_server()
    up = Conditions(delay_ms=10_000, queue_limit=10)
    async with NetemProxy(target, up=up) as proxy:
        client, _ = await client_of(proxy)
        for i in range(30):
            client.sendto(b"%d" % i)
        counters, _ = proxy.counters
        await wait_until(lambda: counters.received == 30)
        assert counters.overflow == 20 and len(proxy.up.pending) == 10
        client.close()
    server.close()


async def test_close_cancels_what_is_in_flight_and_closes_the_sockets() -> None:
    server, target = await echo_server()
    proxy = await NetemProxy(target, up=Conditions(delay_ms=5_000)).start()
    client, got = await client_of(proxy)
    client.sendto(b"never")
    await wait_until(lambda: len(proxy.up.pending) == 1)
    upstream = next(iter(proxy.upstreams.values()))
    await proxy.close()
    assert not proxy.up.pending and not proxy.upstreams
    assert upstream.transport is not None and upstream.transport.is_closing()
    with pytest.raises(RuntimeError):
        _ = proxy.address
    await asyncio.sleep(0.05)
    assert got.received == []
    client.close()
    server.close()
