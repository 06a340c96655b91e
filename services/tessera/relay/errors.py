"""Why a connect attempt is refused: :class:`Rejected` and its stable reasons.

Token admission raises it (``malformed``, ``bad_signature``, ``expired``,
``wrong_relay``, ``wrong_world``, ``replayed``), and so does placement when no
zone takes the player (``no_zone``, ``zone_unavailable``, ``join_failed``). The
transports count the reason in ``tessera_relay_handshakes_total`` and send it to
the client.
"""

from __future__ import annotations


class Rejected(Exception):
    """A connect attempt refused; ``reason`` is the stable label counted and sent."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
