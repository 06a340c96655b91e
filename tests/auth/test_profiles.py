"""The profile rules: what each field may hold, and updates that set nothing."""

from __future__ import annotations

import json

import pytest

from tessera.auth import profiles
from tessera.auth.accounts import InputError


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("display_name", "  Ada  ", "Ada"),
        ("display_name", "Ünïcødé 名前", "Ünïcødé 名前"),
        ("display_name", "", ""),
        ("avatar_url", "https://cdn.example.com/a.png", "https://cdn.example.com/a.png"),
        ("avatar_url", "", ""),
        ("lang_tag", "pt-BR", "pt-BR"),
        ("lang_tag", "zh-Hant-TW", "zh-Hant-TW"),
        ("location", " Lyon, France ", "Lyon, France"),
        ("timezone", "Europe/Paris", "Europe/Paris"),
        ("timezone", "", ""),
        ("metadata", '{ "level": 3, "tags": ["a"] }', '{"level":3,"tags":["a"]}'),
        ("metadata", '{"名": "値"}', '{"名":"値"}'),
    ],
)
def test_valid_fields_are_stored_in_their_checked_form(field: str, value: str, stored: str) -> None:
    assert profiles.check_changes({field: value}) == {field: stored}


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("display_name", "x" * 65, "PROFILE_INVALID"),
        ("display_name", "line\nbreak", "PROFILE_INVALID"),
        ("display_name", "bell\x07", "PROFILE_INVALID"),
        ("avatar_url", "javascript:alert(1)", "PROFILE_INVALID"),
        ("avatar_url", "https://", "PROFILE_INVALID"),
        ("avatar_url", "https://a.com/" + "x" * 500, "PROFILE_INVALID"),
        ("avatar_url", "https://a.com/a b.png", "PROFILE_INVALID"),
        ("avatar_url", "http://[::1", "PROFILE_INVALID"),
        ("lang_tag", "english!", "PROFILE_INVALID"),
        ("lang_tag", "e", "PROFILE_INVALID"),
        ("location", "y" * 129, "PROFILE_INVALID"),
        ("timezone", "Mars/Olympus", "PROFILE_INVALID"),
        ("timezone", "../../etc/passwd", "PROFILE_INVALID"),
        ("metadata", "", "METADATA_INVALID"),
        ("metadata", "[1, 2]", "METADATA_INVALID"),
        ("metadata", '{"a": NaN}', "METADATA_INVALID"),
        ("metadata", '{"a": "\\u0000"}', "METADATA_INVALID"),
        ("metadata", "{'single': 'quotes'}", "METADATA_INVALID"),
        ("metadata", json.dumps({"k": "v" * profiles.MAX_METADATA_BYTES}), "METADATA_TOO_LARGE"),
    ],
)
def test_invalid_fields_are_refused_with_their_reason(field: str, value: str, reason: str) -> None:
    with pytest.raises(InputError) as err:
        profiles.check_changes({field: value})
    assert (err.value.field, err.value.reason) == (field, reason)


def test_metadata_size_counts_utf8_bytes() -> None:
    # 6,000 three-byte characters: 18,000 bytes, over the limit at fewer characters.
    with pytest.raises(InputError):
        profiles.check_metadata(json.dumps({"k": "€" * 6000}, ensure_ascii=False))
    assert profiles.check_metadata(json.dumps({"k": "€" * 5000}, ensure_ascii=False))


def test_an_update_must_set_something() -> None:
    with pytest.raises(InputError) as err:
        profiles.check_changes({})
    assert err.value.reason == "NO_CHANGES"
