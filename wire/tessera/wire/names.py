"""World, zone and match names: DNS labels, as Kubernetes and the wire require."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def check_name(kind: str, name: str) -> str:
    """Validate a world or zone name (a DNS label); raise ValueError otherwise."""
    if NAME_RE.fullmatch(name) is None:
        raise ValueError(f"{kind} name {name!r} must be a DNS label (a-z, 0-9, '-', <= 63)")
    return name
