"""Match functions: pure ``(tickets, now_ms, mode) -> proposals``, one registered per mode.

The default, :func:`match_teams`, pools tickets by region (and by the mode's
``match_attributes``; ``number_spreads`` bound number attributes), takes the
oldest ticket as the anchor, gathers the nearest ratings inside the anchor's
skill window (which widens with its waiting time), and splits the group into
teams with the smallest rating gap that keeps parties together and fills the
role composition. A proposal is
only a wish: the store claims its tickets all-or-nothing, so two replicas may
propose the same ticket and only one wins.
"""

from __future__ import annotations

import importlib
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from tessera.matchmaking.modes import Mode


@dataclass(frozen=True, slots=True)
class Candidate:
    """A searching ticket as match functions see it (ratings already attached)."""

    id: str
    mode: str
    players: tuple[str, ...]
    roles: tuple[str, ...]
    ratings: tuple[float, ...]
    regions: tuple[tuple[str, float], ...]  # sorted by latency, best first
    strings: Mapping[str, str]
    created_at_ms: float
    owner_session: str = ""  # the creator's session id, for its connect token
    traceparent: str = ""  # W3C trace context of the ticket's creation ('' = not traced)
    numbers: Mapping[str, float] = field(default_factory=dict)  # number attributes

    @property
    def size(self) -> int:
        return len(self.players)

    @property
    def rating(self) -> float:
        """The party aggregate: the mean of its members' ratings."""
        return sum(self.ratings) / len(self.ratings)

    @property
    def total(self) -> float:
        return sum(self.ratings)


@dataclass(frozen=True, slots=True)
class Seat:
    """One player's place in a proposed match."""

    ticket_id: str
    player_id: str
    team: int
    role: str = ""


@dataclass(frozen=True, slots=True)
class Proposal:
    """A match a function would like to make; nothing is committed yet."""

    mode: str
    region: str
    ticket_ids: tuple[str, ...]
    seats: tuple[Seat, ...]
    rating_gap: float
    backfill_id: str = ""


@dataclass(frozen=True, slots=True)
class OpenBackfill:
    """A running match that wants players, as :func:`fill_backfills` sees it."""

    id: str
    mode: str
    region: str
    open_slots: Mapping[int, int]
    created_at_ms: float


MatchFunction = Callable[[Sequence[Candidate], float, Mode], list[Proposal]]

# The candidate scan stops after this many tickets per anchor; enough to fill
# any team shape with parties left out, small enough to keep anchors cheap.
_SCAN_FACTOR = 3


def regions_of(ticket: Candidate, wait_s: float, mode: Mode) -> list[str]:
    """The region pools a ticket searches in after waiting ``wait_s``."""
    best = ticket.regions[0][0]
    if wait_s < mode.region_widen_after_s:
        return [best]
    return [best] + [r for r, ms in ticket.regions[1:] if ms <= mode.max_latency_ms]


def pools(
    tickets: Iterable[Candidate], now_ms: float, mode: Mode
) -> dict[tuple[str, tuple[str, ...]], list[Candidate]]:
    """Tickets grouped by (region, values of the mode's match attributes)."""
    out: dict[tuple[str, tuple[str, ...]], list[Candidate]] = defaultdict(list)
    for t in tickets:
        attrs = tuple(t.strings.get(a, "") for a in mode.match_attributes)
        for region in regions_of(t, (now_ms - t.created_at_ms) / 1000.0, mode):
            out[(region, attrs)].append(t)
    return out


