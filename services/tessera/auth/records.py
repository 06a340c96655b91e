"""The auth service's PostgreSQL code for accounts, devices and bans, the system
of record (tables ``accounts``, ``devices``, ``bans``; migration
``0001_accounts.sql``); the player-data API uses the shared
:mod:`tessera.common.playerdata`. Redis (``store.py``) keeps only what is hot:
sessions, refresh tokens, revocations and rate-limit counters, all of which may
be lost (players log in again).

Usernames are unique in the table (``UNIQUE``), so two registrations of one name
race safely: one row is inserted, the other call gets False. A guest account and
its device row are created in one transaction, so a device never names an
account that does not exist, and two first logins of one device share one account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tessera.auth.profiles import FIELDS, Profile
from tessera.common.database import Pool


@dataclass(frozen=True)
class Account:
    """An account record (``username`` and ``password_hash`` are empty for guests)."""

    account_id: str
    username: str
    password_hash: str
    roles: tuple[str, ...]
    kind: str


@dataclass(frozen=True)
class AccountView:
    """What ``GetAccount`` shows of an account: who it is, its profile, when it was
    created (Unix seconds) and how many devices can log in to it."""

    account: Account
    profile: Profile
    created_at: int
    devices: int


class _DeviceTaken(Exception):
    """Another login created the device's account first (rolls the transaction back)."""


_COLUMNS = "id, username, password_hash, roles, kind"


def _account(row: Any) -> Account | None:
    if row is None:
        return None
    return Account(
        account_id=row["id"],
        username=row["username"] or "",
        password_hash=row["password_hash"] or "",
        roles=tuple(row["roles"]),
        kind=row["kind"],
    )


def _time(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


class AccountRecords:
    """Accounts and guest devices in PostgreSQL."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def username_taken(self, username: str) -> bool:
        found = await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE username = $1)", username
        )
        return bool(found)

    async def create_account(self, account: Account, *, now: float) -> bool:
        """Create a password account; False if the username is taken."""
        created = await self.pool.fetchval(
            "INSERT INTO accounts (id, kind, username, password_hash, roles, created_at,"
            " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)"
            " ON CONFLICT (username) DO NOTHING RETURNING id",
            account.account_id,
            account.kind,
            account.username,
            account.password_hash,
            list(account.roles),
            _time(now),
        )
        return created is not None

    async def account_by_username(self, username: str) -> Account | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM accounts WHERE username = $1", username
        )
        return _account(row)

    async def account(self, account_id: str) -> Account | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM accounts WHERE id = $1", account_id)
        return _account(row)

    async def view(self, account_id: str) -> AccountView | None:
        """The account with its profile; None if there is no such account."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, {', '.join(FIELDS)}, created_at,"
            " (SELECT count(*) FROM devices d WHERE d.account_id = a.id) AS devices"
            " FROM accounts a WHERE id = $1",
            account_id,
        )
        account = _account(row)
        if account is None:
            return None
        profile = Profile(**{f: row[f] for f in FIELDS})
        return AccountView(account, profile, int(row["created_at"].timestamp()), row["devices"])

    async def update_profile(self, account_id: str, changes: dict[str, str], *, now: float) -> bool:
        """Set the checked profile ``changes`` (field → value); False if there is no
        such account."""
        names = [f for f in FIELDS if f in changes]
        sets = ", ".join(
            f"{f} = ${i}" + ("::jsonb" if f == "metadata" else "")
            for i, f in enumerate(names, start=3)
        )
        status = await self.pool.execute(
            f"UPDATE accounts SET updated_at = $2, {sets} WHERE id = $1",
            account_id,
            _time(now),
            *(changes[f] for f in names),
        )
        return bool(status != "UPDATE 0")

    async def set_password(self, account_id: str, password_hash: str, *, now: float) -> None:
        """Replace a password hash (a rehash after the argon2 parameters changed)."""
        await self.pool.execute(
            "UPDATE accounts SET password_hash = $2, updated_at = $3 WHERE id = $1",
            account_id,
            password_hash,
            _time(now),
        )

    async def device_account(self, device_hash: str) -> str | None:
        value = await self.pool.fetchval(
            "SELECT account_id FROM devices WHERE device_hash = $1", device_hash
        )
        return None if value is None else str(value)

    async def link_device(self, account_id: str, device_hash: str, *, now: float) -> str:
        """Link a device to the account (GuestLogin with it then logs in to this
        account); the account the device belongs to afterwards, another one's if it
        was linked there already."""
        owner = await self.pool.fetchval(
            "WITH new AS (INSERT INTO devices (device_hash, account_id, created_at)"
            " VALUES ($1, $2, $3) ON CONFLICT (device_hash) DO NOTHING RETURNING account_id)"
            " SELECT account_id FROM new UNION ALL"
            " SELECT account_id FROM devices WHERE device_hash = $1 LIMIT 1",
            device_hash,
            account_id,
            _time(now),
        )
        # A concurrent link of the same device committed after this statement's snapshot.
        return str(owner) if owner is not None else str(await self.device_account(device_hash))

    async def unlink_device(self, account_id: str, device_hash: str) -> str:
        """Unlink a device from the account: ``unlinked``, ``not_linked``, or ``last``
        when it is a guest account's only device (its only way to log in), which
        stays linked."""
        async with self.pool.acquire() as conn, conn.transaction():
            kind = await conn.fetchval(
                "SELECT kind FROM accounts WHERE id = $1 FOR UPDATE", account_id
            )
            rows = await conn.fetch(
                "SELECT device_hash FROM devices WHERE account_id = $1", account_id
            )
            hashes = {r["device_hash"] for r in rows}
            if device_hash not in hashes:
                return "not_linked"
            if kind == "guest" and len(hashes) == 1:
                return "last"
            await conn.execute("DELETE FROM devices WHERE device_hash = $1", device_hash)
            return "unlinked"

    async def guest_account(
        self, device_hash: str, new_account_id: str, roles: tuple[str, ...], *, now: float
    ) -> tuple[str, bool]:
        """The device's account, creating it if the device is new; returns
        (account id, created)."""
        at = _time(now)
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO accounts (id, kind, roles, created_at, updated_at)"
                        " VALUES ($1, 'guest', $2, $3, $3)",
                        new_account_id,
                        list(roles),
                        at,
                    )
                    inserted = await conn.fetchval(
                        "INSERT INTO devices (device_hash, account_id, created_at)"
                        " VALUES ($1, $2, $3) ON CONFLICT (device_hash) DO NOTHING"
                        " RETURNING account_id",
                        device_hash,
                        new_account_id,
                        at,
                    )
                    if inserted is None:
                        raise _DeviceTaken
                return new_account_id, True
            except _DeviceTaken:
                existing = await conn.fetchval(
                    "SELECT account_id FROM devices WHERE device_hash = $1", device_hash
                )
                return str(existing), False


