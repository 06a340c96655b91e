"""The zone's edge: tessera.v1 messages to the core's plain data and back."""

from __future__ import annotations

from tessera.v1 import zone_pb2
from tessera.zone import messages


def test_player_inputs_become_columns() -> None:
    batch = [
        zone_pb2.PlayerInput(player_id="a", sequence=3, move_x=0.5, actions=4, interp_delay_ms=80),
        zone_pb2.PlayerInput(player_id="b", sequence=9, yaw=-1.0, rtt_ms=40, client_time_ms=7.5),
    ]
    cols = messages.inputs(batch)
    assert cols.players == ["a", "b"] and len(cols) == 2
    assert cols.sequence.tolist() == [3, 9] and cols.actions.tolist() == [4, 0]
    assert cols.move_x.tolist() == [0.5, 0.0] and cols.yaw.tolist() == [0.0, -1.0]
    assert cols.interp_ms.tolist() == [80.0, 0.0] and cols.rtt_ms.tolist() == [0.0, 40.0]
    assert cols.client_time_ms.tolist() == [0.0, 7.5]
    assert len(messages.inputs([])) == 0
