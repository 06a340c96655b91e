"""Worker processes' log lines, passed on by their parent. Supervision (restart,
stop with the parent) runs against real processes in
``tests/matchmaking/test_workers.py`` and ``tests/relay/test_failover.py``."""

from __future__ import annotations

import json

from tessera.common.workers import tagged


def test_child_lines_are_tagged_and_its_serving_line_renamed() -> None:
    out: list[str] = []
    line = tagged("relay_worker", "relay worker", 2, out.append)
    line('{"msg":"serving","grpc_port":5000,"metrics_port":9092}\n')
    line('{"msg":"stopping"}\n')
    line("Traceback (most recent call last):\n")
    first, second = (json.loads(text) for text in out[:2])
    assert first == {
        "msg": "relay worker serving",
        "grpc_port": 5000,
        "metrics_port": 9092,
        "relay_worker": 2,
    }
    assert second == {"msg": "stopping", "relay_worker": 2}
    assert out[2] == "Traceback (most recent call last):\n"