@dataclass(frozen=True)
class BanRecord:
    """A row of ``bans``; times are Unix seconds, ``until`` and ``lifted_at`` 0 when unset."""

    ban_id: int
    account_id: str
    reason: str
    banned_by: str
    created_at: int
    until: int
    lifted_at: int


_BAN_COLUMNS = "id, account_id, reason, banned_by, created_at, expires_at, lifted_at"
# A ban is in force while not lifted and not expired (the migration's rule).
_IN_FORCE = "lifted_at IS NULL AND (expires_at IS NULL OR expires_at > $1)"
_LIFT = f"UPDATE bans SET lifted_at = $1 WHERE account_id = $2 AND {_IN_FORCE}"


def _seconds(at: datetime | None) -> int:
    return 0 if at is None else int(at.timestamp())


def _ban(row: Any) -> BanRecord:
    return BanRecord(
        ban_id=row["id"],
        account_id=row["account_id"],
        reason=row["reason"],
        banned_by=row["banned_by"],
        created_at=_seconds(row["created_at"]),
        until=_seconds(row["expires_at"]),
        lifted_at=_seconds(row["lifted_at"]),
    )


class BanRecords:
    """Bans in PostgreSQL, kept as history: lifting stamps ``lifted_at``, nothing is deleted."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def ban(
        self, account_id: str, reason: str, banned_by: str, *, until: int, now: float
    ) -> BanRecord | None:
        """Ban an account until ``until`` (0 = permanent), lifting the ban in force it
        replaces; None when the account does not exist."""
        at = _time(now)
        async with self.pool.acquire() as conn, conn.transaction():
            # Locks the account row: two bans of one account queue behind each other.
            found = await conn.fetchval(
                "SELECT id FROM accounts WHERE id = $1 FOR UPDATE", account_id
            )
            if found is None:
                return None
            await conn.execute(_LIFT, at, account_id)
            row = await conn.fetchrow(
                "INSERT INTO bans (account_id, reason, banned_by, created_at, expires_at)"
                f" VALUES ($1, $2, $3, $4, $5) RETURNING {_BAN_COLUMNS}",
                account_id,
                reason,
                banned_by,
                at,
                _time(until) if until else None,
            )
        return _ban(row)

    async def lift(self, account_id: str, *, now: float) -> int:
        """End the account's bans in force now; how many there were."""
        status = await self.pool.execute(_LIFT, _time(now), account_id)
        return int(status.split()[-1])

    async def in_force(self, account_id: str, *, now: float) -> BanRecord | None:
        """The account's ban in force at ``now`` (the latest ending, if several)."""
        row = await self.pool.fetchrow(
            f"SELECT {_BAN_COLUMNS} FROM bans WHERE account_id = $2 AND {_IN_FORCE}"
            " ORDER BY expires_at DESC NULLS FIRST LIMIT 1",
            _time(now),
            account_id,
        )
        return None if row is None else _ban(row)

    async def page(
        self, *, active_only: bool, before_id: int, limit: int, now: float
    ) -> list[BanRecord]:
        """Up to ``limit`` bans with ids below ``before_id``, newest first."""
        if active_only:
            rows = await self.pool.fetch(
                f"SELECT {_BAN_COLUMNS} FROM bans WHERE {_IN_FORCE} AND id < $2"
                " ORDER BY id DESC LIMIT $3",
                _time(now),
                before_id,
                limit,
            )
        else:
            rows = await self.pool.fetch(
                f"SELECT {_BAN_COLUMNS} FROM bans WHERE id < $1 ORDER BY id DESC LIMIT $2",
                before_id,
                limit,
            )
        return [_ban(row) for row in rows]
