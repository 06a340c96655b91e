"""Least-privilege Redis: one ACL user per component, the one table of what each
may touch, and its rendering as Redis ACL file lines.

Each :class:`User` names the key patterns it may only read, the ones it may read
and write, the channels it may subscribe to and the ones it may publish on, and
its commands. Keys follow docs/ARCHITECTURE.md ("Redis keys"); ``{*}`` stands for
any world's hash tag. Publishing is granted in a selector of its own, so a user
that may follow a channel (every verifier follows auth's revocations) cannot
publish on it. The chart's Redis (``charts/tessera/files/redis-users.json``,
checked against :func:`chart_users` by a test) and the local redis-servers of
``tessera.harness.redis`` are both configured from :data:`USERS`; the ``default``
user is the administrator's (operations, the redis exporter, tests' inspection).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from tessera.authclient.store import REVOCATIONS, REVOKED
from tessera.wire.names import CHEAT_REASONS

_W = "tessera:{*}:"
_AUTH = "tessera:{auth}:"
_MM = "tessera:{mm}:"

DATA_COMMANDS = (
    "-@all",
    "+@connection",
    "+@read",
    "+@write",
    "+@transaction",
    "+subscribe",
    "+unsubscribe",
    "+ssubscribe",
    "+sunsubscribe",
    "+eval",
    "+evalsha",
    "+script|load",
    "+script|exists",
    "+time",
    "-@dangerous",
    "-@admin",
    "-scan",
    "-randomkey",
    # A Redis Cluster client learns the slot map and follows redirects with these.
    "+cluster|slots",
    "+cluster|shards",
    "+cluster|nodes",
    "+readonly",
    "+readwrite",
    "+asking",
)
"""Commands of a component that reads and writes its keys: data commands (not
the dangerous or administrative ones, nor SCAN, which would list every key),
subscriptions, Lua scripts (whose commands are checked against the same user)
and what a cluster client needs. PUBLISH is granted per channel (:attr:`User.publish`)."""

READ_COMMANDS = tuple(
    c for c in DATA_COMMANDS if c not in ("+@write", "+eval", "+evalsha", "+script|load")
)
"""Read-only commands: a component that only watches (the console)."""

_HEARTBEATS = (_W + "zones", _W + "zone:*:status")
_CHEAT = tuple(_W + "cheat:" + part for part in (*CHEAT_REASONS, "zones", "since", "changed"))


@dataclass(frozen=True)
class User:
    """What one component may do in Redis."""

    name: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    commands: tuple[str, ...] = DATA_COMMANDS

    def rules(self) -> str:
        """The user's ACL rules (without ``on`` and the password). Channel names
        are keys too (no such key exists): a cluster client runs EXISTS on a
        channel's name before subscribing (:func:`tessera.common.store.follow_slot`),
        and a Lua script that publishes declares the channel among its keys (so it
        runs on the channel's slot), which EVAL checks as a write."""
        write = dict.fromkeys((*self.write, *self.publish))
        read = dict.fromkeys(p for p in (*self.read, *self.subscribe) if p not in write)
        parts = [*(f"%R~{p}" for p in read), *(f"~{p}" for p in write)]
        parts += [f"&{c}" for c in self.subscribe]
        parts += self.commands
        if self.publish:
            parts.append("(" + " ".join(["+publish", *(f"&{c}" for c in self.publish)]) + ")")
        return " ".join(parts)


_REVOKED = (REVOKED,)
_REVOCATIONS = (REVOCATIONS,)

USERS: tuple[User, ...] = (
    User(
        "zone",
        read=(_W + "map", *_REVOKED),
        write=(
            _W + "zones",
            _W + "zone:*",
            _W + "routes",
            _W + "checkpoints",
            _W + "entity-ids",
            *_CHEAT,
        ),
        subscribe=(_W + "zone:*:ghosts", _W + "map:changed", _W + "routes:changed", *_REVOCATIONS),
        publish=(_W + "zone:*:ghosts", _W + "routes:changed"),
    ),
    User(
        "relay",
        read=(*_HEARTBEATS, _W + "routes", _W + "map", *_REVOKED),
        write=(_W + "relay:*", _W + "relays"),
        subscribe=(_W + "routes:changed", _W + "map:changed", _W + "kicks", *_REVOCATIONS),
    ),
    User(
        "auth",
        read=(_W + "cheat:*",),
        write=tuple(
            _AUTH + part
            for part in (
                "account:*",
                "session:*",
                "refresh:*",
                "revoked",
                "failed:*",
                "registrations:*",
                "cheat:acted:*",
            )
        ),
        subscribe=_REVOCATIONS,
        publish=(*_REVOCATIONS, _W + "kicks"),
    ),
    User(
        "matchmaking",
        read=(*_HEARTBEATS, *_REVOKED),
        write=tuple(
            _MM + part
            for part in (
                "ticket:*",
                "pool:*",
                "player:*",
                "ratings:*",
                "match:*",
                "backfill:*",
                "backfills:*",
                "instances:*",
                "instance:*",
                "sent:*",
                "replicas",
            )
        ),
        subscribe=(_MM + "events", *_REVOCATIONS),
        publish=(_MM + "events",),
    ),
    User(
        "operator",
        read=_HEARTBEATS,
        write=(_W + "map", _W + "events", _MM + "instances:*"),
        publish=(_W + "map:changed",),
    ),
    User(
        "console",
        read=(*_HEARTBEATS, _W + "map", _W + "events", _MM + "instances:*", *_REVOKED),
        subscribe=_REVOCATIONS,
        commands=READ_COMMANDS,
    ),
)
"""Every component's Redis user. The demo's own watchers and operations use the
administrator (``default``)."""

NAMES = tuple(user.name for user in USERS)

_PASSWORD = re.compile(r"[!-~]+")


def user(name: str) -> User:
    """The user of component ``name``; KeyError naming the known ones otherwise."""
    for candidate in USERS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no Redis user {name!r}; known: {', '.join(NAMES)}")


def acl_file(passwords: Mapping[str, str], *, admin_password: str | None) -> str:
    """The ACL file of a redis-server: the ``default`` user (the administrator,
    with every right; without a password when ``admin_password`` is None, for a
    loopback-only server) and every component's user with its password.

    Raises ValueError for a missing component password or one a Redis ACL line
    cannot hold (empty, spaces or control characters)."""
    for name in NAMES:
        if not _PASSWORD.fullmatch(passwords.get(name, "")):
            raise ValueError(f"Redis password of {name!r}: printable ASCII without spaces")
    if admin_password is not None and not _PASSWORD.fullmatch(admin_password):
        raise ValueError("Redis admin password: printable ASCII without spaces")
    admin = "nopass" if admin_password is None else ">" + admin_password
    lines = [f"user default on {admin} ~* &* +@all"]
    lines += [f"user {u.name} on >{passwords[u.name]} {u.rules()}" for u in USERS]
    return "\n".join(lines) + "\n"


def chart_users() -> str:
    """The chart's copy of the table (``charts/tessera/files/redis-users.json``):
    user -> rules, from which its Redis Secret renders the ACL file."""
    return json.dumps({u.name: u.rules() for u in USERS}, indent=2) + "\n"


def with_user(url: str, username: str, password: str) -> str:
    """``url`` (``redis://``, ``rediss://`` or ``redis+cluster://``) with its
    credentials replaced by ``username`` and ``password``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"a Redis URL with a scheme, not {url!r}")
    authority, slash, path = rest.partition("/")
    hosts = authority.rpartition("@")[2]
    credentials = f"{quote(username, safe='')}:{quote(password, safe='')}@"
    return f"{scheme}://{credentials}{hosts}{slash}{path}"
