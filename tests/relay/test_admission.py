"""The relay's admission: a refused connect token becomes the gateway's Rejected."""

from __future__ import annotations

import pytest

from tessera.relay.admission import rejecting
from tessera.relay.errors import Rejected
from tessera.wire.connect_token import ConnectGrant, ConnectTokenError

GRANT = ConnectGrant(
    token_id=b"\x00" * 16,
    player_id="p1",
    session_id="s1",
    relay_addresses=("127.0.0.1:7777",),
    client_to_server_key=b"\x01" * 32,
    server_to_client_key=b"\x02" * 32,
    issued_at=0,
    expires_at=60,
    timeout_s=10,
)


def test_a_grant_passes_through_with_the_time() -> None:
    seen: list[tuple[bytes, float]] = []

    def open_token(token: bytes, now: float) -> ConnectGrant:
        seen.append((token, now))
        return GRANT

    assert rejecting(open_token)(b"tok", 12.5) is GRANT
    assert seen == [(b"tok", 12.5)]


@pytest.mark.parametrize("reason", ["MALFORMED", "BAD_SIGNATURE", "EXPIRED", "WRONG_RELAY"])
def test_a_refusal_is_rejected_with_the_reason_in_lower_case(reason: str) -> None:
    def open_token(token: bytes, now: float) -> ConnectGrant:
        raise ConnectTokenError(reason, f"because {reason}")

    with pytest.raises(Rejected) as info:
        rejecting(open_token)(b"tok", 0.0)
    assert info.value.reason == reason.lower()
    assert str(info.value) == f"because {reason}"
    assert info.value.__cause__ is None  # raised "from None": the reason says it all
