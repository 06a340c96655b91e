"""Tracing set-up: off by default, the OTEL_* variables checked, the file exporter,
trace context in carriers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

from tessera.common import tracing
from tessera.common.config import ConfigError
from tessera.common.tracing import TraceConfig


def file_provider(path: Path, **env: str) -> TracerProvider:
    config = TraceConfig.from_env(
        "zone", {"OTEL_TRACES_EXPORTER": "file", "TESSERA_TRACE_FILE": str(path), **env}
    )
    return tracing.provider(config, "zone")


def spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_off_unless_an_exporter_is_named() -> None:
    for env in ({}, {"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_SERVICE_NAME": "x"}):
        assert TraceConfig.from_env("zone", env).exporters == ()
    disabled = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}
    assert TraceConfig.from_env("zone", disabled).exporters == ()
    tracing.setup("zone", {})
    # No provider installed: the API's no-op spans, nothing to propagate.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with tracing.tracer.start_as_current_span("x") as span:
        assert not span.is_recording()
        assert tracing.metadata() == ()


def test_defaults_and_choices() -> None:
    config = TraceConfig.from_env(
        "relay",
        {
            "OTEL_TRACES_EXPORTER": "otlp, file",
            "TESSERA_TRACE_FILE": "/tmp/x",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        },
    )
    assert config.exporters == ("otlp", "file")
    assert config.service_name == "tessera-relay"
    assert config.endpoint == "http://collector:4317" and config.ratio == 0.25
    assert "TraceIdRatioBased{0.25}" in tracing.sampler(config).get_description()
    named = TraceConfig.from_env("relay", {"OTEL_SERVICE_NAME": "edge"})
    assert named.service_name == "edge" and named.sampler == "parentbased_always_on"


@pytest.mark.parametrize(
    ("variable", "value", "extra"),
    [
        ("OTEL_TRACES_EXPORTER", "jaeger", {}),
        ("OTEL_TRACES_EXPORTER", "otlp,zipkin", {}),
        ("OTEL_SDK_DISABLED", "maybe", {}),
        ("OTEL_TRACES_SAMPLER", "sometimes", {}),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", {"OTEL_TRACES_SAMPLER": "traceidratio"}),
        ("OTEL_TRACES_SAMPLER_ARG", "half", {"OTEL_TRACES_SAMPLER": "traceidratio"}),
        ("TESSERA_TRACE_FILE", "", {"OTEL_TRACES_EXPORTER": "file"}),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317", {"OTEL_TRACES_EXPORTER": "otlp"}),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://:4317", {"OTEL_TRACES_EXPORTER": "otlp"}),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:99999", {"OTEL_TRACES_EXPORTER": "otlp"}),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", {"OTEL_TRACES_EXPORTER": "otlp"}),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, extra: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as err:
        TraceConfig.from_env("zone", {**extra, variable: value})
    assert err.value.variable == variable
    assert "expected" in str(err.value)


def test_unwritable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TESSERA_TRACE_FILE"):
        file_provider(tmp_path / "missing" / "spans.jsonl")


def test_a_service_with_a_bad_variable_exits_2_with_its_name() -> None:
    env = {"OTEL_TRACES_EXPORTER": "jaeger", "TESSERA_GRPC_PORT": "0", "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "tessera.relay"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "OTEL_TRACES_EXPORTER='jaeger' is invalid" in done.stderr


def test_file_exporter_writes_one_json_line_per_span(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    provider = file_provider(path, OTEL_SERVICE_NAME="zone-a")
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("outer") as outer:
        with tracer.start_as_current_span("inner", attributes={"tessera.zone": "a"}):
            pass
        carrier: dict[str, str] = {}
        tracing.inject(carrier)
    provider.shutdown()
    inner, root = spans(path)
    assert (inner["name"], root["name"]) == ("inner", "outer")
    assert inner["parent_id"] == root["context"]["span_id"]
    assert inner["context"]["trace_id"] == root["context"]["trace_id"]
    assert inner["attributes"] == {"tessera.zone": "a"}
    resource = root["resource"]["attributes"]
    assert resource["service.name"] == "zone-a" and resource["tessera.component"] == "zone"
    assert resource["process.pid"] > 0 and resource["service.instance.id"].endswith(
        f":{resource['process.pid']}"
    )
    # The carrier holds the outer span's context, W3C form.
    parent = trace.get_current_span(tracing.extract(carrier)).get_span_context()
    assert parent.span_id == outer.get_span_context().span_id and parent.is_remote
    assert carrier["traceparent"].split("-")[2] == root["context"]["span_id"][2:]


def test_sampled_out_spans_are_not_written(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    provider = file_provider(path, OTEL_TRACES_SAMPLER="always_off")
    with provider.get_tracer("test").start_as_current_span("dropped") as span:
        assert not span.is_recording()
    provider.shutdown()
    assert path.read_text() == ""


def test_extract_of_an_empty_carrier_has_no_parent() -> None:
    assert not trace.get_current_span(tracing.extract({})).get_span_context().is_valid


def test_untraced_messages_and_rpcs_make_no_spans() -> None:
    with tracing.continuing("x", {}, {"tessera.zone": "a"}) as span:
        assert span is trace.INVALID_SPAN
    # Binary metadata (``-bin`` keys) is left out of the carrier, not an error.
    with tracing.serving("y", [("tessera-error-bin", b"\x00"), ("k", "v")], {}) as span:
        assert not span.is_recording()
    with tracing.serving("z", None, {}) as span:
        assert not span.is_recording()


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver on a loopback port: what a collector is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_otlp_exports_to_a_collector_over_grpc() -> None:
    collector = Collector()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        }
        provider = tracing.provider(TraceConfig.from_env("relay", env), "relay")
        with provider.get_tracer("test").start_as_current_span("exported"):
            pass
        provider.shutdown()  # flushes the batch
    finally:
        server.stop(None)
    (resource_spans,) = [rs for r in collector.requests for rs in r.resource_spans]
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "tessera-relay"
    assert [s.name for ss in resource_spans.scope_spans for s in ss.spans] == ["exported"]


async def test_a_detached_task_is_outside_the_current_trace() -> None:
    parent = trace.NonRecordingSpan(
        trace.SpanContext(trace_id=1, span_id=2, is_remote=False, trace_flags=trace.TraceFlags(1))
    )
    seen: list[tuple[tuple[str, str], ...]] = []

    async def later() -> None:
        seen.append(tracing.metadata())

    with trace.use_span(parent):
        await asyncio.create_task(later())
        with tracing.detached():
            task = asyncio.create_task(later())
        assert trace.get_current_span() is parent
    await task
    inherited, detached = seen
    assert dict(inherited)["traceparent"].split("-")[2] == f"{2:016x}"
    assert detached == ()
