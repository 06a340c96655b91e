"""bench/relay.py's reading of the relay's /metrics (histograms by label, the
garbage collections and the mean link batch between two scrapes: pure parsing)
and of Linux's schedstat (run-queue waits between two reads)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_relay", ROOT / "bench" / "relay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_relay"] = module
    spec.loader.exec_module(module)
    return module


bench = _load()
GC = "tessera_relay_gc_pause_seconds"


def gc_scrape(counts: dict[str, tuple[list[int], float]]) -> list[str]:
    """Exposition lines of GC_PAUSE: per generation, counts per bucket (0.001,
    0.01, +Inf, not cumulative) and the sum in seconds."""
    lines = ["# TYPE tessera_relay_gc_pause_seconds histogram"]
    for generation, (per_bucket, total) in counts.items():
        running = 0
        for le, n in zip(("0.001", "0.01", "+Inf"), per_bucket, strict=True):
            running += n
            lines.append(f'{GC}_bucket{{generation="{generation}",le="{le}"}} {running}.0')
        lines.append(f'{GC}_count{{generation="{generation}"}} {running}.0')
        lines.append(f'{GC}_sum{{generation="{generation}"}} {total}')
    return lines


def test_gc_pauses_between_two_scrapes() -> None:
    before = gc_scrape({"0": ([5, 0, 0], 0.002), "1": ([1, 0, 0], 0.0005), "2": ([0, 0, 0], 0)})
    after = gc_scrape({"0": ([9, 2, 0], 0.0142), "1": ([1, 0, 0], 0.0005), "2": ([0, 0, 1], 0.3)})
    assert bench.gc_pauses(before, after) == {
        "0": {"collections": 6, "total_ms": 12.2, "longest_ms_at_most": 10.0},
        "1": {"collections": 0, "total_ms": 0.0, "longest_ms_at_most": 0.0},
        "2": {"collections": 1, "total_ms": 300.0, "longest_ms_at_most": None},
    }


def test_a_relay_without_the_metric_reports_no_collections() -> None:
    """An older relay (no GC_PAUSE): zeros, not an error."""
    none = {"collections": 0, "total_ms": 0.0, "longest_ms_at_most": 0.0}
    assert bench.gc_pauses(["x 1"], ["x 2"]) == {"0": none, "1": none, "2": none}


def test_histogram_buckets_by_label_or_summed() -> None:
    lines = [
        'tessera_relay_added_latency_seconds_bucket{le="0.001",path="up"} 3.0',
        'tessera_relay_added_latency_seconds_bucket{le="+Inf",path="up"} 4.0',
        'tessera_relay_added_latency_seconds_bucket{le="0.001",path="down"} 10.0',
        'tessera_relay_added_latency_seconds_bucket{le="+Inf",path="down"} 10.0',
        'tessera_relay_added_latency_seconds_count{path="down"} 10.0',
    ]
    name = "tessera_relay_added_latency_seconds"
    assert bench.histogram_buckets(lines, name, 'path="up"') == {0.001: 3.0, float("inf"): 4.0}
    assert bench.histogram_buckets(lines, name) == {0.001: 13.0, float("inf"): 14.0}


def batch_scrape(count: int, total: int) -> list[str]:
    name = "tessera_relay_link_batch_snapshots"
    return [
        f'{name}_bucket{{le="32.0"}} {count}.0',
        f'{name}_bucket{{le="+Inf"}} {count}.0',
        f"{name}_count {count}.0",
        f"{name}_sum {total}.0",
    ]


def test_mean_link_batch_between_two_scrapes() -> None:
    assert bench.batch_mean(batch_scrape(10, 320), batch_scrape(14, 1320)) == 250.0
    # No batch in the window, or a relay without the metric: no mean.
    assert bench.batch_mean(batch_scrape(3, 9), batch_scrape(3, 9)) is None
    assert bench.batch_mean(["x 1"], ["x 2"]) is None


def test_run_queue_between_two_reads() -> None:
    before = {"7": (1.0, 0.5, 10), "8": (0.2, 0.1, 3)}
    # Thread 9 started in the window; thread 8 ended (its last figures are lost).
    after = {"7": (3.0, 4.5, 30), "9": (0.5, 0.25, 5)}
    assert bench.run_queue(7, before, after) == {
        "threads": 2,
        "main_run_s": 2.0,
        "main_wait_s": 4.0,
        "main_slices": 20,
        "main_wait_ms_per_slice": 200.0,
        "all_run_s": 2.5,
        "all_wait_s": 4.25,
    }


def test_schedstat_reads_every_thread_of_a_process() -> None:
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass
        stats = bench.schedstat(os.getpid())
        assert str(threading.get_native_id()) in stats
        assert str(worker.native_id) in stats
        run_s, wait_s, slices = stats[str(threading.get_native_id())]
        assert run_s >= 0.04 and wait_s >= 0.0 and slices >= 1
    finally:
        stop.set()
        worker.join()


@pytest.mark.parametrize("text", ["NOEQUALS", "=value"])
def test_relay_env_needs_a_name_and_a_value(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        bench.env_item(text)


def test_relay_env_keeps_everything_after_the_first_equals() -> None:
    assert bench.env_item("A=b=c") == ("A", "b=c")
    assert bench.env_item("A=") == ("A", "")


def test_counters_by_label_are_summed_over_workers() -> None:
    """Two workers' scrapes, concatenated: one total per label value."""
    lines = [
        'tessera_relay_packets_total{direction="in"} 10.0',
        'tessera_relay_packets_total{direction="out"} 7.0',
        "tessera_relay_packets_created 1.7e9",
        'tessera_relay_packets_total{direction="in"} 5.0',
        'tessera_relay_bytes_total{direction="in"} 900.0',
    ]
    assert bench.counter_by_label(lines, "tessera_relay_packets_total") == {"in": 15.0, "out": 7.0}
    assert bench.counter_by_label(lines, "tessera_relay_drops_total") == {}
