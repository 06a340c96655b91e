"""Malformed and extreme requests derived from the proto descriptors, for the fuzz test.

Every case of a method is its request message (a baseline the test gives, so a
call gets past the obvious checks, or the empty message) with one field set to a
hostile value: extreme numbers, NaN and infinities, 1 MB strings and bytes, huge
repeated fields, unknown enum values; nested messages (and the first element
of a repeated one) are walked two levels deep. Undecodable byte strings, a
10 MB message and the empty message come with every method. Cases are
serialized bytes, sent through identity serializers, and a seeded sample keeps
the count per method bounded and the run deterministic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

HUGE = 1 << 20  # 1 MB strings and bytes
HUGE_REPEAT = 20_000
I32 = (0, -1, 2**31 - 1, -(2**31))
I64 = (0, -1, 2**63 - 1, -(2**63))
U32 = (0, 2**32 - 1)
U64 = (0, 2**64 - 1)
DOUBLES = (math.nan, math.inf, -math.inf, 1e308, -1e308, -1.0)
FLOATS = (math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, -1.0)
UNKNOWN_ENUM = 12345
# Bytes no protobuf parser accepts: a truncated varint, a field number 0, a
# length running past the end, a group end without a start.
UNDECODABLE = (b"\xff\xff\xff", b"\x00\x01", b"\x0a\xff\xff\xff\x0f", b"\x0c")
# Over the servers' 4 MiB message limit: field 1, 10 MB long.
OVERSIZED = b"\x0a\x80\x80\x80\x05" + b"\x00" * (10 << 20)

F = FieldDescriptor
VALUES: dict[int, tuple[Any, ...]] = {
    F.TYPE_INT32: I32,
    F.TYPE_SINT32: I32,
    F.TYPE_SFIXED32: I32,
    F.TYPE_INT64: I64,
    F.TYPE_SINT64: I64,
    F.TYPE_SFIXED64: I64,
    F.TYPE_UINT32: U32,
    F.TYPE_FIXED32: U32,
    F.TYPE_UINT64: U64,
    F.TYPE_FIXED64: U64,
    F.TYPE_DOUBLE: DOUBLES,
    F.TYPE_FLOAT: FLOATS,
    F.TYPE_BOOL: (True,),
    F.TYPE_STRING: ("x" * HUGE, "\x00\n\u202e"),
    F.TYPE_BYTES: (b"\xff" * HUGE,),
    F.TYPE_ENUM: (UNKNOWN_ENUM, -1),
}


@dataclass(frozen=True)
class Case:
    """One request: what it is (for failure messages) and its bytes."""

    label: str
    payload: bytes


def message_class(descriptor: Any) -> type[Message]:
    return GetMessageClass(descriptor)


def cases(
    method: MethodDescriptor, *, baseline: Message | None = None, seed: int = 0, limit: int = 40
) -> list[Case]:
    """Up to ``limit`` cases for ``method``: the empty message, the baseline, the
    undecodable byte strings, a 10 MB message, then a seeded sample of one-field
    mutations (serialized only once picked)."""
    cls = message_class(method.input_type)
    base = baseline if baseline is not None else cls()
    fixed = [Case("empty", b""), Case("baseline", base.SerializeToString())]
    fixed += [Case(f"undecodable {raw!r}", raw) for raw in UNDECODABLE]
    fixed.append(Case("10 MB message", OVERSIZED))
    mutations = list(_mutations(method.input_type, depth=2))
    random.Random(f"{seed}:{method.full_name}").shuffle(mutations)
    return fixed + [_apply(base, m) for m in mutations[: max(0, limit - len(fixed))]]


Mutation = tuple[str, str, Any]  # (label, dotted field path, apply(message, path))


def _apply(base: Message, mutation: Mutation) -> Case:
    label, path, apply = mutation
    message = type(base)()
    message.CopyFrom(base)
    apply(message, path)
    return Case(label, message.SerializeToString())


def _mutations(descriptor: Any, *, depth: int) -> Iterator[Mutation]:
    for field in descriptor.fields:
        for label, apply in _setters(field, depth):
            yield f"{field.name} = {label}", field.name, apply


def _setters(field: FieldDescriptor, depth: int) -> Iterator[tuple[str, Any]]:
    """(label, apply(message, dotted path)) for each hostile value of ``field``."""
    if field.type == F.TYPE_MESSAGE:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            yield f"{HUGE_REPEAT} map entries", _fill_map
            return
        if field.is_repeated:
            yield f"{HUGE_REPEAT} empty elements", _fill_messages
        if depth > 0:
            for label, path, apply in _mutations(field.message_type, depth=depth - 1):
                yield f"{{{label}}}", _nested(path, apply)
        return
    values = VALUES[field.type]
    if field.is_repeated:  # many small elements (huge ones are the single fields' case)
        small = values[-1][:1] if field.type in (F.TYPE_STRING, F.TYPE_BYTES) else values[-1]
        yield f"[{_short(small)}] * {HUGE_REPEAT}", _repeat(small)
        return
    for value in values:
        yield _short(value), _assign(value)


def _target(message: Message, path: str) -> tuple[Message, str]:
    *parents, leaf = path.split(".")
    for part in parents:
        message = getattr(message, part)
    return message, leaf


def _assign(value: Any) -> Any:
    def apply(message: Message, path: str) -> None:
        owner, leaf = _target(message, path)
        setattr(owner, leaf, value)

    return apply


def _repeat(value: Any) -> Any:
    def apply(message: Message, path: str) -> None:
        owner, leaf = _target(message, path)
        getattr(owner, leaf).extend([value] * HUGE_REPEAT)

    return apply


def _fill_messages(message: Message, path: str) -> None:
    owner, leaf = _target(message, path)
    field = getattr(owner, leaf)
    for _ in range(HUGE_REPEAT):
        field.add()


def _fill_map(message: Message, path: str) -> None:
    owner, leaf = _target(message, path)
    entries = getattr(owner, leaf)
    entry_type: Any = owner.DESCRIPTOR.fields_by_name[leaf].message_type
    entry = entry_type.fields_by_name
    string_key = entry["key"].type == F.TYPE_STRING
    value = "v" if entry["value"].type == F.TYPE_STRING else 1
    for i in range(HUGE_REPEAT):
        entries[str(i) if string_key else i] = value


def _nested(sub_path: str, sub_apply: Any) -> Any:
    """Apply a mutation of the sub-message to the field (a repeated field's first
    element, added if there is none)."""

    def apply(message: Message, path: str) -> None:
        owner, leaf = _target(message, path)
        field = getattr(owner, leaf)
        if owner.DESCRIPTOR.fields_by_name[leaf].is_repeated:
            field = field[0] if len(field) else field.add()
        sub_apply(field, sub_path)

    return apply


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}… ({len(value)} long)"
