"""Tracing benchmark: what the spans of one handoff cost, off and on.

    python bench/tracing.py --json PATH [--seconds S]

One "handoff" is the tracing work ``tessera.zone.border`` and the relay do for
one handoff, with the same calls: the owner's ``handoff`` span (attributes, its
context injected into the PREPARE's and the COMMIT's ``trace_context`` maps and
a Release's dict, an ``ack`` event, the result), the target's ``handoff.prepare``
and ``handoff.adopt`` spans and the relay's ``relay.reroute`` (each extracted
from a message's map). All in one process, so the figure is the CPU the spans
add, not their network path. Configurations:

- ``off``: no tracer provider (the default: the API's no-op spans);
- ``sampled_out``: a provider whose sampler drops everything (``always_off``);
- ``file``: every span written to a JSON-lines file (``OTEL_TRACES_EXPORTER=file``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Tracer

from tessera.common import tracing
from tessera.common.tracing import TraceConfig
from tessera.v1 import zone_pb2


def handoff(tracer: Tracer) -> None:
    """The spans of one handoff, as the zones and the relay make them."""
    root = tracer.start_span(
        "handoff",
        context=Context(),
        kind=SpanKind.PRODUCER,
        attributes={
            "tessera.world": "w",
            "tessera.zone": "a",
            "tessera.handoff.target": "b",
            "tessera.entity_id": 42,
            "tessera.player_id": "p-42",
            "tessera.handoff.epoch": 7,
        },
    )
    prepare, commit = zone_pb2.InboxMessage(), zone_pb2.InboxMessage()
    release: dict[str, str] = {}
    tracing.inject(prepare.trace_context, root)
    consume(tracer, "handoff.prepare", prepare.trace_context)
    root.add_event("ack")
    tracing.inject(commit.trace_context, root)
    tracing.inject(release, root)
    root.set_attribute("tessera.handoff.result", "committed")
    root.end()
    consume(tracer, "handoff.adopt", commit.trace_context)
    consume(tracer, "relay.reroute", release)


def consume(tracer: Tracer, name: str, carrier: Mapping[str, str]) -> None:
    """A receiver's span, only for a message that carries a trace context."""
    if not carrier:
        return
    with tracer.start_as_current_span(
        name,
        context=tracing.extract(carrier),
        kind=SpanKind.CONSUMER,
        attributes={"tessera.zone": "b", "tessera.entity_id": 42},
    ) as span:
        span.set_attribute("tessera.handoff.result", "adopted")


def per_handoff_us(tracer: Tracer, seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(200):
            handoff(tracer)
        done += 200
    return elapsed / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spans.jsonl"
        configs = {
            "off": trace.get_tracer("bench"),  # no provider installed: no-op spans
            "sampled_out": tracing.provider(
                TraceConfig.from_env(
                    "bench",
                    {
                        "OTEL_TRACES_EXPORTER": "file",
                        "TESSERA_TRACE_FILE": str(path),
                        "OTEL_TRACES_SAMPLER": "always_off",
                    },
                ),
                "bench",
            ).get_tracer("bench"),
            "file": tracing.provider(
                TraceConfig.from_env(
                    "bench", {"OTEL_TRACES_EXPORTER": "file", "TESSERA_TRACE_FILE": str(path)}
                ),
                "bench",
            ).get_tracer("bench"),
        }
        print(f"{'configuration':<14} {'us per handoff':>15}")
        for name, tracer in configs.items():
            us = per_handoff_us(tracer, args.seconds)
            results[name] = {"us_per_handoff": round(us, 2)}
            print(f"{name:<14} {us:>15.2f}")
        lines = sum(1 for _ in path.open())
        results["file"]["spans_written"] = lines
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
