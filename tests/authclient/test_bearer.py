"""Bearer metadata: the ``authorization: Bearer <token>`` entry of a call."""

from __future__ import annotations

import pytest

from tessera.authclient.bearer import bearer_metadata, bearer_token
from tessera.wire.access_token import TokenError


def test_bearer_parsing() -> None:
    assert bearer_token([("x", "y"), ("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("authorization", "bearer abc ")]) == "abc"
    for metadata, expected in (
        ([], "MISSING"),
        (None, "MISSING"),
        ([("authorization", "Basic abc")], "MALFORMED"),
        ([("authorization", "Bearer ")], "MALFORMED"),
    ):
        with pytest.raises(TokenError) as info:
            bearer_token(metadata)
        assert info.value.reason == expected


def test_bearer_metadata_round_trips_as_str_and_bytes() -> None:
    ((key, value),) = bearer_metadata("a.b.c")
    assert (key, value) == ("authorization", "Bearer a.b.c")
    assert bearer_token(bearer_metadata("a.b.c")) == "a.b.c"
    assert bearer_token([(key, value.encode("latin-1"))]) == "a.b.c"
    # Only the first authorization entry counts.
    with pytest.raises(TokenError):
        bearer_token([("authorization", "Basic x"), *bearer_metadata("a.b.c")])
