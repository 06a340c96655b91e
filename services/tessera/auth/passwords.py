"""argon2id password hashing with configurable cost, and the dummy verification
that makes a login for an unknown user cost the same as a wrong password."""

from __future__ import annotations

import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tessera.auth.config import Argon2Params


class PasswordHasher:
    """argon2id with fixed parameters; hashes are PHC strings (``$argon2id$v=19$...``)."""

    def __init__(self, params: Argon2Params) -> None:
        self.params = params
        self._hasher = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        # Verified against when the account does not exist (same cost as a real check).
        self._dummy = self._hasher.hash(secrets.token_urlsafe(24))

    def hash(self, password: str) -> str:
        return str(self._hasher.hash(password))

    def verify(self, encoded: str, password: str) -> bool:
        """True if ``password`` matches; False for a mismatch or an unusable hash."""
        try:
            return bool(self._hasher.verify(encoded, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def dummy_verify(self, password: str) -> bool:
        """Spend one verification's time for an unknown account; always False."""
        self.verify(self._dummy, password)
        return False

    def needs_rehash(self, encoded: str) -> bool:
        """True if ``encoded`` was made with other parameters than the configured ones."""
        try:
            return bool(self._hasher.check_needs_rehash(encoded))
        except InvalidHashError:
            return True
