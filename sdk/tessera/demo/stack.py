"""Every Tessera process of a demo run: redis-server, PostgreSQL, auth, relay,
matchmaking, the operator's local runtime (which runs the zones) and the web console.

With ``tls`` (the default) a CA made for the run signs a certificate for
127.0.0.1/localhost: auth, matchmaking and the relay serve gRPC over TLS with it,
and every process calling them trusts the CA (``TESSERA_TLS_CA_FILE``). Zones
serve plaintext, as in the chart without ``tls.zones``.

Each service is a :class:`ServiceProcess` started from the main thread (children
get SIGTERM when the thread that started them ends), stopped in reverse order;
redis-server and PostgreSQL are wrapped by :mod:`tessera.demo.guard` so they die
with the demo too.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import tempfile
import time
from pathlib import Path

import redis
import yaml

from tessera.common import store
from tessera.common.process import ServiceProcess, free_udp_port
from tessera.common.tls import ClientTls
from tessera.demo.guard import guarded_postgres, guarded_redis
from tessera.demo.world import DemoSettings, demo_modes, world_resource
from tessera.harness.certs import Authority
from tessera.harness.postgres import LocalPostgres
from tessera.v1 import zone_pb2

WORLD = "demo"
MM_CLIENT = "matchmaking"
MONITOR_CLIENT = "demo-monitor"
CONSOLE_PORT = 8080  # the console's HTTP port when free, else any free port
TLS_SERVERS = ("auth", "relay", "matchmaking")  # the services serving gRPC over TLS


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Stack:
    """The services of one demo run."""

    def __init__(
        self, settings: DemoSettings, workdir: Path | None = None, *, tls: bool = True
    ) -> None:
        self.settings = settings
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="tessera-demo-"))
        self.tls = tls
        (self.dir / "redis").mkdir(parents=True, exist_ok=True)
        self.redis = guarded_redis(self.dir / "redis")
        self.postgres: LocalPostgres | None = None
        self.procs: dict[str, ServiceProcess] = {}
        self.udp_port = 0
        self.database_url = ""
        # The matchmaker's client credentials at auth (its connect tokens).
        self.mm_secret = secrets.token_urlsafe(24)
        # Auth's ``zone`` client: arena instance zones report their results with it.
        self.zone_secret = secrets.token_urlsafe(24)
        # Service credentials of the console and of the demo's own monitor.
        self.console_secret = secrets.token_urlsafe(24)
        self.monitor_secret = secrets.token_urlsafe(24)
        # The local runtime's and the relay's service clients: zones accept their calls.
        self.operator_secret = secrets.token_urlsafe(24)
        self.relay_secret = secrets.token_urlsafe(24)
        self.server_tls: dict[str, str] = {}

    @property
    def auth_address(self) -> str:
        return self.procs["auth"].grpc_address

    @property
    def relay_address(self) -> str:
        return self.procs["relay"].grpc_address

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.procs['console'].ports['http_port']}"

    @property
    def ca_file(self) -> Path:
        """The run's CA certificate (written by :meth:`start` when TLS is on)."""
        return self.dir / "tls" / "ca.crt"

    def client_env(self) -> dict[str, str]:
        """What a process calling auth, matchmaking or the relay needs to trust them."""
        return {"TESSERA_TLS_CA_FILE": str(self.ca_file)} if self.tls else {}

    def client_tls(self) -> ClientTls | None:
        """The same trust for a client in this process (None with TLS off)."""
        return ClientTls(self.ca_file.read_bytes()) if self.tls else None

    def tls_servers(self) -> dict[str, str]:
        """The gRPC address of each service serving TLS (none with TLS off)."""
        names = TLS_SERVERS if self.tls else ()
        return {name: self.procs[name].grpc_address for name in names}

    def _make_certificates(self) -> dict[str, str]:
        """The run's CA and the servers' certificate; the servers' TLS settings."""
        ca = Authority("tessera demo CA")
        self.ca_file.parent.mkdir(exist_ok=True)
        ca.write_ca(self.ca_file)
        issued = ca.issue(self.dir / "tls" / "server")
        return {"TESSERA_TLS_CERT_FILE": str(issued.cert), "TESSERA_TLS_KEY_FILE": str(issued.key)}

    def _start(
        self, name: str, module: str, env: dict[str, str], args: list[str] | None = None
    ) -> None:
        # Each service under its own Redis user (the runtime's is the operator's);
        # TLS on the services that serve it, the CA for every caller of them.
        env = {**env, "TESSERA_REDIS_URL": self.redis.url_for(name)}
        if name in TLS_SERVERS:
            env.update(self.server_tls)
        if name != "auth":
            env.update(self.client_env())
        proc = ServiceProcess(module, env, args=args or [], name=name).start()
        self.procs[name] = proc
        proc.wait_serving(30.0)

    def start(self) -> None:
        """Start everything and wait until each process serves and a zone is active."""
        self.redis.start()
        self.postgres = guarded_postgres()
        self.postgres.start()
        self.database_url = database_url = self.postgres.create_database("tessera")
        connect_key = base64.b64encode(os.urandom(32)).decode()
        self.udp_port = free_udp_port()
        if self.tls:
            self.server_tls = self._make_certificates()
        common = {
            "TESSERA_DATABASE_URL": database_url,
            "TESSERA_HOST": "127.0.0.1",
            "TESSERA_GRPC_PORT": "0",
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_LOG_LEVEL": "warning",
            "TESSERA_WORLD": WORLD,
            "TESSERA_SHUTDOWN_GRACE_S": "2",
            # Bound each child's stop (grace + hooks) well inside what a user waits
            # for after Ctrl-C, which reaches redis-server too.
            "TESSERA_SHUTDOWN_HOOKS_S": "5",
        }
        self._start(
            "auth",
            "tessera.auth",
            {
                **common,
                "TESSERA_LOG_LEVEL": "info",
                "TESSERA_AUTH_GENERATE_KEYS": "true",
                "TESSERA_CONNECT_KEY": connect_key,
                "TESSERA_AUTH_RELAYS": f"default=127.0.0.1:{self.udp_port}",
                "TESSERA_AUTH_SERVICE_CLIENTS": (
                    f"{MM_CLIENT}={self.mm_secret},console={self.console_secret},"
                    f"{MONITOR_CLIENT}={self.monitor_secret},"
                    f"operator={self.operator_secret},relay={self.relay_secret},"
                    f"zone={self.zone_secret}"
                ),
                "TESSERA_AUTH_REGISTRATIONS_PER_ADDRESS": "1000000",
                "TESSERA_AUTH_CONNECT_TTL_S": "120",
            },
        )
        self._start(
            "matchmaking",
            "tessera.matchmaking",
            {
                **common,
                "TESSERA_LOG_LEVEL": "info",
                "TESSERA_AUTH_ADDRESS": self.auth_address,
                "TESSERA_MM_CLIENT_ID": MM_CLIENT,
                "TESSERA_MM_CLIENT_SECRET": self.mm_secret,
                "TESSERA_MM_MODES": json.dumps(demo_modes(WORLD)),
                "TESSERA_MM_TICK_INTERVAL_S": "0.5",
            },
        )
        world_file = self.dir / "world.yaml"
        world_file.write_text(yaml.safe_dump(world_resource(self.settings, WORLD)))
        self._start(
            "operator",
            "tessera.demo.runtime",
            {
                **common,
                "TESSERA_LOG_LEVEL": "info",
                "TESSERA_SERVICE_CLIENT_SECRET": self.operator_secret,
                # Instance zones alone get it, to report their match results.
                "TESSERA_ZONE_SERVICE_CLIENT_SECRET": self.zone_secret,
            },
            [
                *("--world", str(world_file), "--interval", "0.5"),
                *("--redis-url", self.redis.url_for("operator")),
                *("--zone-redis-url", self.redis.url_for("zone")),
                *("--auth-address", self.auth_address),
                *("--matchmaking-address", self.procs["matchmaking"].grpc_address),
            ],
        )
        self._start(
            "relay",
            "tessera.relay",
            {
                **common,
                "TESSERA_LOG_LEVEL": "info",
                "TESSERA_UDP_HOST": "127.0.0.1",
                "TESSERA_UDP_PORT": str(self.udp_port),
                "TESSERA_AUTH_ADDRESS": self.auth_address,
                "TESSERA_CONNECT_KEY": connect_key,
                "TESSERA_RELAY_ID": "relay-0",
                "TESSERA_SERVICE_CLIENT_SECRET": self.relay_secret,
                # One relay: no other to move clients to, so a short drain.
                "TESSERA_RELAY_DRAIN_S": "2",
                # Every bot shares 127.0.0.1: one source, so no per-source limits.
                "TESSERA_RELAY_HANDSHAKES_PER_SOURCE_S": "1000000",
                "TESSERA_RELAY_PINGS_PER_SOURCE_S": "1000000",
            },
        )
        self._start(
            "console",
            "tessera.console",
            {
                **common,
                "TESSERA_LOG_LEVEL": "info",
                "TESSERA_AUTH_ADDRESS": self.auth_address,
                "TESSERA_CONSOLE_RELAYS": self.relay_address,
                "TESSERA_SERVICE_CLIENT_SECRET": self.console_secret,
                "TESSERA_CONSOLE_HTTP_PORT": str(CONSOLE_PORT if port_free(CONSOLE_PORT) else 0),
            },
        )
        self._a_zone_is_active()

    def _a_zone_is_active(self, timeout_s: float = 120.0) -> None:
        """Wait until an open-world zone is ACTIVE: a zone compiles its kernels and
        fetches auth's keys before it serves, and bots started earlier only meet
        NO_ZONE. (Synchronous: callers may already run an event loop.)"""
        keys = store.WorldKeys(WORLD)
        with redis.Redis(port=self.redis.port) as client:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                names = sorted(client.smembers(keys.zones))
                values = client.mget([keys.zone_status(n.decode()) for n in names]) if names else []
                beats = [store.parse_heartbeat(v) for v in values]
                if any(
                    b is not None and b.state == zone_pb2.ZONE_STATE_ACTIVE and not b.instance
                    for b in beats
                ):
                    return
                time.sleep(0.2)
        raise RuntimeError(f"no zone of {WORLD} was active within {timeout_s:g} s")

    def pids(self) -> list[int]:
        """Every child process id (redis-server and PostgreSQL included)."""
        out = [p.pid for p in self.procs.values() if p.proc is not None]
        for server in (self.redis, self.postgres):
            if server is not None and server.proc is not None:
                out.append(server.proc.pid)
        return out

    def dead(self) -> list[str]:
        """Services whose process exited while the demo runs."""
        return [name for name, p in self.procs.items() if not p.alive()]

    def stop(self) -> None:
        """SIGTERM in reverse start order (the runtime drains nothing: it stops its
        zones), then redis-server and PostgreSQL."""
        for proc in reversed(list(self.procs.values())):
            proc.terminate(20.0)
        self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
