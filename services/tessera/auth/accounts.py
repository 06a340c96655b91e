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
