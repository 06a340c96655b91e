"""A world whose relays can be stopped and replaced under players: redis-server,
then auth and one zone as processes, and relays started on named loopback UDP
ports that auth puts in every connect token (relay failover tests and
benchmarks). A relay started on another relay's port stands in for a new pod
behind the same public address."""

from __future__ import annotations

import base64
import os
import urllib.request
from pathlib import Path
from typing import Any

from tessera.common.process import ServiceProcess
from tessera.harness.redis import LocalRedis
from tessera.harness.tokens import LOCAL, relay_login_env, service_clients
from tessera.v1 import auth_pb2, zone_pb2, zone_pb2_grpc

ZONE = "zone-0"


def metrics_text(proc: ServiceProcess | int) -> str:
    """A service process's /metrics page (or the one served on a port)."""
    port = proc if isinstance(proc, int) else proc.ports["metrics_port"]
    url = f"http://127.0.0.1:{port}/metrics"
    return str(urllib.request.urlopen(url, timeout=5).read().decode())


def metric(proc: ServiceProcess | int, name: str, **labels: str) -> float:
    """One sample of a service's /metrics (the one with exactly ``labels``), 0 if absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in metrics_text(proc).splitlines():
        if line.startswith(name) and (not want or "{" + want + "}" in line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def metric_total(proc: ServiceProcess, name: str) -> float:
    """The sum of a service's samples of ``name`` (every label set)."""
    lines = metrics_text(proc).splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))


async def zone_players(address: str) -> list[str]:
    """The players of the zone's entities (one per entity, so a duplicate shows twice)."""
    async with LOCAL.channel(address) as channel:
        stub: Any = zone_pb2_grpc.ZoneStub(channel)
        status = await stub.GetStatus(zone_pb2.GetStatusRequest(include_entities=True))
        return [p for p in status.entity_players if p]


def ordered(token: auth_pb2.ConnectToken, address: str) -> auth_pb2.ConnectToken:
    """The token with ``address`` first (the relay the client connects to)."""
    moved = auth_pb2.ConnectToken()
    moved.CopyFrom(token)
    del moved.relay_addresses[:]
    moved.relay_addresses.extend([address, *(a for a in token.relay_addresses if a != address)])
    return moved


class RelayWorld:
    """redis-server (started at once), then auth and one zone (:meth:`start`), and
    relays of the world on the UDP ports named in ``ports`` (:meth:`relay`).
    ``procs`` holds every process by name; :meth:`stop` ends them all."""

    def __init__(
        self,
        tmp: Path,
        ports: dict[str, int],
        *,
        database_url: str,
        world: str,
        auth_env: dict[str, str] | None = None,
        relay_env: dict[str, str] | None = None,
    ) -> None:
        self.ports = ports
        self.address = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        self.world = world
        self.connect_key = base64.b64encode(os.urandom(32)).decode()
        self.auth_env = auth_env or {}
        self.relay_env = relay_env or {}
        self.procs: dict[str, ServiceProcess] = {}
        self.key_dir = tmp / "keys"
        (tmp / "redis").mkdir()
        self.redis = LocalRedis(tmp / "redis")
        self.redis.start()
        self.common = {
            "TESSERA_DATABASE_URL": database_url,
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_LOG_LEVEL": "info",
            "TESSERA_WORLD": world,
            "TESSERA_SHUTDOWN_GRACE_S": "1",
        }

    def start(self) -> None:
        """Start auth (which names every relay port in its tokens) and the zone."""
        self.procs["auth"] = ServiceProcess(
            "tessera.auth",
            {
                **self.common,
                "TESSERA_REDIS_URL": self.redis.url_for("auth"),
                **LOCAL.auth_env(self.key_dir),
                "TESSERA_CONNECT_KEY": self.connect_key,
                "TESSERA_AUTH_RELAYS": "default=" + ",".join(self.address.values()),
                "TESSERA_AUTH_REGISTRATIONS_PER_ADDRESS": "100000",
                "TESSERA_AUTH_SERVICE_CLIENTS": service_clients(),
                **self.auth_env,
            },
            name="auth",
        ).start()
        self.procs["zone"] = ServiceProcess(
            "tessera.zone",
            {
                **self.common,
                "TESSERA_REDIS_URL": self.redis.url_for("zone"),
                "TESSERA_ZONE": ZONE,
                "TESSERA_ZONE_BOUNDS": "-500,-500,500,500",
                "TESSERA_WORLD_BOUNDS": "-500,-500,500,500",
                "TESSERA_TICK_HZ": "20",
                **LOCAL.env(),
            },
            name="zone",
        ).start()
        self.procs["auth"].wait_serving()
        self.procs["zone"].wait_serving()

    def relay(
        self, name: str, *, port_of: str = "", env: dict[str, str] | None = None
    ) -> ServiceProcess:
        """Start relay ``name`` (id ``relay-<name>``) on its own port, or on the
        port of ``port_of`` (a replacement behind that address), with ``env`` on top
        of the world's relay settings, without waiting for it to serve. All clients
        share one source address, so the per-source handshake and ping budgets are
        lifted."""
        return ServiceProcess(
            "tessera.relay",
            {
                **self.common,
                "TESSERA_REDIS_URL": self.redis.url_for("relay"),
                "TESSERA_UDP_HOST": "127.0.0.1",
                "TESSERA_UDP_PORT": str(self.ports[port_of or name]),
                "TESSERA_RELAY_ID": f"relay-{name}",
                "TESSERA_AUTH_ADDRESS": self.procs["auth"].grpc_address,
                "TESSERA_CONNECT_KEY": self.connect_key,
                "TESSERA_RELAY_HANDSHAKES_PER_SOURCE_S": "1000000",
                "TESSERA_RELAY_PINGS_PER_SOURCE_S": "1000000",
                **relay_login_env(),
                **self.relay_env,
                **(env or {}),
            },
            name=f"relay-{name}",
        ).start()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        self.redis.stop()
