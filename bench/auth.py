"""Auth benchmark: local token verification, login and refresh throughput.

    python bench/auth.py --json PATH [--seconds S] [--logins N] [--batch-sizes 1,64,256]

- ``verify_per_s``: ``Verifier.verify`` on one core for tokens already seen (the
  hot path of every service: a client presents the same access token for 15 min).
- ``verify_cold_per_s``: full verification with the Ed25519 signature every time
  (a token seen for the first time); ``pyjwt_verify_per_s`` for comparison.
- ``login_per_s`` / ``login_ms_p99`` / ``refresh_per_s``: a real auth process and
  a real redis-server on this machine, driven over gRPC by concurrent clients,
  with the configured argon2 parameters (``TESSERA_AUTH_ARGON2_*``, default
  t=2, m=19 MiB, p=1). ``hash_ms`` is one argon2id hash at those parameters.
- ``connect_tokens``: connect tokens per second a real auth process issues to a
  service (role ``service``, on behalf of players, with a destination) through
  ``IssueConnectToken`` (one call per token, ``single``) and through
  ``IssueConnectTokens`` with each of ``--batch-sizes`` requests per call, 16
  concurrent callers each; also the auth process's CPU per token (from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import jwt

from tessera.auth.config import Argon2Params
from tessera.auth.keys import SigningKey
from tessera.auth.passwords import PasswordHasher
from tessera.authclient.bearer import bearer_metadata
from tessera.authclient.verifier import Verifier
from tessera.common.config import Env
from tessera.common.process import ServiceProcess, cpu_seconds
from tessera.harness.postgres import LocalPostgres
from tessera.harness.redis import LocalRedis
from tessera.v1 import auth_pb2, auth_pb2_grpc
from tessera.wire import access_token, connect_token
from tessera.wire.access_token import Claims

PASSWORD = "benchmark password 1"
SERVICE_SECRET = "bench-secret-0123456789"
CONNECT_CALLERS = 16


def rate(fn: Callable[[int], object], seconds: float) -> float:
    """Calls of ``fn(i)`` per second over about ``seconds``."""
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for i in range(done, done + 500):
            fn(i)
        done += 500
    return done / elapsed


def verification(seconds: float) -> dict[str, float]:
    key = SigningKey.generate()
    now = int(time.time())

    def token(i: int) -> str:
        claims = Claims(
            f"acc{i}", f"s{i}", ("player",), now, now + 900, "tessera", "tessera", key.kid
        )
        return access_token.encode(claims, key.private_key)

    pool = [token(i) for i in range(1000)]
    verifier = Verifier({key.kid: key.public_key})
    for i in range(100):
        verifier.revoke(f"revoked{i}", now + 900)  # a realistic revocation set
    keys = {key.kid: key.public_key}
    hot = rate(lambda i: verifier.verify(pool[i % 1000], roles=("player",)), seconds)
    cold = rate(
        lambda i: access_token.decode(
            pool[i % 1000], public_keys=keys, issuer="tessera", audience="tessera", now=now
        ),
        seconds,
    )
    pyjwt = rate(
        lambda i: jwt.decode(
            pool[i % 1000], key.public_key, algorithms=["EdDSA"], audience="tessera"
        ),
        seconds,
    )
    sign = rate(token, seconds / 2)
    grant = connect_token.ConnectGrant(
        connect_token.new_token_id(), "p", "s", ("127.0.0.1:7777",), b"a" * 32, b"b" * 32,
        now, now + 30, 10, world="main", zone="inst-0123456789abcdef01234567",
    )  # fmt: skip
    sealing = os.urandom(32)
    ct = connect_token.issue_connect_token(grant, signing_key=key, sealing_key=sealing)
    connect_open = rate(
        lambda i: connect_token.open_connect_token(
            ct, public_keys=keys, sealing_key=sealing, relay_address="127.0.0.1:7777", now=now
        ),
        seconds / 2,
    )
    return {
        "verify_per_s": hot,
        "verify_cold_per_s": cold,
        "pyjwt_verify_per_s": pyjwt,
        "sign_per_s": sign,
        "connect_open_per_s": connect_open,
    }


def argon2_params() -> Argon2Params:
    env = Env()
    return Argon2Params(
        time_cost=env.integer("AUTH_ARGON2_TIME_COST", 2, lo=1),
        memory_kib=env.integer("AUTH_ARGON2_MEMORY_KIB", 19_456, lo=8),
        parallelism=env.integer("AUTH_ARGON2_PARALLELISM", 1, lo=1),
    )


def hash_cost(params: Argon2Params) -> float:
    hasher = PasswordHasher(params)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        hasher.hash(PASSWORD)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def service_figures(
    params: Argon2Params, logins: int, seconds: float, batch_sizes: list[int]
) -> dict[str, Any]:
    with LocalRedis() as redis, LocalPostgres() as postgres:
        env = {
            "TESSERA_DATABASE_URL": postgres.create_database("bench"),
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_REDIS_URL": redis.url,
            "TESSERA_AUTH_GENERATE_KEYS": "true",
            "TESSERA_CONNECT_KEY": base64.b64encode(os.urandom(32)).decode(),
            "TESSERA_AUTH_REGISTRATIONS_PER_ADDRESS": "1000000",
            "TESSERA_AUTH_ARGON2_TIME_COST": str(params.time_cost),
            "TESSERA_AUTH_ARGON2_MEMORY_KIB": str(params.memory_kib),
            "TESSERA_AUTH_ARGON2_PARALLELISM": str(params.parallelism),
            "TESSERA_AUTH_SERVICE_CLIENTS": f"matchmaking={SERVICE_SECRET}",
        }
        proc = ServiceProcess("tessera.auth", env, name="auth").start()
        try:
            proc.wait_serving()
            async with grpc.aio.insecure_channel(proc.grpc_address) as channel:
                stub = auth_pb2_grpc.AuthStub(channel)
                out: dict[str, Any] = await _drive(stub, logins, seconds)
                out["connect_tokens"] = await _connect_tokens(stub, proc.pid, seconds, batch_sizes)
                return out
        finally:
            proc.terminate()


async def _drive(stub: Any, logins: int, seconds: float) -> dict[str, float]:
    users = [f"bench{i}" for i in range(16)]
    sessions = await asyncio.gather(
        *(stub.Register(auth_pb2.RegisterRequest(username=u, password=PASSWORD)) for u in users)
    )
    concurrency = 2 * (os.cpu_count() or 1)
    latencies: list[float] = []
    counter = iter(range(logins))

    async def login_worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await stub.Login(auth_pb2.LoginRequest(username=users[i % 16], password=PASSWORD))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(login_worker() for _ in range(concurrency)))
    login_elapsed = time.perf_counter() - started

    rotations = 0
    deadline = time.perf_counter() + seconds

    async def refresh_worker(token: str) -> None:
        nonlocal rotations
        while time.perf_counter() < deadline:
            session = await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=token))
            token = session.refresh_token
            rotations += 1

    started = time.perf_counter()
    await asyncio.gather(*(refresh_worker(s.refresh_token) for s in sessions))
    refresh_elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "login_per_s": logins / login_elapsed,
        "login_ms_p50": latencies[len(latencies) // 2] * 1000,
        "login_ms_p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "refresh_per_s": rotations / refresh_elapsed,
    }


async def _connect_tokens(
    stub: Any, pid: int, seconds: float, batch_sizes: list[int]
) -> dict[str, dict[str, float]]:
    """Tokens/s and auth CPU per token: single calls, then batches of each size."""
    service = await stub.ServiceLogin(
        auth_pb2.ServiceLoginRequest(client_id="matchmaking", client_secret=SERVICE_SECRET)
    )
    metadata = bearer_metadata(service.access_token)

    def request(i: int) -> auth_pb2.ConnectTokenRequest:
        return auth_pb2.ConnectTokenRequest(
            player_id=f"player-{i}", session_id=f"session-{i}", world="main", zone="zone-1"
        )

    async def single() -> int:
        await stub.IssueConnectToken(request(0), metadata=metadata)
        return 1

    def batcher(size: int) -> Callable[[], Awaitable[int]]:
        batch = auth_pb2.IssueConnectTokensRequest(requests=[request(i) for i in range(size)])

        async def call() -> int:
            reply = await stub.IssueConnectTokens(batch, metadata=metadata)
            return sum(1 for r in reply.results if r.HasField("token"))

        return call

    out = {}
    for name, call in [("single", single)] + [(f"batch_{n}", batcher(n)) for n in batch_sizes]:
        await call()  # warm up
        cpu, started = cpu_seconds(pid), time.perf_counter()
        counts = await asyncio.gather(
            *(_keep_calling(call, started + seconds) for _ in range(CONNECT_CALLERS))
        )
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu
        issued = sum(counts)
        out[name] = {
            "tokens_per_s": issued / elapsed,
            "auth_cpu_us_per_token": cpu / issued * 1e6,
            "auth_cores": cpu / elapsed,
        }
    return out


async def _keep_calling(call: Callable[[], Awaitable[int]], deadline: float) -> int:
    """Call ``call`` back to back until ``deadline``; the tokens it issued."""
    issued = 0
    while time.perf_counter() < deadline:
        issued += await call()
    return issued


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--seconds", type=float, default=3.0, help="per micro-benchmark")
    parser.add_argument("--logins", type=int, default=120, help="logins to time")
    parser.add_argument(
        "--batch-sizes", default="1,64,256", help="IssueConnectTokens requests per call to time"
    )
    args = parser.parse_args()

    params = argon2_params()
    results: dict[str, Any] = verification(args.seconds)
    results["hash_ms"] = hash_cost(params)
    sizes = [int(n) for n in args.batch_sizes.split(",") if n]
    results.update(asyncio.run(service_figures(params, args.logins, args.seconds, sizes)))
    results["argon2"] = {
        "time_cost": params.time_cost,
        "memory_kib": params.memory_kib,
        "parallelism": params.parallelism,
    }
    results["cpu_count"] = os.cpu_count()

    print(f"{'metric':<22}{'value':>14}")
    for name, value in results.items():
        if isinstance(value, float):
            print(f"{name:<22}{value:>14,.1f}")
    for name, figures in results["connect_tokens"].items():
        print(
            f"connect tokens, {name:<10} {figures['tokens_per_s']:>10,.0f} /s, auth "
            f"{figures['auth_cpu_us_per_token']:>6,.1f} us CPU per token "
            f"({figures['auth_cores']:.2f} cores)"
        )
    print(
        f"argon2id t={params.time_cost} m={params.memory_kib} KiB p={params.parallelism}: "
        f"{results['hash_ms']:.1f} ms per hash; target verify_per_s >= 20,000 "
        f"({'met' if results['verify_per_s'] >= 20_000 else 'NOT met'})"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
