"""The world's ownership invariants, checked over every zone and the routing table.

Exactly one zone owns each entity; each player is owned by the zone its route
names; no expected player is missing. :func:`check` is pure, over plain data;
:mod:`tessera.zone.audit` collects that data from running zones and Redis.

Zones are read one after another, not atomically, so a handoff that commits
between two reads shows its player in both zones or in neither. The routing
table read before and after the zones tells which players were handed over
during the read (:func:`moved`): a scan does not judge those; the next one does.
A player committed to a zone that had not yet read the COMMIT from its inbox
when the zones were asked is in transit, not lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from types import MappingProxyType


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
    moved: list[str] = field(default_factory=list)  # handed over mid-scan: not judged
    in_transit: list[str] = field(default_factory=list)  # COMMIT waiting in its zone's inbox

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.lost or self.misrouted or self.unreachable)


def check(
    zones: Mapping[str, Sequence[tuple[int, str]]],
    routes: Mapping[str, str],
    expected_players: set[str] | None = None,
    *,
    unreachable: Sequence[str] = (),
    moved: Set[str] = frozenset(),
    committed: Mapping[str, str] = MappingProxyType({}),
) -> Report:
    """The invariants over what each zone owns (``(entity id, player id or '')`` per
    entity) and the routing table (player -> zone). Zones that could not be asked
    are ``unreachable``: a player routed to one is not known to be lost (the report
    is not ok, so a caller scans again). Players in ``moved`` changed route while
    the zones were read: none of their violations is counted in this report.
    ``committed`` (player -> zone) are the players whose COMMIT waited in that
    zone's inbox when the zones were asked: one whose route names that zone is in
    transit (``in_transit``), not lost; a later scan judges it."""
    report = Report(zones=len(zones), unreachable=list(unreachable), moved=sorted(moved))
    owners: Counter[int] = Counter()
    where: dict[str, list[str]] = {}
    in_flight: set[int] = set()  # entities of moved players
    for name, owned in zones.items():
        owners.update(eid for eid, _player in owned)
        for eid, player in owned:
            if player:
                where.setdefault(player, []).append(name)
                if player in moved:
                    in_flight.add(eid)
    report.entities = len(owners)
    report.players = len(where)
    report.duplicates = sorted(eid for eid, n in owners.items() if n > 1 and eid not in in_flight)
    for player, names in sorted(where.items()):
        if len(names) == 1 and routes.get(player) != names[0] and player not in moved:
            report.misrouted.append(player)
    expected = expected_players if expected_players is not None else set(routes)
    unknown = set(unreachable)
    missing = {p for p in expected if p not in where and p not in moved}
    transit = {p for p in missing if p in committed and committed[p] == routes.get(p)}
    report.in_transit = sorted(transit)
    report.lost = sorted(p for p in missing - transit if routes.get(p) not in unknown)
    return report


def moved(before: Mapping[str, str], after: Mapping[str, str]) -> set[str]:
    """Players whose route (``zone|epoch``) differs between two reads of the routing
    table, or that one of the reads lacks: handed over, joined or left in between."""
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def persisting(before: Report, now: Report) -> Report:
    """``now`` with only the violations ``before`` had too: a player in flight
    between two zones shows up in one scan, a lost one in every scan."""
    return replace(
        now,
        duplicates=[e for e in now.duplicates if e in set(before.duplicates)],
        lost=[p for p in now.lost if p in set(before.lost)],
        misrouted=[p for p in now.misrouted if p in set(before.misrouted)],
    )
