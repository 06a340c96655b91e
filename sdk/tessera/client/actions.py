"""Game actions by name: a client's ``act("drop", amount=3)`` checked against the
module's declaration the relay announced (``Accepted.game``) and encoded as the
``GameAction`` the zone expects (docs/GAME.md, "Actions from a client")."""

from __future__ import annotations

import math
from collections.abc import Mapping

from tessera.v1 import common_pb2, relay_pb2


class ActionError(ValueError):
    """An action or arguments the module does not declare; nothing was sent."""


def find(schema: common_pb2.GameSchema, name_or_id: str | int) -> common_pb2.ActionSchema:
    """The declared action named (or numbered) ``name_or_id``."""
    for action in schema.actions:
        if name_or_id in (action.name, action.id):
            return action
    known = ", ".join(f"{a.name} ({a.id})" for a in schema.actions) or "none"
    raise ActionError(f"module {schema.module!r} declares no action {name_or_id!r}; it has {known}")


def encode(
    schema: common_pb2.GameSchema, name_or_id: str | int, args: Mapping[str, float]
) -> relay_pb2.GameAction:
    """The ``GameAction`` for ``name_or_id`` with ``args`` in declared order; ActionError
    for a missing, unknown, out-of-range or fractional (for an integer) argument."""
    action = find(schema, name_or_id)
    declared = [a.name for a in action.arguments]
    unknown = sorted(set(args) - set(declared))
    missing = [n for n in declared if n not in args]
    if unknown or missing:
        raise ActionError(
            f"action {action.name} takes ({', '.join(declared)}); "
            f"missing {missing}, unknown {unknown}"
        )
    values = []
    for arg in action.arguments:
        v = float(args[arg.name])
        if not (math.isfinite(v) and arg.low <= v <= arg.high) or (
            arg.integer and not v.is_integer()
        ):
            kind = "a whole number" if arg.integer else "a number"
            raise ActionError(
                f"action {action.name}: {arg.name}={args[arg.name]!r}, "
                f"want {kind} in [{arg.low:g}, {arg.high:g}]"
            )
        values.append(v)
    return relay_pb2.GameAction(id=action.id, args=values)
