"""The Ed25519 key ring that signs access and connect tokens.

Keys come from a directory of PEM files (a Kubernetes Secret mount) or are
generated in memory for local runs. Each file is named ``<activation>.pem``
(optionally ``<activation>-<label>.pem``), where ``<activation>`` is the Unix time
at which it starts signing. That makes rotation deterministic across replicas
and restarts:

- the *current* key is the one with the latest activation time <= now;
- keys activating later are *upcoming*: published (so verifiers learn them
  before the first token signed with them) but not used for signing;
- a key is *retired* when its successor activates and stays published for
  ``overlap_s`` seconds after that (long enough for its tokens to expire).

The key id (``kid``) is derived from the public key (an RFC 7638 JWK thumbprint,
shortened), so every replica computes the same ``kid`` from the same file.

``python -m tessera.auth.keys DIR [--activate-at UNIX]`` writes a new key file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from tessera.wire.access_token import b64url

KEY_FILE_RE = re.compile(r"(\d{1,12})(?:-[A-Za-z0-9_.-]{1,64})?\.pem")
KID_CHARS = 16


class KeyRingError(ValueError):
    """The key directory is missing, empty or holds an unusable file."""


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The raw 32-byte Ed25519 public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def kid_for(public_key: Ed25519PublicKey) -> str:
    """The key id: the first 16 characters of the RFC 7638 JWK thumbprint."""
    jwk = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw_public_bytes(public_key))},
        separators=(",", ":"),
        sort_keys=True,
    )
    return b64url(hashlib.sha256(jwk.encode()).digest())[:KID_CHARS]


@dataclass(frozen=True)
class SigningKey:
    """One key of the ring."""

    kid: str
    private_key: Ed25519PrivateKey
    public_key: Ed25519PublicKey
    activates_at: int

    @classmethod
    def from_private(cls, private_key: Ed25519PrivateKey, activates_at: int) -> SigningKey:
        public_key = private_key.public_key()
        return cls(kid_for(public_key), private_key, public_key, activates_at)

    @classmethod
    def generate(cls, activates_at: int = 0) -> SigningKey:
        return cls.from_private(Ed25519PrivateKey.generate(), activates_at)


@dataclass(frozen=True)
class PublishedKey:
    """A key as verifiers see it; ``retired_at`` is 0 for current and upcoming keys."""

    kid: str
    public_key: Ed25519PublicKey
    retired_at: int


@dataclass(frozen=True)
class KeyRing:
    """Keys ordered by activation time; which one signs depends only on ``now``."""

    keys: tuple[SigningKey, ...]
    overlap_s: int

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyRingError("a key ring needs at least one key")
        kids = [k.kid for k in self.keys]
        if len(set(kids)) != len(kids):
            raise KeyRingError("the key ring holds the same key twice")
        object.__setattr__(self, "keys", tuple(sorted(self.keys, key=lambda k: k.activates_at)))

    def _current_index(self, now: float) -> int:
        active = [i for i, k in enumerate(self.keys) if k.activates_at <= now]
        # Before the first activation time (clock skew on a fresh ring) the earliest key signs.
        return active[-1] if active else 0

    def current(self, now: float) -> SigningKey:
        """The key that signs tokens at ``now``."""
        return self.keys[self._current_index(now)]

    def published(self, now: float) -> list[PublishedKey]:
        """Current key first, then upcoming keys, then retired keys inside the overlap."""
        index = self._current_index(now)
        current = self.keys[index]
        out = [PublishedKey(current.kid, current.public_key, 0)]
        out += [PublishedKey(k.kid, k.public_key, 0) for k in self.keys[index + 1 :]]
        for i in range(index - 1, -1, -1):
            retired_at = self.keys[i + 1].activates_at
            if now - retired_at <= self.overlap_s:
                out.append(PublishedKey(self.keys[i].kid, self.keys[i].public_key, retired_at))
        return out

    def public_keys(self, now: float) -> dict[str, Ed25519PublicKey]:
        """kid -> public key for every key a verifier should accept at ``now``."""
        return {k.kid: k.public_key for k in self.published(now)}

    def with_key(self, key: SigningKey) -> KeyRing:
        """A ring with ``key`` added (a rotation when it activates now)."""
        return KeyRing((*self.keys, key), self.overlap_s)

    @classmethod
    def generate(cls, *, overlap_s: int) -> KeyRing:
        """A ring with one fresh key, for local runs and tests."""
        return cls((SigningKey.generate(0),), overlap_s)

    @classmethod
    def from_directory(cls, directory: Path, *, overlap_s: int) -> KeyRing:
        """Load every ``<activation>[-label].pem`` file (PKCS#8 Ed25519 private keys)."""
        if not directory.is_dir():
            raise KeyRingError(f"key directory {directory} does not exist")
        keys: list[SigningKey] = []
        for path in sorted(directory.iterdir()):
            match = KEY_FILE_RE.fullmatch(path.name)
            if match is None or not path.is_file():
                continue
            keys.append(SigningKey.from_private(_load_private(path), int(match.group(1))))
        if not keys:
            raise KeyRingError(f"key directory {directory} holds no <activation>.pem key file")
        return cls(tuple(keys), overlap_s)


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as err:
        raise KeyRingError(f"{path}: not a readable unencrypted PEM private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyRingError(f"{path}: not an Ed25519 private key")
    return key


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM of a private key, the format of the key files."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_key(directory: Path, activates_at: int) -> Path:
    """Write a fresh key file activating at ``activates_at``; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{activates_at}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem(Ed25519PrivateKey.generate()))
    return path


def _cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tessera.auth.keys", description="Write a new Ed25519 signing key file."
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--activate-at",
        type=int,
        default=None,
        help="Unix time at which the key starts signing (default: now)",
    )
    args = parser.parse_args(argv)
    activates_at = int(time.time()) if args.activate_at is None else args.activate_at
    path = write_key(args.directory, activates_at)
    key = SigningKey.from_private(_load_private(path), activates_at)
    print(f"{path} kid={key.kid} activates_at={activates_at}")


if __name__ == "__main__":
    _cli()
