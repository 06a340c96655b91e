"""A throwaway PostgreSQL cluster on a free loopback port.

``initdb`` into a temporary directory, the ``postgres`` server started as a child
process with its socket in that directory, databases created on demand, a fast
shutdown and the directory removed at the end. Used by the tests (one cluster per
session), the demo and benchmarks. ``launcher`` is prefixed to the server's command
line (the demo uses it to have the server die with the demo).

PostgreSQL refuses to run as root: as root ``initdb`` and the server run as the
``postgres`` user that Debian's package creates (``runuser``, ``setpriv``), on a
directory it owns.
Durability is off by default (``fsync``, ``synchronous_commit``,
``full_page_writes``): a throwaway cluster trades crash safety for speed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tessera.common.process import free_port

SUPERUSER = "postgres"


def server_bin() -> Path:
    """The directory holding ``initdb`` and ``postgres`` (PATH, else Debian's newest)."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if not versions:
        raise RuntimeError("PostgreSQL's initdb not found; run `make install`")
    return Path(versions[-1]).parent


class LocalPostgres:
    """Start and stop one PostgreSQL cluster bound to 127.0.0.1."""

    def __init__(self, *, port: int | None = None, durable: bool = False) -> None:
        self.bin = server_bin()
        self.port = port or free_port()
        self._port_chosen = port is None
        self.durable = durable
        # Not under a caller's directory: its parents may be closed to the postgres user.
        self.dir = Path(tempfile.mkdtemp(prefix="tessera-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.launcher: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._user = _server_user()
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", SUPERUSER,
            "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            self.log.touch()
            os.chown(self.log, entry.pw_uid, entry.pw_gid)

    def url(self, database: str = "postgres") -> str:
        """A DSN for ``database`` as the superuser (trust authentication on loopback)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and wait until it accepts connections. A free port taken
        meanwhile by another process moves the first start to another free port."""
        for attempt in range(3):
            try:
                self._start(timeout_s)
                self._port_chosen = False  # a restart after halt() keeps the port
                return
            except RuntimeError:
                if not self._port_chosen or attempt == 2:
                    raise
                self.port = free_port()

    def _start(self, timeout_s: float) -> None:
        options = [
            "-p", str(self.port),
            "-k", str(self.dir),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "max_connections=200",
        ]  # fmt: skip
        if not self.durable:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                options += ["-c", setting]
        server = [str(self.bin / "postgres"), "-D", str(self.data), *options]
        if self._user is not None:
            # setpriv execs (no process in between, so signals reach the server) and
            # keeps a launcher's parent-death signal across the change of user.
            entry = pwd.getpwnam(self._user)
            server = [
                shutil.which("setpriv") or "/usr/bin/setpriv",
                f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
                "--pdeathsig=keep", "--", *server,
            ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.launcher, *server], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout_s
        ready = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        while subprocess.run(ready, check=False).returncode != 0:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"postgres exited at start-up: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not accept connections on port {self.port}")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-500:].strip()

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its DSN."""
        self._client("createdb", name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._client("dropdb", "--force", name)

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server (fast shutdown: SIGINT), keeping its data: :meth:`start`
        brings it back on the same port (an outage, as clients see it)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def _client(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), "-h", "127.0.0.1", "-p", str(self.port)]
        _check(
            subprocess.run(
                [*command, "-U", SUPERUSER, *args], check=False, capture_output=True, text=True
            )
        )

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        _check(subprocess.run(command, check=False, capture_output=True, text=True, cwd=self.dir))

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _server_user() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise RuntimeError(
            "PostgreSQL cannot run as root and there is no 'postgres' user; "
            "install Debian's postgresql package (`make install`) or run as another user"
        ) from None
    return SUPERUSER


def _check(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise RuntimeError(f"{result.args[0]} failed ({result.returncode}): {output}")
