"""The world's ownership invariants, checked over every zone and the routing table.

Exactly one zone owns each entity; each player is owned by the zone its route
names; no expected player is missing. :func:`check` is pure, over plain data;
:mod:`tessera.zone.audit` collects that data from running zones and Redis.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace


@dataclass
class Report:
    """What a scan found."""

    zones: int = 0
    entities: int = 0
    players: int = 0
    duplicates: list[int] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    misrouted: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.lost or self.misrouted or self.unreachable)


def check(
    zones: Mapping[str, Sequence[tuple[int, str]]],
    routes: Mapping[str, str],
    expected_players: set[str] | None = None,
    unreachable: Sequence[str] = (),
) -> Report:
    """The invariants over what each zone owns (``(entity id, player id or '')`` per
    entity) and the routing table (player -> zone). Zones that could not be asked
    are ``unreachable``: a player routed to one is not known to be lost (the report
    is not ok, so a caller scans again)."""
    report = Report(zones=len(zones), unreachable=list(unreachable))
    owners: Counter[int] = Counter()
    where: dict[str, list[str]] = {}
    for name, owned in zones.items():
        owners.update(eid for eid, _player in owned)
        for _eid, player in owned:
            if player:
                where.setdefault(player, []).append(name)
    report.entities = len(owners)
    report.players = len(where)
    report.duplicates = sorted(eid for eid, n in owners.items() if n > 1)
    for player, names in sorted(where.items()):
        if len(names) == 1 and routes.get(player) != names[0]:
            report.misrouted.append(player)
    expected = expected_players if expected_players is not None else set(routes)
    unknown = set(unreachable)
    report.lost = sorted(p for p in expected if p not in where and routes.get(p) not in unknown)
    return report


def persisting(before: Report, now: Report) -> Report:
    """``now`` with only the violations ``before`` had too: a player in flight
    between two zones shows up in one scan, a lost one in every scan."""
    return replace(
        now,
        duplicates=[e for e in now.duplicates if e in set(before.duplicates)],
        lost=[p for p in now.lost if p in set(before.lost)],
        misrouted=[p for p in now.misrouted if p in set(before.misrouted)],
    )
