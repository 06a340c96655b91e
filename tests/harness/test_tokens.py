"""The harness's local issuer: tokens a verifier trusting only its key set accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.auth.keys import KeyRing
from tessera.authclient.keys import keys_from_json
from tessera.authclient.verifier import Verifier
from tessera.harness.tokens import LocalIssuer, service_clients
from tessera.wire.access_token import TokenError


async def test_its_service_token_is_accepted_where_its_key_set_is_trusted() -> None:
    issuer = LocalIssuer(sub="tester")
    trusting = Verifier(keys_from_json(issuer.env()["TESSERA_AUTH_PUBLIC_KEYS"]))
    token = await issuer.access_token()
    claims = trusting.verify(token, roles=("service",))
    assert (claims.sub, claims.roles) == ("tester", ("service",))
    assert await issuer.access_token() == token  # reused until it is due
    issuer.rejected(token)
    assert await issuer.access_token() != token
    with pytest.raises(TokenError) as err:
        trusting.verify(token, roles=("admin",))
    assert err.value.reason == "FORBIDDEN"
    # Another issuer's tokens are not.
    with pytest.raises(TokenError) as foreign:
        trusting.verify(await LocalIssuer().access_token())
    assert foreign.value.reason == "UNKNOWN_KEY"


def test_its_key_as_auths_key_directory(tmp_path: Path) -> None:
    issuer = LocalIssuer()
    env = issuer.auth_env(tmp_path / "keys")
    ring = KeyRing.from_directory(Path(env["TESSERA_AUTH_KEY_DIR"]), overlap_s=60)
    assert [k.kid for k in ring.keys] == [issuer.key.kid]


def test_service_clients_add_the_relays() -> None:
    assert service_clients() == "relay=harness-relay-secret-0123456789"
    assert service_clients("a=b") == "a=b,relay=harness-relay-secret-0123456789"