class _SortedPool:
    """A pool sorted by rating as a doubly linked list, so tickets taken by earlier
    proposals are unlinked once and never scanned again."""

    def __init__(self, pool: Sequence[Candidate]) -> None:
        self.tickets = sorted(pool, key=lambda t: t.rating)
        n = len(self.tickets)
        self.position = {t.id: i for i, t in enumerate(self.tickets)}
        self.next = list(range(1, n + 1))
        self.prev = list(range(-1, n - 1))

    def unlink(self, i: int) -> None:
        before, after = self.prev[i], self.next[i]
        if before >= 0:
            self.next[before] = after
        if after < len(self.tickets):
            self.prev[after] = before

    def nearest(
        self, anchor: Candidate, used: set[str], window: float, limit: int
    ) -> Iterator[Candidate]:
        """Unused tickets within ``window`` of the anchor, closest rating first."""
        center = anchor.rating
        me = self.position[anchor.id]
        lo, hi, n = self.prev[me], self.next[me], len(self.tickets)
        found = 0
        while found < limit:
            while lo >= 0 and self.tickets[lo].id in used:
                self.unlink(lo)
                lo = self.prev[lo]
            while hi < n and self.tickets[hi].id in used:
                self.unlink(hi)
                hi = self.next[hi]
            down = self.tickets[lo] if lo >= 0 else None
            up = self.tickets[hi] if hi < n else None
            if down is not None and center - down.rating > window:
                down = None
            if up is not None and up.rating - center > window:
                up = None
            if down is None and up is None:
                return
            if up is None or (down is not None and center - down.rating <= up.rating - center):
                assert down is not None
                pick, lo = down, self.prev[lo]
            else:
                pick, hi = up, self.next[hi]
            found += 1
            yield pick


def match_teams(tickets: Sequence[Candidate], now_ms: float, mode: Mode) -> list[Proposal]:
    """The default match function: skill-windowed, team-balanced, party- and role-aware."""
    used: set[str] = set()
    proposals: list[Proposal] = []
    for (region, _attrs), pool in sorted(pools(tickets, now_ms, mode).items()):
        ring = _SortedPool(pool)
        for anchor in sorted(pool, key=lambda t: t.created_at_ms):
            if anchor.id in used:
                continue
            proposal = _match_anchor(anchor, ring, used, now_ms, mode, region)
            if proposal is not None:
                used.update(proposal.ticket_ids)
                proposals.append(proposal)
    return proposals


def _match_anchor(  # noqa: PLR0917 - private helper of match_teams
    anchor: Candidate,
    ring: _SortedPool,
    used: set[str],
    now_ms: float,
    mode: Mode,
    region: str,
) -> Proposal | None:
    wait_s = (now_ms - anchor.created_at_ms) / 1000.0
    window = mode.skill_window(wait_s)
    need = mode.players_per_match
    group = [anchor]
    players = anchor.size
    role_counts = _fixed_roles([anchor])
    for other in ring.nearest(anchor, used, window, need * _SCAN_FACTOR):
        if players + other.size > need or not _roles_fit(role_counts, other, mode):
            continue
        if mode.number_spreads and not _numbers_fit(group, other, mode):
            continue
        group.append(other)
        players += other.size
        for role in other.roles:
            if role:
                role_counts[role] += 1
        if players == need:
            teams = balance(group, mode, mode.team_size)
            if teams is not None:
                return _proposal(mode, region, teams)
            group.pop()
            players -= other.size
            for role in other.roles:
                if role:
                    role_counts[role] -= 1
    if players >= mode.min_players and wait_s >= mode.partial_after_s and players < need:
        low = mode.team_size if mode.min_team_size is None else mode.min_team_size
        teams = balance(group, mode, low)
        if teams is not None:
            return _proposal(mode, region, teams)
    return None


def _numbers_fit(group: Sequence[Candidate], other: Candidate, mode: Mode) -> bool:
    """Whether ``other`` keeps every spread-limited number attribute of the group in range."""
    for key, spread in mode.number_spreads.items():
        values = [t.numbers.get(key, 0.0) for t in group]
        value = other.numbers.get(key, 0.0)
        if max(*values, value) - min(*values, value) > spread:
            return False
    return True


def _fixed_roles(group: Iterable[Candidate]) -> defaultdict[str, int]:
    counts: defaultdict[str, int] = defaultdict(int)
    for t in group:
        for role in t.roles:
            if role:
                counts[role] += 1
    return counts


def _roles_fit(counts: Mapping[str, int], other: Candidate, mode: Mode) -> bool:
    if not mode.roles:
        return True
    extra = _fixed_roles([other])
    return all(counts.get(r, 0) + n <= mode.roles[r] * mode.teams for r, n in extra.items())


