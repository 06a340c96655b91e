"""Run a program that dies with its parent:
``python -m tessera.demo.guard SIGNAL PROGRAM ARGS``.

Sets PR_SET_PDEATHSIG to ``SIGNAL`` (kept across ``execv``) and becomes
``PROGRAM`` in the same process, so a third-party child like ``redis-server`` or
``postgres`` stops when the demo dies, even by SIGKILL. Used through
:func:`guarded_redis` (SIGTERM) and :func:`guarded_postgres` (SIGQUIT: PostgreSQL's
immediate shutdown; its SIGTERM waits for every client to disconnect).
"""

from __future__ import annotations

import os
import shlex
import signal
import stat
import sys
from pathlib import Path

from tessera.common.process import PARENT_PID, die_with_parent
from tessera.harness.postgres import LocalPostgres
from tessera.harness.redis import LocalRedis


def guarded_redis(directory: Path) -> LocalRedis:
    """A :class:`LocalRedis` whose ``redis-server`` dies with this process."""
    server = LocalRedis(directory)
    script = directory / "redis-server-guarded"
    script.write_text(
        f"#!/bin/sh\n{PARENT_PID}={os.getpid()} "
        f"exec {shlex.quote(sys.executable)} -m tessera.demo.guard SIGTERM "
        f'{shlex.quote(server.binary)} "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    server.binary = str(script)
    return server


def guarded_postgres() -> LocalPostgres:
    """A :class:`LocalPostgres` whose server dies with this process."""
    server = LocalPostgres()
    server.launcher = [
        "/usr/bin/env", f"{PARENT_PID}={os.getpid()}",
        sys.executable, "-m", "tessera.demo.guard", "SIGQUIT",
    ]  # fmt: skip
    return server


def main() -> None:
    die_with_parent(signal.Signals[sys.argv[1]])
    os.execv(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
