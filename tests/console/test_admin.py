"""The drain-target rule and the player id check of the console's admin actions."""

from __future__ import annotations

import pytest

from tessera.console.admin import (
    MAX_BAN_DURATION_S,
    BanOrder,
    Refused,
    check_ban,
    check_player,
    drain_target,
)
from tessera.console.frame import ZoneRow
from tessera.wire.geometry import Rect

RECTS = {
    "a": Rect(0, 0, 500, 500),
    "b": Rect(500, 0, 1000, 500),
    "c": Rect(0, 500, 500, 1000),
    "d": Rect(500, 500, 700, 1000),  # touches a's corner, b's edge partly
}


def row(name: str, players: int = 0, state: str = "ACTIVE", instance: str = "") -> ZoneRow:
    return ZoneRow(
        name=name,
        state=state,
        bounds=RECTS.get(name),
        players=players,
        tick_p50_ms=0,
        tick_p99_ms=0,
        overload_level=0,
        handoffs_received=0,
        drain_remaining=0,
        updated_at_ms=0,
        instance=instance,
    )


def test_the_quietest_neighbour_sharing_a_full_edge_takes_the_zone() -> None:
    zones = [row("a", 5), row("b", 9), row("c", 2), row("d", 0)]
    assert drain_target("a", zones, RECTS) == "c"  # d shares no full edge with a
    zones = [row("a", 5), row("b", 2), row("c", 2), row("d", 0)]
    assert drain_target("a", zones, RECTS) == "b"  # ties by name


def test_neighbours_that_are_not_active_or_not_alive_do_not_qualify() -> None:
    zones = [row("a"), row("b", state="DRAINING"), row("d")]  # c has no heartbeat
    with pytest.raises(Refused, match="no active neighbour") as err:
        drain_target("a", zones, RECTS)
    assert err.value.status == 409


@pytest.mark.parametrize(
    ("zones", "status", "message"),
    [
        ([row("b")], 404, "no live heartbeat"),
        ([row("a", instance="m1"), row("b")], 409, "instance zone"),
        ([row("a", state="STANDBY"), row("b")], 409, "standby, not an active zone"),
        ([row("a", state="DRAINING"), row("b")], 409, "draining"),
    ],
)
def test_zones_the_console_does_not_drain(zones: list[ZoneRow], status: int, message: str) -> None:
    with pytest.raises(Refused, match=message) as err:
        drain_target("a", zones, RECTS)
    assert err.value.status == status


def test_a_zone_missing_from_the_map_is_refused() -> None:
    with pytest.raises(Refused, match="not an active zone of the map"):
        drain_target("a", [row("a"), row("b")], {"b": RECTS["b"]})


def test_check_player() -> None:
    assert check_player("p-1@x.y:z_2") == "p-1@x.y:z_2"
    for bad in ("", "a b", "x" * 129, "é", "<script>"):
        with pytest.raises(Refused) as err:
            check_player(bad)
        assert err.value.status == 400


def test_check_ban() -> None:
    assert check_ban("acc-1", {"reason": " spam "}, 1000.5) == BanOrder("acc-1", "spam", 0)
    assert check_ban("acc-1", {"reason": "x", "duration_s": 3600}, 1000.5) == BanOrder(
        "acc-1", "x", 4600
    )
    assert check_ban("a", {"reason": "x", "duration_s": MAX_BAN_DURATION_S}, 0).until == (
        MAX_BAN_DURATION_S
    )


@pytest.mark.parametrize(
    ("account", "body", "message"),
    [
        ("a b", {"reason": "x"}, "account id must be"),
        ("a" * 129, {"reason": "x"}, "account id must be"),
        ("a", {}, "reason must be"),
        ("a", {"reason": "  "}, "reason must be"),
        ("a", {"reason": "x" * 501}, "reason must be"),
        ("a", {"reason": 5}, "reason must be"),
        ("a", {"reason": "x", "duration_s": -1}, "duration_s must be"),
        ("a", {"reason": "x", "duration_s": 1.5}, "duration_s must be"),
        ("a", {"reason": "x", "duration_s": True}, "duration_s must be"),
        ("a", {"reason": "x", "duration_s": "60"}, "duration_s must be"),
        ("a", {"reason": "x", "duration_s": MAX_BAN_DURATION_S + 1}, "duration_s must be"),
    ],
)
def test_bad_ban_forms_are_refused(account: str, body: dict[str, object], message: str) -> None:
    with pytest.raises(Refused) as info:
        check_ban(account, body, 0.0)
    assert info.value.status == 400 and str(info.value).startswith(message)