def balance(group: Sequence[Candidate], mode: Mode, min_size: int) -> list[list[Candidate]] | None:
    """Split tickets into ``mode.teams`` teams of ``min_size..team_size`` players,
    parties kept whole and roles filled, with the smallest rating gap; None if impossible.

    Two teams are searched exhaustively (groups are at most a few dozen tickets
    and usually ten); more teams are filled greedily, strongest party first.
    """
    if mode.teams == 1:
        team = list(group)
        size = sum(t.size for t in team)
        ok = min_size <= size <= mode.team_size and _roles_ok(team, mode)
        return [team] if ok else None
    if mode.teams == 2 and len(group) <= 16:
        return _balance_two(group, mode, min_size)
    return _balance_greedy(group, mode, min_size)


def _balance_two(
    group: Sequence[Candidate], mode: Mode, min_size: int
) -> list[list[Candidate]] | None:
    total = sum(t.total for t in group)
    players = sum(t.size for t in group)
    best: tuple[float, list[Candidate], list[Candidate]] | None = None
    rest = range(1, len(group))
    # Team 0 always holds group[0], which halves the search without losing a split.
    for k in range(len(group)):
        for combo in combinations(rest, k):
            chosen = {0, *combo}
            size = group[0].size + sum(group[i].size for i in combo)
            if not (min_size <= size <= mode.team_size and min_size <= players - size):
                continue
            if players - size > mode.team_size:
                continue
            left = [group[i] for i in sorted(chosen)]
            right = [t for i, t in enumerate(group) if i not in chosen]
            gap = abs(2 * sum(t.total for t in left) - total)
            if best is not None and gap >= best[0]:
                continue
            if _roles_ok(left, mode) and _roles_ok(right, mode):
                best = (gap, left, right)
    return None if best is None else [best[1], best[2]]


def _balance_greedy(
    group: Sequence[Candidate], mode: Mode, min_size: int
) -> list[list[Candidate]] | None:
    teams: list[list[Candidate]] = [[] for _ in range(mode.teams)]
    sizes = [0] * mode.teams
    sums = [0.0] * mode.teams
    for t in sorted(group, key=lambda t: (-t.size, -t.total)):
        fits = [i for i in range(mode.teams) if sizes[i] + t.size <= mode.team_size]
        if not fits:
            return None
        i = min(fits, key=lambda i: (sums[i], sizes[i]))
        teams[i].append(t)
        sizes[i] += t.size
        sums[i] += t.total
    if min(sizes) < min_size or not all(_roles_ok(team, mode) for team in teams):
        return None
    return teams


def _roles_ok(team: Sequence[Candidate], mode: Mode) -> bool:
    if not mode.roles:
        return True
    if sum(t.size for t in team) != mode.team_size:
        return False
    counts = _fixed_roles(team)
    return all(n <= mode.roles.get(r, 0) for r, n in counts.items())


def assign_roles(team: Sequence[Candidate], mode: Mode) -> list[str]:
    """Roles for the team's players in order: wanted roles kept, open ones filled."""
    if not mode.roles:
        return [role for t in team for role in t.roles]
    left = dict(mode.roles)
    for t in team:
        for role in t.roles:
            if role:
                left[role] -= 1
    spare = [r for r, n in left.items() for _ in range(n)]
    out = []
    for t in team:
        for role in t.roles:
            out.append(role or spare.pop(0))
    return out


def team_gap(teams: Sequence[Sequence[Candidate]]) -> float:
    """Strongest minus weakest team's sum of ratings."""
    sums = [sum(t.total for t in team) for team in teams]
    return max(sums) - min(sums)


def _proposal(mode: Mode, region: str, teams: list[list[Candidate]]) -> Proposal:
    seats = []
    for index, team in enumerate(teams):
        roles = iter(assign_roles(team, mode))
        for t in team:
            for player in t.players:
                seats.append(Seat(t.id, player, index, next(roles)))
    return Proposal(
        mode=mode.name,
        region=region,
        ticket_ids=tuple(t.id for team in teams for t in team),
        seats=tuple(seats),
        rating_gap=team_gap(teams),
    )


