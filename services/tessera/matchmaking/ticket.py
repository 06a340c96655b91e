"""Tickets at the edge: validation of a CreateTicket request, and a stored ticket
turned into the plain :class:`~tessera.matchmaking.matching.Candidate` matchers see.

:func:`validate` is the only gate into the pool: every rule about what a ticket
may contain lives here, and each refusal names the field and a stable reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from tessera.matchmaking.matching import Candidate
from tessera.matchmaking.modes import Mode
from tessera.v1 import matchmaking_pb2 as pb

REGION_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MAX_ID_LEN = 128
MAX_REGIONS = 16
MAX_ATTRIBUTES = 32
MAX_KEY_LEN = 64
MAX_VALUE_LEN = 256
# A measured round trip longer than this is no measurement (10 s).
MAX_LATENCY_MS = 10_000.0


class InvalidTicket(ValueError):
    """A request the service refuses; ``permission`` marks an ownership problem."""

    def __init__(self, message: str, *, reason: str, field: str, permission: bool = False):
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.permission = permission


PLAYER_ID_RULE = f"player_id must be 1-{MAX_ID_LEN} printable characters without spaces"


def player_id_ok(pid: str) -> bool:
    """Whether ``pid`` is a well-formed player id (:data:`PLAYER_ID_RULE`)."""
    return bool(pid) and len(pid) <= MAX_ID_LEN and pid.isprintable() and " " not in pid


def validate(
    request: pb.CreateTicketRequest,
    modes: Mapping[str, Mode],
    caller: str | None,
    regions: frozenset[str] = frozenset(),
) -> Mode:
    """Check a CreateTicket request for ``caller``; return its mode or raise InvalidTicket.

    ``caller`` must lead the ticket (be its first player); None is a trusted back end
    creating tickets on its players' behalf, for which every other rule still holds.
    ``regions`` are the regions served (``TESSERA_MM_REGIONS``); empty = any.
    """
    mode = modes.get(request.mode)
    if mode is None:
        known = ", ".join(sorted(modes))
        raise InvalidTicket(
            f"unknown mode {request.mode!r}; registered modes: {known}",
            reason="UNKNOWN_MODE",
            field="mode",
        )
    players = request.players
    if not players:
        raise InvalidTicket(
            "a ticket needs at least one player", reason="EMPTY_PARTY", field="players"
        )
    if len(players) > mode.max_party:
        raise InvalidTicket(
            f"party of {len(players)} exceeds mode {mode.name!r} limit of {mode.max_party}",
            reason="PARTY_TOO_LARGE",
            field="players",
        )
    seen: set[str] = set()
    for i, player in enumerate(players):
        pid = player.player_id
        if not player_id_ok(pid):
            raise InvalidTicket(
                PLAYER_ID_RULE,
                reason="BAD_PLAYER_ID",
                field=f"players[{i}].player_id",
            )
        if player.player_id in seen:
            raise InvalidTicket(
                f"player {player.player_id!r} appears twice",
                reason="DUPLICATE_PLAYER",
                field=f"players[{i}].player_id",
            )
        seen.add(player.player_id)
        if player.role and player.role not in mode.roles:
            allowed = ", ".join(sorted(mode.roles)) or "none (leave role empty)"
            raise InvalidTicket(
                f"role {player.role!r} is not a role of mode {mode.name!r}; allowed: {allowed}",
                reason="UNKNOWN_ROLE",
                field=f"players[{i}].role",
            )
    if caller is not None and players[0].player_id != caller:
        raise InvalidTicket(
            f"the caller ({caller!r}) must be the first player of the ticket",
            reason="NOT_TICKET_OWNER",
            field="players[0].player_id",
            permission=True,
        )
    _check_regions(request, regions)
    _check_attributes(request)
    return mode


def _check_regions(request: pb.CreateTicketRequest, served: frozenset[str]) -> None:
    if not request.regions:
        raise InvalidTicket("at least one region is required", reason="NO_REGION", field="regions")
    if len(request.regions) > MAX_REGIONS:
        raise InvalidTicket(
            f"at most {MAX_REGIONS} regions", reason="TOO_MANY_REGIONS", field="regions"
        )
    names: set[str] = set()
    for i, region in enumerate(request.regions):
        if REGION_RE.fullmatch(region.region) is None:
            raise InvalidTicket(
                f"region {region.region!r} must be a DNS label",
                reason="BAD_REGION",
                field=f"regions[{i}].region",
            )
        if served and region.region not in served:
            raise InvalidTicket(
                f"region {region.region!r} is not served; regions: {', '.join(sorted(served))}",
                reason="UNKNOWN_REGION",
                field=f"regions[{i}].region",
            )
        if region.region in names:
            raise InvalidTicket(
                f"region {region.region!r} appears twice",
                reason="DUPLICATE_REGION",
                field=f"regions[{i}].region",
            )
        names.add(region.region)
        if not 0 <= region.latency_ms <= MAX_LATENCY_MS:  # NaN fails too
            raise InvalidTicket(
                f"latency_ms must be in [0, {MAX_LATENCY_MS:g}], got {region.latency_ms:g}",
                reason="BAD_LATENCY",
                field=f"regions[{i}].latency_ms",
            )


def _check_attributes(request: pb.CreateTicketRequest) -> None:
    for name, attributes in (
        ("string_attributes", request.string_attributes),
        ("number_attributes", request.number_attributes),
    ):
        if len(attributes) > MAX_ATTRIBUTES:
            raise InvalidTicket(
                f"at most {MAX_ATTRIBUTES} {name}", reason="TOO_MANY_ATTRIBUTES", field=name
            )
        for key in attributes:
            if not key or len(key) > MAX_KEY_LEN:
                raise InvalidTicket(
                    f"attribute names must be 1-{MAX_KEY_LEN} characters",
                    reason="BAD_ATTRIBUTE",
                    field=f"{name}[{key!r}]",
                )
    for key, text in request.string_attributes.items():
        if len(text) > MAX_VALUE_LEN:
            raise InvalidTicket(
                f"string attribute {key!r} is longer than {MAX_VALUE_LEN} characters",
                reason="BAD_ATTRIBUTE",
                field=f"string_attributes[{key!r}]",
            )
    for key, number in request.number_attributes.items():
        if not math.isfinite(number):
            raise InvalidTicket(
                f"number attribute {key!r} must be finite, got {number}",
                reason="NON_FINITE_ATTRIBUTE",
                field=f"number_attributes[{key!r}]",
            )


def candidate(
    ticket: pb.Ticket, ratings: tuple[float, ...], owner_session: str = "", traceparent: str = ""
) -> Candidate:
    """The matcher's view of a stored ticket with its players' ratings."""
    return Candidate(
        id=ticket.id,
        mode=ticket.mode,
        players=tuple(p.player_id for p in ticket.players),
        roles=tuple(p.role for p in ticket.players),
        ratings=ratings,
        regions=tuple(
            sorted(((r.region, r.latency_ms) for r in ticket.regions), key=lambda r: r[1])
        ),
        strings=dict(ticket.string_attributes),
        created_at_ms=ticket.created_at_ms,
        owner_session=owner_session,
        traceparent=traceparent,
        numbers=dict(ticket.number_attributes),
    )
