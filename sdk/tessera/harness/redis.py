"""A local ``redis-server`` process on a free loopback port.

Used by the tests (one per session), the demo, the benchmarks and the
operator's local runtime. It can be killed and restarted on the same port to
exercise reconnects and recovery.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tessera.common.process import free_port


class PortTaken(RuntimeError):
    """redis-server could not serve on its port (exited at start-up)."""


class LocalRedis:
    """Start, kill and restart one redis-server bound to 127.0.0.1."""

    def __init__(
        self, directory: Path | None = None, *, port: int | None = None, appendonly: bool = False
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
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

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

    def _start(self, timeout_s: float) -> None:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--loglevel", "warning",
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
