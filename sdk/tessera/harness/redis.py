"""A local ``redis-server`` process on a free loopback port, and a local Redis
Cluster of several such processes.

:class:`LocalRedis` is used by the tests (one per session), the demo, the
benchmarks and the operator's local runtime. It can be killed and restarted on
the same port to exercise reconnects and recovery. :class:`LocalRedisCluster`
starts cluster-enabled servers (masters with replicas), joins them with
``redis-cli --cluster create`` and waits until every node reports
``cluster_state:ok``; its :attr:`~LocalRedisCluster.url` is the
``redis+cluster://`` address services accept. :func:`server_load` reads what a
server has done so far (commands, CPU, bytes), for the benchmarks' deltas.

Both load the ACL users of :mod:`tessera.common.acl` (the ``default`` user, the
administrator, without a password: the servers listen on loopback only) with
the fixed passwords of :data:`LOCAL_PASSWORDS`, so every component started on
them through :func:`component_url` runs under its own user and a key or command
outside its rules fails with NOPERM. The passwords are not secrets: the users
enforce the components' boundaries here, not access.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tessera.common import acl
from tessera.common.process import free_port

# A benchmark's own reads of the counters are not the load it measures.
NOT_COUNTED = frozenset({"info"})


@dataclass(frozen=True)
class ServerLoad:
    """What one redis-server has done since it started (or, from :meth:`since`,
    between two readings): calls and CPU microseconds per command (``INFO
    commandstats``), the process's CPU seconds, user + system (``INFO cpu``),
    and the bytes it read and wrote on its connections (``INFO stats``)."""

    calls: Mapping[str, int]
    usec: Mapping[str, int]
    cpu_s: float
    net_in: int
    net_out: int

    def since(self, before: ServerLoad) -> ServerLoad:
        """The load between ``before`` and this reading (commands not called: left out)."""
        names = [k for k, v in self.calls.items() if v > before.calls.get(k, 0)]
        return ServerLoad(
            calls={k: self.calls[k] - before.calls.get(k, 0) for k in names},
            usec={k: self.usec[k] - before.usec.get(k, 0) for k in names},
            cpu_s=self.cpu_s - before.cpu_s,
            net_in=self.net_in - before.net_in,
            net_out=self.net_out - before.net_out,
        )

    @property
    def commands(self) -> int:
        return sum(self.calls.values())


def server_load(client: redis.Redis) -> ServerLoad:
    """The server's counters now: one ``INFO`` (not counted as a command; its
    reply, a few kB, is in the next reading's ``net_out``)."""
    info: dict[str, Any] = client.info("commandstats", "cpu", "stats")
    calls: dict[str, int] = {}
    usec: dict[str, int] = {}
    for key, value in info.items():
        name = key.removeprefix("cmdstat_")
        if key.startswith("cmdstat_") and name not in NOT_COUNTED:
            calls[name], usec[name] = int(value["calls"]), int(value["usec"])
    return ServerLoad(
        calls=calls,
        usec=usec,
        cpu_s=float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        net_in=int(info["total_net_input_bytes"]),
        net_out=int(info["total_net_output_bytes"]),
    )


LOCAL_PASSWORDS = {name: f"local-{name}" for name in acl.NAMES}
"""The component users' passwords on local servers (not secrets: see above)."""


def component_url(url: str, component: str) -> str:
    """``url`` of a local server with ``component``'s user and password."""
    return acl.with_user(url, component, LOCAL_PASSWORDS[component])


class PortTaken(RuntimeError):
    """redis-server could not serve on its port (exited at start-up)."""


