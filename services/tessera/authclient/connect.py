"""Connect-token opening with auth's public keys, cached and refreshed (the relay's admission).

The keys come from ``Auth.GetPublicKeys`` and are cached for the ``max_age_s``
the answer names; a token signed with an unknown key id triggers one early
refresh (rate-limited), so a key rotation does not lock clients out. The token
format is :mod:`tessera.wire.connect_token`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tessera.authclient.keys import usable_keys
from tessera.common import tls
from tessera.v1 import auth_pb2, auth_pb2_grpc
from tessera.wire.connect_token import ConnectGrant, ConnectTokenError, open_connect_token

log = logging.getLogger(__name__)

# An unknown key refreshes the keys early, but not sooner than this after the last fetch.
MIN_REFRESH_S = 5.0
# How often :meth:`ConnectTokenOpener.keep_fresh` looks whether the keys are due.
CHECK_S = 1.0


class ConnectTokenOpener:
    """Opens connect tokens for ``relay_address`` with auth's current keys."""

    def __init__(self, *, auth_address: str, sealing_key: bytes, relay_address: str) -> None:
        self.auth_address = auth_address
        self.sealing_key = sealing_key
        self.relay_address = relay_address
        self.public_keys: dict[str, Ed25519PublicKey] = {}
        self.max_age_s = 300.0
        self.fetched_at = 0.0
        self._channel = tls.channel(auth_address)
        self._stub: Any = auth_pb2_grpc.AuthStub(self._channel)
        self.refresh_wanted = False

    async def refresh(self) -> None:
        """Fetch the key set from auth (raises grpc errors)."""
        key_set = await self._stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest(), timeout=3.0)
        self.public_keys = usable_keys(key_set)
        self.max_age_s = float(key_set.max_age_s or 300)
        self.fetched_at = time.monotonic()
        self.refresh_wanted = False
        log.info("auth keys loaded", extra={"kids": sorted(self.public_keys)})

    def due(self, now: float) -> bool:
        """Whether the keys should be fetched again."""
        age = now - self.fetched_at
        return age > self.max_age_s or (self.refresh_wanted and age > MIN_REFRESH_S)

    async def keep_fresh(self) -> None:
        """Fetch the keys again whenever they are due, forever (a failure is logged
        and tried again at the next check)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CHECK_S)
            if self.due(loop.time()):
                try:
                    await self.refresh()
                except Exception as err:
                    log.warning("auth key refresh failed", extra={"error": str(err)})

    def open(self, token: bytes, now: float) -> ConnectGrant:
        """What ``token`` grants at ``now``; ConnectTokenError if it is refused (a bad
        signature, e.g. by a key not seen yet, asks for an early refresh)."""
        try:
            return open_connect_token(
                token,
                public_keys=self.public_keys,
                sealing_key=self.sealing_key,
                relay_address=self.relay_address,
                now=now,
            )
        except ConnectTokenError as err:
            if err.reason == "BAD_SIGNATURE":
                self.refresh_wanted = True
            raise

    async def close(self) -> None:
        await self._channel.close(None)
