"""Route parsing, the route cache and the relay's own Leaves."""

from __future__ import annotations

import pytest

from tessera.relay.routing import (
    OwnLeaves,
    Route,
    RouteCache,
    parse_route,
    parse_route_change,
)


def test_parse() -> None:
    assert parse_route(b"zone-a|7") == Route("zone-a", 7)
    assert parse_route_change(b"alice|zone-b|8") == ("alice", Route("zone-b", 8), "")
    assert parse_route_change("alice||0") == ("alice", None, "")
    traced = "alice|zone-b|9|00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    assert parse_route_change(traced) == ("alice", Route("zone-b", 9), traced.split("|")[3])
    for bad in ("zone", "|3", "zone|x"):
        with pytest.raises(ValueError):
            parse_route(bad)
    with pytest.raises(ValueError):
        parse_route_change("alice")


def test_cache_newest_epoch_wins() -> None:
    cache = RouteCache()
    assert cache.update("p", Route("a", 2))
    assert not cache.update("p", Route("a", 2))
    assert not cache.update("p", Route("b", 1))
    assert cache.update("p", Route("b", 3))
    assert cache.get("p") == Route("b", 3)
    cache.forget("p")
    assert cache.get("p") is None


def test_own_leaves_are_claimed_once_and_lapse() -> None:
    own = OwnLeaves(ttl_s=5.0)
    assert not own.claim("p", 0.0)  # nothing expected: another connection's removal
    own.expect("p", 0.0)
    own.expect("p", 1.0)
    assert own.claim("p", 2.0) and own.claim("p", 2.0)
    assert not own.claim("p", 2.0)
    own.expect("p", 0.0)
    own.cancel("p")  # the Leave failed
    assert not own.claim("p", 1.0)
    own.expect("p", 0.0)
    assert not own.claim("p", 5.1)  # never published (the zone held no route): lapsed
    own.expect("q", 0.0)
    own.expect("r", 4.0)
    own.prune(6.0)
    assert not own.claim("q", 6.0) and own.claim("r", 6.0)