def fill_backfills(
    backfills: Sequence[OpenBackfill], tickets: Sequence[Candidate], now_ms: float, mode: Mode
) -> list[Proposal]:
    """Refill running matches before new ones are made: oldest backfill first, each
    open slot taken by the oldest ticket in its region whose party fits one team."""
    proposals = []
    used: set[str] = set()
    oldest = sorted(tickets, key=lambda t: t.created_at_ms)
    for backfill in sorted(backfills, key=lambda b: b.created_at_ms):
        slots = {team: n for team, n in backfill.open_slots.items() if n > 0}
        seats: list[Seat] = []
        chosen: list[str] = []
        for t in oldest:
            if t.id in used or not slots:
                continue
            wait_s = (now_ms - t.created_at_ms) / 1000.0
            if backfill.region not in regions_of(t, wait_s, mode):
                continue
            team = max(slots, key=lambda i: (slots[i], -i))
            if slots[team] < t.size:
                continue
            seats.extend(Seat(t.id, p, team, r) for p, r in zip(t.players, t.roles, strict=True))
            chosen.append(t.id)
            slots[team] -= t.size
            if slots[team] == 0:
                del slots[team]
        if chosen:
            used.update(chosen)
            proposals.append(
                Proposal(
                    mode=mode.name,
                    region=backfill.region,
                    ticket_ids=tuple(chosen),
                    seats=tuple(seats),
                    rating_gap=0.0,
                    backfill_id=backfill.id,
                )
            )
    return proposals


def valid_proposals(
    proposals: Sequence[Proposal], tickets: Sequence[Candidate], mode: Mode
) -> tuple[list[Proposal], int]:
    """Proposals a (pluggable) match function may commit, and how many were refused:
    every ticket searching in this mode, used once, and seated with exactly its players."""
    by_id = {t.id: t for t in tickets}
    used: set[str] = set()
    out = []
    for p in proposals:
        ids = set(p.ticket_ids)
        players = sorted(s.player_id for s in p.seats)
        expected = sorted(pl for i in p.ticket_ids if i in by_id for pl in by_id[i].players)
        if (
            p.mode != mode.name
            or len(ids) != len(p.ticket_ids)
            or not ids
            or not ids <= by_id.keys()
            or ids & used
            or players != expected
            or any(s.ticket_id not in ids or not 0 <= s.team < mode.teams for s in p.seats)
        ):
            continue
        used |= ids
        out.append(p)
    return out, len(proposals) - len(out)


# After this many rotations a ticket is open to every replica (a backstop; by then
# it has been in most replicas' shares anyway).
OPEN_AFTER_ROTATIONS = 10


def share(
    tickets: Sequence[Candidate], now_ms: float, index: int, count: int, rotate_ms: float
) -> list[Candidate]:
    """The tickets replica ``index`` of ``count`` considers now.

    Each ticket belongs to one replica, by a hash of its id and of how many
    ``rotate_ms`` periods it has waited, so replicas rarely propose the same
    ticket, and a ticket moves to another replica's pool (meeting tickets of
    other shares) every period. Tickets older than ``OPEN_AFTER_ROTATIONS``
    periods are open to all replicas.
    """
    if count <= 1 or rotate_ms <= 0:
        return list(tickets)
    out = []
    for t in tickets:
        epoch = int((now_ms - t.created_at_ms) // rotate_ms)
        if epoch >= OPEN_AFTER_ROTATIONS or zlib.crc32(f"{t.id}:{epoch}".encode()) % count == index:
            out.append(t)
    return out


REGISTRY: dict[str, MatchFunction] = {"teams": match_teams}


def register(name: str, function: MatchFunction) -> None:
    """Make ``function`` available to modes as ``match_function: name``."""
    REGISTRY[name] = function


def resolve(name: str) -> MatchFunction:
    """A registered match function, or ``package.module:function`` imported on demand."""
    if name in REGISTRY:
        return REGISTRY[name]
    module_name, sep, attr = name.partition(":")
    if not sep:
        raise ValueError(f"unknown match function {name!r}; registered: {sorted(REGISTRY)}")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"match function {name!r} cannot be imported: {err}") from None
    if not callable(function):
        raise ValueError(f"match function {name!r} is not callable")
    register(name, function)
    return function  # type: ignore[no-any-return]
