"""Access tokens without a login, for tests and benchmarks.

:func:`access_metadata` signs a token of any role with a test's own key.
:class:`LocalIssuer` stands in for auth where none runs: one generated signing
key whose public half zones trust through ``TESSERA_AUTH_PUBLIC_KEYS``
(:meth:`LocalIssuer.env`), and ``service`` tokens signed with it by the code auth
signs with (:mod:`tessera.wire.access_token`), put on every call of
:meth:`LocalIssuer.channel`. Written as auth's key directory
(:meth:`LocalIssuer.auth_env`), the same key makes auth's own tokens valid there
too. :data:`LOCAL` is the one the harness uses unless told otherwise. A relay
logs in to auth with :data:`RELAY_CLIENT` (:func:`relay_login_env`, :func:`service_clients`).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Final

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tessera.auth.keys import SigningKey, private_pem
from tessera.authclient.credentials import RENEW_BEFORE_S, bearer_interceptors
from tessera.authclient.keys import key_set_json
from tessera.common import tls
from tessera.wire import access_token
from tessera.wire.access_token import Claims


def access_metadata(
    kid: str, key: Ed25519PrivateKey, *roles: str, sub: str = "tester", ttl_s: int = 900
) -> tuple[tuple[str, str], ...]:
    """Call metadata with an access token of ``roles`` signed by ``key`` (id ``kid``)."""
    return (("authorization", f"Bearer {_token(kid, key, roles, sub, ttl_s)}"),)


def _token(kid: str, key: Ed25519PrivateKey, roles: tuple[str, ...], sub: str, ttl_s: int) -> str:
    now = int(time.time())
    claims = Claims(
        sub=sub,
        sid=uuid.uuid4().hex,
        roles=roles,
        iat=now,
        exp=now + ttl_s,
        iss="tessera",
        aud="tessera",
        kid=kid,
    )
    return access_token.encode(claims, key)


class LocalIssuer:
    """A signing key of the harness's own and the tokens it signs (subject ``sub``)."""

    def __init__(self, sub: str = "harness", ttl_s: int = 900) -> None:
        self.key = SigningKey.generate()
        self.sub = sub
        self.ttl_s = ttl_s
        self._token = ""
        self._expires = 0.0

    def env(self) -> dict[str, str]:
        """The setting that makes a service trust this key (and only it)."""
        return {"TESSERA_AUTH_PUBLIC_KEYS": key_set_json({self.key.kid: self.key.public_key})}

    def auth_env(self, directory: Path) -> dict[str, str]:
        """Settings making auth sign with this key: written to ``directory`` as its
        key directory (activation 0)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "0.pem").write_bytes(private_pem(self.key.private_key))
        return {"TESSERA_AUTH_KEY_DIR": str(directory)}

    def metadata(self, *roles: str) -> tuple[tuple[str, str], ...]:
        """Call metadata with a fresh token of ``roles``."""
        return access_metadata(self.key.kid, self.key.private_key, *roles, sub=self.sub)

    async def access_token(self) -> str:
        """A ``service`` token, signed again when it is about to expire."""
        if self._expires - RENEW_BEFORE_S < time.time():
            roles = ("service",)
            self._token = _token(self.key.kid, self.key.private_key, roles, self.sub, self.ttl_s)
            self._expires = time.time() + self.ttl_s
        return self._token

    def rejected(self, token: str) -> None:
        if token == self._token:
            self._expires = 0.0

    def channel(self, address: str) -> grpc.aio.Channel:
        """A channel to zone ``address`` (:func:`tessera.common.tls.channel`) whose
        calls carry a ``service`` token."""
        return tls.channel(address, zone=True, interceptors=bearer_interceptors(self))


LOCAL: Final = LocalIssuer()

# The relay's service client in harness stacks (auth must know it: service_clients).
RELAY_CLIENT: Final = ("relay", "harness-relay-secret-0123456789")


def service_clients(clients: str = "") -> str:
    """auth's TESSERA_AUTH_SERVICE_CLIENTS: ``clients`` and the relay's."""
    relay = "=".join(RELAY_CLIENT)
    return f"{clients},{relay}" if clients else relay


def relay_login_env() -> dict[str, str]:
    """A relay's settings for logging in as :data:`RELAY_CLIENT`."""
    client_id, secret = RELAY_CLIENT
    return {"TESSERA_SERVICE_CLIENT_ID": client_id, "TESSERA_SERVICE_CLIENT_SECRET": secret}
