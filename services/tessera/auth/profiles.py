"""Rules for an account's profile (``GetAccount``, ``UpdateAccount``): what each field
may hold, checked before anything is written. Pure: the SQL is in :mod:`records`.

The fields follow Nakama's account: a display name, an avatar URL, a language
tag, a location, a time zone and a JSON object of the game's own (``metadata``).
Text fields are single-line and printable (no control characters); gRPC already
guarantees UTF-8.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tessera.auth.accounts import InputError

MAX_DISPLAY_NAME = 64
MAX_AVATAR_URL = 512
MAX_LOCATION = 128
MAX_TIMEZONE = 64
MAX_METADATA_BYTES = 16 * 1024
# A BCP 47 language tag's shape (en, en-GB, zh-Hant-TW), at most 35 characters.
LANG_TAG_RE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,5}")
MAX_LANG_TAG = 35

FIELDS = ("display_name", "avatar_url", "lang_tag", "location", "timezone", "metadata")


@dataclass(frozen=True)
class Profile:
    """An account's profile; ``metadata`` is the JSON object's text."""

    display_name: str = ""
    avatar_url: str = ""
    lang_tag: str = ""
    location: str = ""
    timezone: str = ""
    metadata: str = "{}"


def _text(field: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise InputError(field, "PROFILE_INVALID", f"{field} must be at most {limit} characters")
    if not value.isprintable():
        raise InputError(field, "PROFILE_INVALID", f"{field} must not hold control characters")
    return value


def check_display_name(value: str) -> str:
    """0-64 printable characters, surrounding spaces removed."""
    return _text("display_name", value.strip(), MAX_DISPLAY_NAME)


def check_avatar_url(value: str) -> str:
    """Empty, or an http(s) URL with a host, at most 512 characters, no spaces."""
    if not value:
        return value
    _text("avatar_url", value, MAX_AVATAR_URL)
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or " " in value:
        raise InputError("avatar_url", "PROFILE_INVALID", "avatar_url must be an http(s) URL")
    return value


def check_lang_tag(value: str) -> str:
    """Empty, or a BCP 47-shaped language tag (``en``, ``pt-BR``)."""
    if value and (len(value) > MAX_LANG_TAG or LANG_TAG_RE.fullmatch(value) is None):
        raise InputError(
            "lang_tag", "PROFILE_INVALID", "lang_tag must be a language tag such as en or pt-BR"
        )
    return value


def check_location(value: str) -> str:
    """0-128 printable characters, surrounding spaces removed."""
    return _text("location", value.strip(), MAX_LOCATION)


def check_timezone(value: str) -> str:
    """Empty, or an IANA time zone name (``Europe/Paris``)."""
    if not value:
        return value
    _text("timezone", value, MAX_TIMEZONE)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            "timezone", "PROFILE_INVALID", "timezone must be an IANA name such as Europe/Paris"
        ) from None
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_metadata(value: str) -> str:
    """A JSON object of at most 16 KiB (UTF-8), without NaN or NUL characters
    (PostgreSQL's jsonb holds neither); returned in its compact form."""
    if len(value.encode("utf-8")) > MAX_METADATA_BYTES:
        raise InputError(
            "metadata", "METADATA_TOO_LARGE", f"metadata must be at most {MAX_METADATA_BYTES} bytes"
        )
    try:
        parsed = json.loads(value, parse_constant=_no_constant)
    except ValueError as err:
        raise InputError("metadata", "METADATA_INVALID", f"metadata is not JSON: {err}") from None
    if not isinstance(parsed, dict):
        raise InputError("metadata", "METADATA_INVALID", "metadata must be a JSON object")
    text = json.dumps(parsed, ensure_ascii=False, separators=(",", ":"))
    if "\\u0000" in text:
        raise InputError("metadata", "METADATA_INVALID", "metadata must not hold NUL characters")
    return text


_CHECKS = {
    "display_name": check_display_name,
    "avatar_url": check_avatar_url,
    "lang_tag": check_lang_tag,
    "location": check_location,
    "timezone": check_timezone,
    "metadata": check_metadata,
}


def check_changes(changes: Mapping[str, str]) -> dict[str, str]:
    """The checked values of the fields an update sets (a subset of :data:`FIELDS`);
    InputError for the first field that breaks its rule, or for an empty update."""
    if not changes:
        raise InputError("", "NO_CHANGES", f"set at least one of {', '.join(FIELDS)}")
    return {field: _CHECKS[field](value) for field, value in changes.items()}
