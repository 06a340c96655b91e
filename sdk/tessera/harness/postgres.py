"""A throwaway PostgreSQL cluster on a free loopback port.

``initdb`` into a temporary directory, ``pg_ctl start`` with the socket in that
directory, databases created on demand, ``pg_ctl stop`` and the directory removed
at the end. Used by the tests (one cluster per session), the demo and benchmarks.

PostgreSQL refuses to run as root: as root the server runs as the ``postgres``
user that Debian's package creates (through ``runuser``), on a directory it owns.
Durability is off by default (``fsync``, ``synchronous_commit``,
``full_page_writes``): a throwaway cluster trades crash safety for speed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tessera.common.process import free_port

SUPERUSER = "postgres"


def server_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (PATH, else Debian's newest)."""
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
        self.running = False
        self._user = _server_user()
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", SUPERUSER,
            "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        """A DSN for ``database`` as the superuser (trust authentication on loopback)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout_s: int = 60) -> None:
        """Start the server and wait until it accepts connections. A free port taken
        meanwhile by another process moves the first start to another free port."""
        for attempt in range(3):
            try:
                self._start(timeout_s)
                self.running = True
                return
            except RuntimeError:
                if not self._port_chosen or attempt == 2:
                    raise
                self.port = free_port()

    def _start(self, timeout_s: int) -> None:
        options = [
            f"-p {self.port}",
            f"-k {self.dir}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(timeout_s), "-o", " ".join(options), "start",
        )  # fmt: skip

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its DSN."""
        self._client("createdb", name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._client("dropdb", "--force", name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)

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
