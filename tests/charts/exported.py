"""The metric names Tessera and its Redis exporter really export, and the metric
names a PromQL expression reads: what the dashboard and alert tests compare.

Tessera's names come from the prometheus_client registries after importing every
metrics module (the relay's collector is collected directly), so a label-less
family with no samples yet still counts. Redis is watched through
oliver006/redis_exporter; REDIS_EXPORTER lists the names this chart's dashboards
and alerts use, as that exporter (v1.88.0, exporter/exporter.go) defines them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable

from prometheus_client import REGISTRY, Metric

from tessera.relay.metrics import Counters, RelayCollector

METRICS_MODULES = (
    "tessera.zone.metrics",
    "tessera.relay.metrics",
    "tessera.auth.metrics",
    "tessera.authclient.metrics",
    "tessera.matchmaking.metrics",
    "tessera.operator.metrics",
    "tessera.common.database_outage",
)

# redis_exporter v1.88.0 (namespace "redis"): `up` and `db_keys` are its own
# gauges; the rest map INFO fields (metricMapGauges / metricMapCounters) or
# COMMANDSTATS (commands_total, commands_duration_seconds_total).
REDIS_EXPORTER = frozenset(
    {
        "redis_up",
        "redis_connected_clients",
        "redis_memory_used_bytes",
        "redis_memory_max_bytes",
        "redis_db_keys",
        "redis_commands_processed_total",
        "redis_commands_total",
        "redis_commands_duration_seconds_total",
        "redis_keyspace_hits_total",
        "redis_keyspace_misses_total",
        "redis_evicted_keys_total",
        "redis_rejected_connections_total",
        "redis_net_input_bytes_total",
        "redis_net_output_bytes_total",
    }
)

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def series_names(families: Iterable[Metric]) -> set[str]:
    """The sample names a scrape of these families can hold."""
    return {f.name + suffix for f in families for suffix in _SUFFIXES.get(f.type, ("",))}


def tessera_names() -> set[str]:
    """Every ``tessera_*`` series name the services and the operator export."""
    for module in METRICS_MODULES:
        importlib.import_module(module)
    relay = RelayCollector(Counters(), dict, dict)
    families = [*REGISTRY.collect(), *relay.collect()]
    return {n for n in series_names(families) if n.startswith("tessera_")}


# PromQL words that are not metric names.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"and", "or", "unless", "offset", "atan2", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w(])(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (Grafana's $variables removed)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\$\w+", "", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names
