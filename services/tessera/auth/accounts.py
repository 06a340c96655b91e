"""Rules for usernames, passwords and device ids (pure; checked before any hashing).

Usernames are normalized with Unicode NFKC and lower-cased, then must be 3-32
characters of ASCII letters, digits, ``_``, ``-`` and ``.``. Keeping the final
form ASCII rules out look-alike names from other scripts (Cyrillic ``а`` vs
Latin ``a``); NFKC still folds full-width and other compatibility forms, so
``Ａｌｉｃｅ`` and ``alice`` are the same account.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources

USERNAME_RE = re.compile(r"[a-z0-9_.-]{3,32}")
MAX_USERNAME_INPUT = 128
MAX_PASSWORD_BYTES = 256
DEVICE_ID_RE = re.compile(r"[\x21-\x7e]{16,128}")
MAX_SECRET_INPUT = 256


@dataclass(frozen=True)
class InputError(Exception):
    """A request field breaks a rule: ``field``, a stable ``reason`` and a message."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return self.message


def normalize_username(raw: str) -> str:
    """NFKC + lower case; raise USERNAME_INVALID if the result breaks the rules."""
    if len(raw) > MAX_USERNAME_INPUT:
        raise InputError("username", "USERNAME_INVALID", "username is too long (max 32)")
    name = unicodedata.normalize("NFKC", raw).lower()
    if not name:
        raise InputError("username", "USERNAME_INVALID", "username is required")
    if not 3 <= len(name) <= 32:
        raise InputError(
            "username", "USERNAME_INVALID", f"username must be 3-32 characters, not {len(name)}"
        )
    if USERNAME_RE.fullmatch(name) is None:
        raise InputError(
            "username",
            "USERNAME_INVALID",
            "username may only contain letters a-z, digits, '_', '-' and '.'",
        )
    return name


def check_password_size(password: str) -> None:
    """Reject empty and over-long passwords (before any hashing)."""
    if not password:
        raise InputError("password", "PASSWORD_INVALID", "password is required")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise InputError(
            "password", "PASSWORD_TOO_LONG", f"password exceeds {MAX_PASSWORD_BYTES} bytes"
        )


def check_new_password(password: str, *, username: str, min_length: int) -> None:
    """The password policy for new passwords: size, minimum length, not common."""
    check_password_size(password)
    if len(password) < min_length:
        raise InputError(
            "password",
            "PASSWORD_TOO_SHORT",
            f"password must have at least {min_length} characters",
        )
    folded = unicodedata.normalize("NFKC", password).lower()
    if folded in common_passwords() or len(set(folded)) <= 2:
        raise InputError(
            "password", "PASSWORD_TOO_COMMON", "password is too common; choose another"
        )
    if username and username in folded:
        raise InputError(
            "password", "PASSWORD_CONTAINS_USERNAME", "password must not contain the username"
        )


def check_device_id(device_id: str) -> str:
    """A device id: 16-128 printable ASCII characters without spaces."""
    if DEVICE_ID_RE.fullmatch(device_id) is None:
        raise InputError(
            "device_id",
            "DEVICE_ID_INVALID",
            "device_id must be 16-128 printable ASCII characters without spaces",
        )
    return device_id


def check_secret_size(value: str, field: str) -> str:
    """Bound an opaque secret (refresh token, client secret) before hashing it."""
    if not value:
        raise InputError(field, "INVALID_ARGUMENT", f"{field} is required")
    if len(value) > MAX_SECRET_INPUT:
        raise InputError(field, "INVALID_ARGUMENT", f"{field} is too long")
    return value


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (``common_passwords.txt``), lower case."""
    text = resources.files("tessera.auth").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


ACCOUNT_ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
MAX_BAN_REASON = 500
MAX_BAN_PAGE = 500
DEFAULT_BAN_PAGE = 100
# Beyond this a ban is meant as permanent (until = 0); also keeps timestamps in range.
MAX_BAN_SECONDS = 100 * 365 * 86_400


def check_account_id(account_id: str) -> str:
    """An account id named by an admin: 1-128 letters, digits and ``._:@-``."""
    if ACCOUNT_ID_RE.fullmatch(account_id) is None:
        raise InputError(
            "account_id",
            "INVALID_ARGUMENT",
            "account_id must be 1-128 characters of letters, digits and ._:@-",
        )
    return account_id


def check_ban_reason(reason: str) -> str:
    """A ban's reason: 1-500 characters once stripped."""
    text = reason.strip()
    if not text or len(text) > MAX_BAN_REASON:
        raise InputError(
            "reason", "INVALID_ARGUMENT", f"reason must be 1-{MAX_BAN_REASON} characters"
        )
    return text


def check_ban_until(until: int, *, now: float) -> int:
    """When a ban ends: 0 (permanent) or a Unix time after ``now`` within 100 years."""
    if until != 0 and not now < until <= now + MAX_BAN_SECONDS:
        raise InputError(
            "until",
            "INVALID_ARGUMENT",
            "until must be 0 (permanent) or a Unix time in the future, within 100 years",
        )
    return until


def check_ban_page(page_size: int, page_token: str) -> tuple[int, int]:
    """A ListBans page: (size, ids below which to list); size 0 means the default."""
    if page_size > MAX_BAN_PAGE:
        raise InputError(
            "page_size", "INVALID_ARGUMENT", f"page_size must be at most {MAX_BAN_PAGE}"
        )
    if not page_token:
        return page_size or DEFAULT_BAN_PAGE, 2**63 - 1
    if not page_token.isdigit() or len(page_token) > 19:
        raise InputError("page_token", "INVALID_ARGUMENT", "page_token is not from ListBans")
    return page_size or DEFAULT_BAN_PAGE, int(page_token)
