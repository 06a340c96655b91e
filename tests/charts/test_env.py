"""Every TESSERA_* variable the chart sets is one the code reads: a misspelt or
stale name would otherwise be silently ignored by the service it configures."""

from __future__ import annotations

import re

from .conftest import CHART_DIR, Render

ROOT = CHART_DIR.parents[1]
SOURCE_ROOTS = ("services", "operator")
# Env.<kind>("NAME", ...) reads TESSERA_NAME; literal names appear in messages and docs.
READ_RE = re.compile(r"\benv\.\w+\(\s*\"([A-Z0-9_]+)\"")
LITERAL_RE = re.compile(r"\"(TESSERA_[A-Z0-9_]+)\"")


def variables_read() -> set[str]:
    names: set[str] = set()
    for root in SOURCE_ROOTS:
        for path in (ROOT / root).rglob("*.py"):
            text = path.read_text()
            names |= {"TESSERA_" + n for n in READ_RE.findall(text)}
            names |= set(LITERAL_RE.findall(text))
    return names


def test_chart_sets_only_variables_the_code_reads(render: Render) -> None:
    known = variables_read()
    values = {
        "networkPolicy": {"enabled": True},
        "matchmaking": {"modes": "[]"},
        "console": {"enabled": True},
        "tls": {"secretName": "tessera-tls", "serverName": "tessera.internal"},
    }
    unknown: list[str] = []
    for obj in render(values):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                name = entry["name"]
                if name.startswith("TESSERA_") and name not in known:
                    unknown.append(f"{obj['metadata']['name']}: {name}")
    assert unknown == []
