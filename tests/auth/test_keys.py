"""Key ring: loading PEM files, kid derivation, rotation schedule and overlap."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from tessera.auth import keys
from tessera.auth.keys import KeyRing, KeyRingError, SigningKey
from tessera.authclient.keys import public_key_from_raw


def test_kid_is_stable_and_derived_from_the_public_key() -> None:
    key = SigningKey.generate()
    again = SigningKey.from_private(key.private_key, 123)
    assert key.kid == again.kid
    assert len(key.kid) == keys.KID_CHARS
    assert SigningKey.generate().kid != key.kid


def test_kid_matches_rfc8037_thumbprint_example() -> None:
    # RFC 8037 appendix A.3: the thumbprint of the example public key.
    raw = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    public = public_key_from_raw(raw)
    assert keys.kid_for(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"[:16]


def test_schedule_current_upcoming_and_retired_within_overlap() -> None:
    old, new, later = SigningKey.generate(100), SigningKey.generate(200), SigningKey.generate(300)
    ring = KeyRing((later, old, new), overlap_s=50)
    assert ring.current(150).kid == old.kid
    assert ring.current(200).kid == new.kid
    published = ring.published(220)
    assert [p.kid for p in published] == [new.kid, later.kid, old.kid]
    assert [p.retired_at for p in published] == [0, 0, 200]
    assert old.kid not in ring.public_keys(251)  # overlap over
    assert ring.current(50).kid == old.kid  # nothing active yet: earliest signs


def test_duplicate_and_empty_rings_are_refused() -> None:
    key = SigningKey.generate()
    with pytest.raises(KeyRingError):
        KeyRing((key, key), overlap_s=1)
    with pytest.raises(KeyRingError):
        KeyRing((), overlap_s=1)


def test_directory_loading_and_rotation_by_file(tmp_path: Path) -> None:
    first = keys.write_key(tmp_path, 1000)
    (tmp_path / "README").write_text("ignored")
    (tmp_path / "..data").mkdir()  # Kubernetes Secret mounts have these
    ring = KeyRing.from_directory(tmp_path, overlap_s=60)
    assert len(ring.keys) == 1
    keys.write_key(tmp_path, 2000)
    ring = KeyRing.from_directory(tmp_path, overlap_s=60)
    assert ring.current(1500).kid != ring.current(2000).kid
    assert first.stat().st_mode & 0o777 == 0o600
    again = KeyRing.from_directory(tmp_path, overlap_s=60)
    assert [k.kid for k in again.keys] == [k.kid for k in ring.keys]


def test_directory_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match="does not exist"):
        KeyRing.from_directory(tmp_path / "missing", overlap_s=1)
    with pytest.raises(KeyRingError, match=r"no <activation>\.pem"):
        KeyRing.from_directory(tmp_path, overlap_s=1)
    (tmp_path / "1.pem").write_text("garbage")
    with pytest.raises(KeyRingError, match="not a readable"):
        KeyRing.from_directory(tmp_path, overlap_s=1)
    ec = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "1.pem").write_bytes(ec)
    with pytest.raises(KeyRingError, match="not an Ed25519"):
        KeyRing.from_directory(tmp_path, overlap_s=1)


def test_cli_writes_a_loadable_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys._cli([str(tmp_path), "--activate-at", "42"])
    assert "kid=" in capsys.readouterr().out
    assert KeyRing.from_directory(tmp_path, overlap_s=1).keys[0].activates_at == 42
