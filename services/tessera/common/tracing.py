"""Traces with OpenTelemetry, set up from the standard ``OTEL_*`` variables.

Off unless ``OTEL_TRACES_EXPORTER`` names an exporter: then no tracer provider is
installed and every span is the API's no-op span. Exporters: ``otlp`` (gRPC to a
collector, batched) and ``file`` (one JSON object per span and line, appended to
``TESSERA_TRACE_FILE`` as each span ends; for tests and local use). Trace context
crosses processes in W3C ``traceparent`` form: gRPC metadata, and string maps
inside the messages that travel through Redis or a ZoneLink (:func:`inject`,
:func:`extract`). docs/OPERATIONS.md, "Tracing".
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.util.types import Attributes

from tessera.common.config import ConfigError

EXPORTERS = ("none", "otlp", "file")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
FILE_VARIABLE = "TESSERA_TRACE_FILE"

tracer = trace.get_tracer("tessera")


@dataclass(frozen=True)
class TraceConfig:
    """The tracing settings, validated; ``exporters`` empty means tracing is off."""

    service_name: str
    exporters: tuple[str, ...]
    sampler: str
    ratio: float
    file: str
    endpoint: str

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> TraceConfig:
        """Read and check the variables; ConfigError names the first bad one."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return env.get(name, "").strip()

        disabled = get("OTEL_SDK_DISABLED").lower()
        if disabled not in ("", "true", "false"):
            raise ConfigError("OTEL_SDK_DISABLED", disabled, "true or false")
        names = [n.strip().lower() for n in get("OTEL_TRACES_EXPORTER").split(",") if n.strip()]
        for name in names:
            if name not in EXPORTERS:
                expected = "a comma-separated list of " + ", ".join(EXPORTERS)
                raise ConfigError("OTEL_TRACES_EXPORTER", get("OTEL_TRACES_EXPORTER"), expected)
        exporters = () if disabled == "true" else tuple(n for n in names if n != "none")
        sampler = get("OTEL_TRACES_SAMPLER").lower() or "parentbased_always_on"
        if sampler not in SAMPLERS:
            raise ConfigError("OTEL_TRACES_SAMPLER", sampler, "one of " + ", ".join(SAMPLERS))
        ratio = _ratio(get("OTEL_TRACES_SAMPLER_ARG")) if sampler.endswith("ratio") else 1.0
        file = get(FILE_VARIABLE)
        if "file" in exporters and not file:
            raise ConfigError(FILE_VARIABLE, "", "a file path when OTEL_TRACES_EXPORTER has file")
        endpoint = ""
        if "otlp" in exporters:
            for variable in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
                if get(variable) not in ("", "grpc"):
                    raise ConfigError(variable, get(variable), "grpc (the exporter installed)")
            for variable in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
                if get(variable):
                    endpoint = _endpoint(variable, get(variable))
        return cls(
            service_name=get("OTEL_SERVICE_NAME") or f"tessera-{service}",
            exporters=exporters,
            sampler=sampler,
            ratio=ratio,
            file=file,
            endpoint=endpoint,
        )


def _ratio(raw: str) -> float:
    expected = "a number from 0 to 1"
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError("OTEL_TRACES_SAMPLER_ARG", raw, expected) from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError("OTEL_TRACES_SAMPLER_ARG", raw, expected)
    return value


def _endpoint(variable: str, raw: str) -> str:
    parts = urlsplit(raw)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(variable, raw, "an http:// or https:// URL with a host")
    return raw


def sampler(config: TraceConfig) -> Sampler:
    """The sampler ``OTEL_TRACES_SAMPLER`` (and its ratio) names."""
    root = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(config.ratio),
    }[config.sampler.removeprefix("parentbased_")]
    return ParentBased(root) if config.sampler.startswith("parentbased_") else root


def provider(config: TraceConfig, component: str) -> TracerProvider:
    """A tracer provider exporting to ``config.exporters``; each process is one
    ``service.instance.id`` (host name and pid)."""
    resource = Resource.create(
        {
            "service.name": config.service_name,
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
            "process.pid": os.getpid(),
            "tessera.component": component,
        }
    )
    built = TracerProvider(resource=resource, sampler=sampler(config))
    for name in config.exporters:
        if name == "file":
            built.add_span_processor(SimpleSpanProcessor(file_exporter(config.file)))
        else:
            # Imported only when used: the gRPC exporter pulls in its protobuf stubs.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            exporter = OTLPSpanExporter(endpoint=config.endpoint or None)
            built.add_span_processor(BatchSpanProcessor(exporter))
    return built


def file_exporter(path: str) -> ConsoleSpanExporter:
    """Spans as JSON lines appended to ``path`` (one write per span, so processes
    sharing the file do not interleave lines); ConfigError if it cannot be opened."""
    try:
        out: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives with the process)
    except OSError as err:
        raise ConfigError(FILE_VARIABLE, path, f"a writable file ({err.strerror})") from None
    return ConsoleSpanExporter(out=out, formatter=_json_line)


def _json_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def setup(component: str, environ: Mapping[str, str] | None = None) -> Callable[[], None]:
    """Install the tracer provider the variables configure (nothing when tracing is
    off); returns the flush-and-shutdown to call at exit."""
    config = TraceConfig.from_env(component, environ)
    if not config.exporters:
        return lambda: None
    built = provider(config, component)
    trace.set_tracer_provider(built)
    return built.shutdown


def inject(carrier: MutableMapping[str, str], span: trace.Span | None = None) -> None:
    """Write the trace context of ``span`` (default: the current one) into
    ``carrier`` (a dict, gRPC metadata or a protobuf string map); nothing when
    there is no sampled span."""
    ctx = trace.set_span_in_context(span) if span is not None else context.get_current()
    propagate.inject(carrier, context=ctx)


def extract(carrier: Mapping[str, str]) -> context.Context:
    """The trace context a carrier holds (an empty context when none)."""
    return propagate.extract(dict(carrier))


def serving(
    name: str, metadata: Iterable[tuple[str, Any]] | None, attributes: Attributes
) -> AbstractContextManager[trace.Span]:
    """The current span of an RPC being served, in the caller's trace when its
    ``metadata`` (the call's invocation metadata) carries one."""
    return tracer.start_as_current_span(
        name,
        context=extract({key: value for key, value in metadata or () if isinstance(value, str)}),
        kind=trace.SpanKind.SERVER,
        attributes=attributes,
    )


def continuing(
    name: str, carrier: Mapping[str, str], attributes: Attributes
) -> AbstractContextManager[trace.Span]:
    """The current span while handling a message that carries a trace context (a
    handoff's); no span (the invalid one) for a message that carries none."""
    if not carrier:
        return nullcontext(trace.INVALID_SPAN)
    return tracer.start_as_current_span(
        name, context=extract(carrier), kind=trace.SpanKind.CONSUMER, attributes=attributes
    )


@contextmanager
def detached() -> Iterator[None]:
    """No current span inside: start a task that outlives the span it is started in
    here, so its later calls do not join that span's trace."""
    token = context.attach(context.Context())
    try:
        yield
    finally:
        context.detach(token)


def metadata(span: trace.Span | None = None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying the trace context (empty when not tracing)."""
    carrier: dict[str, str] = {}
    inject(carrier, span)
    return tuple(carrier.items())
