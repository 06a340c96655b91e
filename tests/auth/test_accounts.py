"""Username, password and device-id rules."""

from __future__ import annotations

import pytest

from tessera.auth import accounts
from tessera.auth.accounts import InputError


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Alice", "alice"),
        ("ＡＬＩＣＥ", "alice"),  # full-width
        ("bob_the-3rd.x", "bob_the-3rd.x"),
        ("ﬁsh", "fish"),  # ligature folds under NFKC
    ],
)
def test_normalization(raw: str, normalized: str) -> None:
    assert accounts.normalize_username(raw) == normalized


@pytest.mark.parametrize("raw", ["", "ab", "a" * 33, "a b", "ällo", "раураl", "x@y", "a" * 10_000])
def test_invalid_usernames(raw: str) -> None:
    with pytest.raises(InputError) as info:
        accounts.normalize_username(raw)
    assert info.value.field == "username" and info.value.reason == "USERNAME_INVALID"


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("", "PASSWORD_INVALID"),
        ("short", "PASSWORD_TOO_SHORT"),
        ("x" * 257, "PASSWORD_TOO_LONG"),
        ("é" * 129, "PASSWORD_TOO_LONG"),  # 258 bytes in UTF-8
        ("PASSWORD123", "PASSWORD_TOO_COMMON"),
        ("abababababab", "PASSWORD_TOO_COMMON"),
        ("i am zelda and proud", "PASSWORD_CONTAINS_USERNAME"),
    ],
)
def test_password_policy(password: str, reason: str) -> None:
    with pytest.raises(InputError) as info:
        accounts.check_new_password(password, username="zelda", min_length=10)
    assert info.value.reason == reason


def test_good_password() -> None:
    accounts.check_new_password("tr0ub4dor & 3", username="zelda", min_length=10)


def test_common_list_is_shipped_and_lower_case() -> None:
    common = accounts.common_passwords()
    assert len(common) >= 300
    assert "123456" in common and "password" in common
    assert all(p == p.lower() for p in common)


def test_device_ids() -> None:
    assert accounts.check_device_id("A" * 16) == "A" * 16
    for bad in ("A" * 15, "A" * 129, "A" * 15 + " ", "ü" * 16, "A" * 15 + "\n"):
        with pytest.raises(InputError):
            accounts.check_device_id(bad)


def test_secret_size() -> None:
    assert accounts.check_secret_size("abc", "refresh_token") == "abc"
    for bad in ("", "x" * 257):
        with pytest.raises(InputError) as info:
            accounts.check_secret_size(bad, "refresh_token")
        assert info.value.field == "refresh_token"


@pytest.mark.parametrize("account_id", ["a", "0123abcdef" * 12, "service:matchmaking", "x@y.z-_"])
def test_account_ids_an_admin_may_name(account_id: str) -> None:
    assert accounts.check_account_id(account_id) == account_id


@pytest.mark.parametrize("account_id", ["", "a" * 129, "a b", "ä", "a/b", "a\n"])
def test_bad_account_ids_are_refused(account_id: str) -> None:
    with pytest.raises(InputError) as info:
        accounts.check_account_id(account_id)
    assert info.value.field == "account_id"


def test_ban_reasons_are_stripped_and_bounded() -> None:
    assert accounts.check_ban_reason("  cheating \n") == "cheating"
    assert accounts.check_ban_reason("x" * 500) == "x" * 500
    for bad in ("", "   ", "x" * 501):
        with pytest.raises(InputError):
            accounts.check_ban_reason(bad)


@pytest.mark.parametrize(
    ("until", "ok"),
    [
        (0, True),
        (1001, True),
        (1000 + accounts.MAX_BAN_SECONDS, True),
        (1000, False),
        (1, False),
        (-5, False),
        (1001 + accounts.MAX_BAN_SECONDS, False),
        (2**63 - 1, False),
    ],
)
def test_ban_until_is_permanent_or_in_the_future(until: int, ok: bool) -> None:
    if ok:
        assert accounts.check_ban_until(until, now=1000.0) == until
    else:
        with pytest.raises(InputError) as info:
            accounts.check_ban_until(until, now=1000.0)
        assert info.value.field == "until"


def test_ban_pages() -> None:
    assert accounts.check_ban_page(0, "") == (100, 2**63 - 1)
    assert accounts.check_ban_page(500, "42") == (500, 42)
    for size, token in ((501, ""), (1, "-1"), (1, "abc"), (1, "9" * 20)):
        with pytest.raises(InputError):
            accounts.check_ban_page(size, token)
