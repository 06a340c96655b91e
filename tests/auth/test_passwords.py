"""argon2id hashing: parameters, verification, dummy verification, rehash."""

from __future__ import annotations

import time
from collections.abc import Callable

from tessera.auth.config import Argon2Params
from tessera.auth.passwords import PasswordHasher

CHEAP = Argon2Params(time_cost=1, memory_kib=64, parallelism=1)


def test_hash_and_verify() -> None:
    hasher = PasswordHasher(CHEAP)
    encoded = hasher.hash("secret password")
    assert encoded.startswith("$argon2id$v=19$m=64,t=1,p=1$")
    assert hasher.verify(encoded, "secret password")
    assert not hasher.verify(encoded, "wrong password")
    assert not hasher.verify("not a hash", "secret password")
    assert hasher.hash("secret password") != encoded  # salted


def test_needs_rehash_when_parameters_change() -> None:
    old = PasswordHasher(CHEAP).hash("pw")
    stronger = PasswordHasher(Argon2Params(time_cost=2, memory_kib=128, parallelism=1))
    assert stronger.needs_rehash(old)
    assert not stronger.needs_rehash(stronger.hash("pw"))
    assert stronger.needs_rehash("garbage")


def test_dummy_verify_costs_like_a_real_one() -> None:
    hasher = PasswordHasher(Argon2Params(time_cost=1, memory_kib=4096, parallelism=1))
    encoded = hasher.hash("pw")

    def best(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    real = best(lambda: hasher.verify(encoded, "wrong"))
    dummy = best(lambda: hasher.dummy_verify("wrong"))
    assert hasher.dummy_verify("pw") is False
    assert 0.5 < dummy / real < 2.0
