"""Accounts, devices and bans against a real PostgreSQL: uniqueness under races, round trips."""

from __future__ import annotations

import asyncio
import time

import pytest

from tessera.auth.records import Account, AccountRecords, BanRecord, BanRecords
from tessera.common.database import Pool

pytestmark = pytest.mark.integration
NOW = time.time()


def account(account_id: str, username: str) -> Account:
    return Account(account_id, username, "$argon2id$fake", ("player", "tester"), "password")


async def test_username_uniqueness_under_concurrency(database: Pool) -> None:
    records = AccountRecords(database)
    created = await asyncio.gather(
        *(records.create_account(account(f"id{i}", "same"), now=NOW) for i in range(20))
    )
    assert sum(created) == 1
    winner = await records.account_by_username("same")
    assert winner == account(f"id{created.index(True)}", "same")
    assert await records.username_taken("same")
    assert not await records.username_taken("other")
    assert await records.account_by_username("other") is None


async def test_guest_account_per_device_under_concurrency(database: Pool) -> None:
    records = AccountRecords(database)
    results = await asyncio.gather(
        *(records.guest_account("devhash", f"g{i}", ("player",), now=NOW) for i in range(10))
    )
    assert len({account_id for account_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    guest = await records.account(results[0][0])
    assert guest == Account(results[0][0], "", "", ("player",), "guest")
    assert await records.device_account("devhash") == results[0][0]
    assert await records.device_account("other") is None
    # The losers' accounts were rolled back with their device rows.
    assert await database.fetchval("SELECT count(*) FROM accounts") == 1


async def test_set_password_replaces_the_hash(database: Pool) -> None:
    records = AccountRecords(database)
    assert await records.create_account(account("a1", "alice"), now=NOW)
    await records.set_password("a1", "$argon2id$new", now=NOW + 5)
    found = await records.account("a1")
    assert found is not None and found.password_hash == "$argon2id$new"
    assert await records.account("missing") is None


async def test_bans_are_history_in_force_until_expired_replaced_or_lifted(database: Pool) -> None:
    await AccountRecords(database).create_account(account("acc", "banned"), now=NOW)
    bans = BanRecords(database)
    t = int(NOW)
    assert await bans.ban("nobody", "x", "admin", until=0, now=NOW) is None
    first = await bans.ban("acc", "spam", "admin", until=t + 100, now=NOW)
    assert first is not None
    assert first == BanRecord(first.ban_id, "acc", "spam", "admin", t, t + 100, 0)
    assert await bans.in_force("acc", now=NOW + 99) == first
    assert await bans.in_force("acc", now=NOW + 100) is None  # expired
    second = await bans.ban("acc", "cheat", "root", until=0, now=NOW + 1)
    assert second is not None and second.ban_id > first.ban_id
    assert await bans.in_force("acc", now=NOW + 10_000) == second
    history = await bans.page(active_only=False, before_id=2**63 - 1, limit=10, now=NOW + 2)
    assert [b.ban_id for b in history] == [second.ban_id, first.ban_id]
    assert history[1].lifted_at == t + 1  # replaced by the second
    assert await bans.lift("acc", now=NOW + 3) == 1
    assert await bans.in_force("acc", now=NOW + 3) is None
    assert await bans.page(active_only=True, before_id=2**63 - 1, limit=10, now=NOW + 3) == []
    assert await bans.lift("acc", now=NOW + 4) == 0
