"""Adding up the workers' stats lines; splitting bots over processes."""

from __future__ import annotations

from tessera.common.process import ServiceProcess
from tessera.load.report import combine
from tessera.load.swarm import latest_stats, shares


def test_combine_adds_up_workers() -> None:
    a = {
        "bots": 3,
        "connected": 3,
        "connects": 3,
        "disconnects": 1,
        "reasons": {"ZONE_UNAVAILABLE": 1},
        "rtt_ms": [1.0, 2.0, 0.0],
        "pred_p95_m": [0.1, 0.3],
        "bytes_per_s": [100.0, 300.0],
        "bytes_in": 10,
        "bytes_out": 5,
        "phase": "spread",
        "events": {"HIT_DEALT": 4, "DIED": 1},
        "done": True,
    }
    b = {
        "bots": 2,
        "connected": 1,
        "connects": 2,
        "logouts": 1,
        "connect_failures": 1,
        "reasons": {"ZONE_UNAVAILABLE": 2},
        "rtt_ms": [3.0],
        "pred_p95_m": [0.2],
        "bytes_per_s": [200.0],
        "bytes_in": 1,
        "bytes_out": 1,
        "phase": "spread",
        "events": {"HIT_DEALT": 2},
    }
    r = combine([a, b, {}], 3)
    assert (r.bots, r.connected, r.connects, r.disconnects, r.logouts) == (5, 4, 5, 1, 1)
    assert r.connect_failures == 1 and not r.ok
    assert r.disconnect_reasons == {"ZONE_UNAVAILABLE": 3}
    assert r.rtt_ms_p50 == 2.0  # zero (no sample yet) left out
    assert r.prediction_error_p95_m_median == 0.2 and r.prediction_error_p95_m_max == 0.3
    assert r.bytes_per_s_per_bot == 200.0
    assert (r.bytes_in, r.bytes_out, r.workers, r.workers_done) == (11, 6, 3, 1)
    assert "disconnects        1 (ZONE_UNAVAILABLE=3)" in r.text()
    assert r.events == {"HIT_DEALT": 6, "DIED": 1} and r.predicting
    assert "combat events      DIED=1, HIT_DEALT=6" in r.text()
    assert "median 0.200 m" in r.text()


def test_bots_without_prediction_report_none() -> None:
    r = combine([{"bots": 2, "pred_p95_m": []}], 1)
    assert not r.predicting
    assert "prediction error   - (the bots do not predict)" in r.text()


def test_empty_report_is_ok() -> None:
    r = combine([], 0)
    assert r.ok and r.rtt_ms_p99 == 0.0 and r.bytes_per_s_per_bot == 0.0


def test_shares_split_evenly() -> None:
    assert shares(10, 3) == [(0, 4), (4, 3), (7, 3)]
    assert shares(2, 4) == [(0, 1), (1, 1)]
    assert sum(n for _, n in shares(301, 2)) == 301


def test_latest_stats_picks_the_newest_stats_line() -> None:
    proc = ServiceProcess("tessera.load.worker")
    proc.lines.extend(
        [
            '{"msg": "serving"}',
            '{"msg": "stats", "bots": 1}',
            'not json "stats"',
            '{"msg": "stats", "bots": 2}',
            '{"msg": "other"}',
        ]
    )
    assert latest_stats(proc)["bots"] == 2
    assert latest_stats(ServiceProcess("x")) == {}
