"""The relay's admission: a connect token refused by its opener (e.g.
:class:`tessera.authclient.connect.ConnectTokenOpener`) becomes the gateway's
:class:`~tessera.relay.errors.Rejected`, with the reason in lower case
(``expired``, ``bad_signature``, ``wrong_relay``, ``malformed``)."""

from __future__ import annotations

from collections.abc import Callable

from tessera.relay.errors import Rejected
from tessera.relay.gateway import TokenOpener
from tessera.wire.connect_token import ConnectGrant, ConnectTokenError


def rejecting(open_token: Callable[[bytes, float], ConnectGrant]) -> TokenOpener:
    """The gateway's TokenOpener over ``open_token``, which raises ConnectTokenError."""

    def opener(token: bytes, now: float) -> ConnectGrant:
        try:
            return open_token(token, now)
        except ConnectTokenError as err:
            raise Rejected(err.reason.lower(), err.message) from None

    return opener