class LocalRedis:
    """Start, kill and restart one redis-server bound to 127.0.0.1."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        port: int | None = None,
        appendonly: bool = False,
        cluster: bool = False,
        node_timeout_ms: int = 2000,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found on PATH; run `make install`")
        self.binary = binary
        self.dir = directory or Path(tempfile.mkdtemp(prefix="tessera-redis-"))
        self.port = port or free_port()
        self._port_chosen = port is None
        self._started_once = False
        self.appendonly = appendonly
        self.cluster = cluster
        self.node_timeout_ms = node_timeout_ms
        # A cluster node's bus port is chosen too (the default, port + 10000, may
        # be above 65535 or taken); it moves with the port on a retry.
        self.bus_port = free_port() if cluster else 0
        self.aclfile = self.dir / "users.acl"
        self.proc: subprocess.Popen[bytes] | None = None
        # A certificate and key: the server also listens for TLS on ``tls_port``.
        self.tls = tls
        self.tls_port = free_port() if tls else 0

    @property
    def url(self) -> str:
        """The administrator's address (the ``default`` user)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def tls_url(self, ca: Path) -> str:
        """The TLS port's ``rediss://`` URL for a client trusting the CA at ``ca``."""
        return f"rediss://127.0.0.1:{self.tls_port}/0?ssl_ca_certs={ca}"

    def url_for(self, component: str) -> str:
        """The address with ``component``'s user (:func:`component_url`)."""
        return component_url(self.url, component)

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and wait until it answers, checking it is this process
        (not another server that took the port between choosing and binding it).

        On its first start, a server whose free port was taken meanwhile moves to
        another free port; restarts keep the port, as clients expect.
        """
        for attempt in range(3):
            try:
                self._start(timeout_s)
                self._started_once = True
                return
            except PortTaken:
                if self._started_once or not self._port_chosen or attempt == 2:
                    raise
                self.port = free_port()
                if self.cluster:
                    self.bus_port = free_port()

    def _start(self, timeout_s: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.aclfile.write_text(acl.acl_file(LOCAL_PASSWORDS, admin_password=None))
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--aclfile", str(self.aclfile),
        ]  # fmt: skip
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-port", str(self.bus_port),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
            ]  # fmt: skip
        if self.tls:
            args += [
                "--tls-port", str(self.tls_port),
                "--tls-cert-file", str(self.tls[0]),
                "--tls-key-file", str(self.tls[1]),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.5)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise PortTaken(f"redis-server on port {self.port} exited")
                try:
                    if client.info("server")["process_id"] == self.proc.pid:
                        return
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    def refusals(self) -> list[dict[str, Any]]:
        """What the server refused a user since it started (its ``ACL LOG``:
        commands, keys and channels outside a user's rules, failed logins)."""
        if self.proc is None:
            return []
        with redis.Redis(port=self.port, socket_timeout=2.0) as admin:
            entries: list[dict[str, Any]] = admin.acl_log(count=100)
        return entries

    def kill(self) -> None:
        """SIGKILL the server (a crash), keeping its port for a restart."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        """Terminate the server."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        """Kill and start again on the same port."""
        self.kill()
        self.start()

    def __enter__(self) -> LocalRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalRedisCluster:
    """A real Redis Cluster on loopback: ``masters`` cluster-enabled redis-servers
    holding the 16384 slots, each with ``replicas`` replicas, one directory each.

    ``node_timeout_ms`` is ``cluster-node-timeout``: how long a master may be
    unreachable before its replica is promoted (Redis' default is 15000)."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found on PATH; run `make install`")
        self.cli = cli
        self.dir = directory or Path(tempfile.mkdtemp(prefix="tessera-redis-cluster-"))
        self.masters = masters
        self.replicas = replicas
        self.nodes = [
            LocalRedis(self.dir / f"node-{i}", cluster=True, node_timeout_ms=node_timeout_ms)
            for i in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` address of every node (any one would do: the
        client discovers the rest)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def url_for(self, component: str) -> str:
        """The cluster's address with ``component``'s user (:func:`component_url`)."""
        return component_url(self.url, component)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every node, create the cluster and wait for ``cluster_state:ok``
        on all of them; stops what it started when any step fails."""
        try:
            for node in self.nodes:
                node.start()
            create = [self.cli, "--cluster", "create"]
            create += [f"127.0.0.1:{n.port}" for n in self.nodes]
            create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
            done = subprocess.run(
                create, check=False, capture_output=True, text=True, timeout=timeout_s
            )
            if done.returncode != 0:
                output = (done.stdout + done.stderr)[-2000:]
                raise RuntimeError(f"redis-cli --cluster create failed: {output}")
            self._wait_ok(time.monotonic() + timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ok(self, deadline: float) -> None:
        """Until every node reports the cluster healthy, knows all its nodes and
        sees the replicas as replicas (roles reach each node by gossip), and every
        replica has synced with its master (a replica that never synced is not
        promoted when its master fails)."""
        clients = [redis.Redis(port=n.port, socket_timeout=1.0) for n in self.nodes]
        try:
            while not all(self._ready(c) for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Redis Cluster in {self.dir} not ready")
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()

    def _ready(self, client: redis.Redis) -> bool:
        info: dict[str, Any] = client.cluster("INFO")
        nodes: dict[str, dict[str, Any]] = client.cluster("NODES")
        masters = sum("master" in n["flags"] for n in nodes.values())
        replication: dict[str, Any] = client.info("replication")
        return (
            info["cluster_state"] == "ok"
            and len(nodes) == len(self.nodes)
            and masters == self.masters
            and replication.get("master_link_status", "up") == "up"
        )

    def master_of(self, key: str) -> LocalRedis:
        """The running node that is the master of ``key``'s slot now."""
        for node in self.nodes:
            if node.proc is None:
                continue
            with redis.Redis(port=node.port, socket_timeout=1.0) as client:
                slot = int(client.cluster("KEYSLOT", key))
                for start, end, master, *_replicas in client.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        return next(n for n in self.nodes if n.port == int(master[1]))
        raise RuntimeError(f"no running node of {self.dir} answers")

    def refusals(self) -> list[dict[str, Any]]:
        """What the running nodes refused a user (:meth:`LocalRedis.refusals`)."""
        return [entry for node in self.nodes for entry in node.refusals()]

    def stop(self) -> None:
        """Terminate every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalRedisCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
