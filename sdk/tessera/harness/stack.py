"""The path a game client takes, as real processes on one machine: auth and a relay
in front of a :class:`~tessera.harness.zones.World`'s zones, on one Redis and one
PostgreSQL database.

The signing key (the world's issuer's, as auth's key directory, so zones trust
auth's tokens and the harness's alike), the connect key and the relay's UDP port are
chosen once, so :meth:`Stack.stop` then :meth:`Stack.start` is a restart of the
same deployment: tokens auth issues after it name the same relay, which opens
them with the same keys.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

from tessera.common.process import ServiceProcess, free_udp_port
from tessera.harness.redis import component_url
from tessera.harness.relays import metric_total
from tessera.harness.tokens import relay_login_env, service_clients
from tessera.harness.zones import World, ZoneSpec


class Stack:
    """auth, a relay and ``world``'s zones. ``env`` is added to auth's and the
    relay's environment (the world has its own), ``auth_env`` to auth's alone."""

    def __init__(
        self,
        world: World,
        database_url: str,
        directory: Path,
        *,
        env: dict[str, str] | None = None,
        auth_env: dict[str, str] | None = None,
    ) -> None:
        self.world = world
        key_env = world.issuer.auth_env(directory / "keys")
        self.connect_key = base64.b64encode(os.urandom(32)).decode()
        self.udp_port = free_udp_port()
        self.common = {
            "TESSERA_DATABASE_URL": database_url,
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_WORLD": world.world,
            "TESSERA_SHUTDOWN_GRACE_S": "1",
            **(env or {}),
        }
        auth_env = auth_env or {}
        self.auth_env = {
            **self.common,
            "TESSERA_REDIS_URL": component_url(world.redis_url, "auth"),
            **key_env,
            "TESSERA_CONNECT_KEY": self.connect_key,
            "TESSERA_AUTH_RELAYS": f"default=127.0.0.1:{self.udp_port}",
            "TESSERA_AUTH_REGISTRATIONS_PER_ADDRESS": "1000",
            **auth_env,
            "TESSERA_AUTH_SERVICE_CLIENTS": service_clients(
                auth_env.get("TESSERA_AUTH_SERVICE_CLIENTS", "")
            ),
        }
        self.auth = ServiceProcess("tessera.auth", self.auth_env, name="auth")
        self.relay = ServiceProcess("tessera.relay", {}, name="relay")

    async def start(self, zones: list[ZoneSpec]) -> None:
        """Start auth, the zones (map first) and then the relay, which needs auth's
        address; each serves when this returns."""
        self.auth = ServiceProcess("tessera.auth", self.auth_env, name="auth").start()
        await self.world.start_all(zones)
        await asyncio.to_thread(self.auth.wait_serving)
        relay_env = {
            **self.common,
            "TESSERA_REDIS_URL": component_url(self.world.redis_url, "relay"),
            "TESSERA_UDP_HOST": "127.0.0.1",
            "TESSERA_UDP_PORT": str(self.udp_port),
            "TESSERA_AUTH_ADDRESS": self.auth.grpc_address,
            "TESSERA_CONNECT_KEY": self.connect_key,
            **relay_login_env(),
        }
        self.relay = ServiceProcess("tessera.relay", relay_env, name="relay").start()
        await asyncio.to_thread(self.relay.wait_serving)

    def stop(self) -> None:
        """SIGTERM the relay, auth and every zone, each waited for (a zone writes
        its players' data before it exits)."""
        self.relay.terminate()
        self.auth.terminate()
        for zone in self.world.procs.values():
            zone.terminate()

    def kill(self) -> None:
        """SIGKILL everything (a test's teardown)."""
        self.relay.kill()
        self.auth.kill()
        self.world.stop()

    def relay_metric(self, name: str) -> float:
        """The sum of the relay's samples of metric ``name`` (every label set)."""
        return metric_total(self.relay, name)
