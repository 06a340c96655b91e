"""Run a program that dies with its parent: ``python -m tessera.demo.guard PROGRAM ARGS``.

Sets PR_SET_PDEATHSIG (kept across ``execv``) and becomes ``PROGRAM`` in the same
process, so a third-party child like ``redis-server`` or ``postgres`` gets SIGTERM
when the demo dies, even by SIGKILL. Used through :func:`guarded_redis` and
:func:`guarded_postgres`.
"""

from __future__ import annotations

import os
import shlex
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
        f"exec {shlex.quote(sys.executable)} -m tessera.demo.guard "
        f'{shlex.quote(server.binary)} "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    server.binary = str(script)
    return server


def guarded_postgres() -> LocalPostgres:
    """A :class:`LocalPostgres` whose server dies with this process."""
    server = LocalPostgres()
    server.launcher = [
        "/usr/bin/env", f"{PARENT_PID}={os.getpid()}", sys.executable, "-m", "tessera.demo.guard"
    ]  # fmt: skip
    return server


def main() -> None:
    die_with_parent()
    os.execv(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
