"""Child processes for Tessera services: start, find their ports, stop cleanly.

Runtime code, not only a test aid: the operator's local runtime (which forks its
zones from a template: :class:`ForkedProcess`) and matchmaking's front-end workers
supervise their children with it (and :func:`free_port` picks the port those
workers share); the harnesses, the demo, the benchmarks and the
integration tests use it too. Children are told their parent's pid
(``TESSERA_PARENT_PID``) and call :func:`die_with_parent` first thing, so on Linux
they are killed when the parent dies and never outlive a demo or a test run.

The child sets PR_SET_PDEATHSIG itself, after exec, rather than in a
``preexec_fn``: a ``preexec_fn`` forces a plain fork that runs grpcio's fork
handlers, which can crash the child when the parent has live gRPC state
(grpc/grpc#43055). Without it CPython spawns with vfork and no handlers run.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from multiprocessing import reduction
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import IO, Any, Self

_PR_SET_PDEATHSIG = 1
PARENT_PID = "TESSERA_PARENT_PID"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return _free(socket.SOCK_STREAM)


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    return _free(socket.SOCK_DGRAM)


def _free(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """If started by :class:`ServiceProcess`, get ``signum`` when the parent dies.

    SIGKILL by default, not SIGTERM: a graceful stop is its supervisor's to ask
    for, and one without the supervisor (and often without the Redis it would
    checkpoint to) only keeps an orphan alive for its shutdown grace. Exits at
    once if the parent is already gone (it died before this ran).
    """
    parent = os.environ.get(PARENT_PID)
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signum)
    if os.getppid() != int(parent):
        raise SystemExit(1)


class ServiceProcess:
    """A service started as ``python -m <module>`` (or ``python <file.py>``) whose
    JSON logs are parsed.

    :meth:`wait_serving` blocks until the service logs its ``serving`` line and
    records the ports it bound (``grpc_port``, ``metrics_port``).
    """

    def __init__(
        self,
        module: str,
        env: Mapping[str, str] | None = None,
        *,
        args: Sequence[str] = (),
        name: str | None = None,
        keep_lines: int = 2000,
        echo: Callable[[str], None] | None = None,
        session: bool = False,
    ) -> None:
        self.module = module
        # A session of its own: on Linux with sched_autogroup_enabled, its own
        # scheduling group, which gets a CPU share like every other session's.
        self.session = session
        self.name = name or module
        self.env = {**os.environ, **(env or {})}
        self.args = list(args)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: deque[str] = deque(maxlen=keep_lines)
        # Also called with every log line of the child (e.g. to pass it on).
        self.echo = echo
        self.ports: dict[str, int] = {}
        self._serving = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self) -> Self:
        self._serving.clear()
        self.ports = {}
        self.proc = self._spawn()
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _spawn(self) -> subprocess.Popen[str]:
        """The child, its stderr on a pipe."""
        return subprocess.Popen(
            [sys.executable, *self._target(), *self.args],
            env={**self.env, PARENT_PID: str(os.getpid())},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=self.session,
        )

    def _target(self) -> list[str]:
        return [self.module] if self.module.endswith(".py") else ["-m", self.module]

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if self.echo is not None:
                try:
                    self.echo(line)
                except Exception:  # never stop reading: a full pipe would hang the child
                    self.echo = None
            record = _parse(line)
            if record.get("msg") == "serving":
                self.ports = {k: int(v) for k, v in record.items() if k.endswith("_port")}
                self._serving.set()

    def wait_serving(self, timeout_s: float = 20.0) -> dict[str, int]:
        """Wait for the ``serving`` log line; raise with the log tail if it never comes."""
        deadline = time.monotonic() + timeout_s
        while not self._serving.wait(0.05):
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} did not start:\n" + "\n".join(list(self.lines)[-30:])
                )
        return self.ports

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.ports['grpc_port']}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._join_reader()
        return code

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join_reader()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=2)

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records seen so far."""
        return [r for r in (_parse(line) for line in list(self.lines)) if r]


def _parse(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


class ForkedProcess(ServiceProcess):
    """A :class:`ServiceProcess` forked from a template process instead of started
    as a new interpreter: the template (multiprocessing's fork server, one per
    parent process) imported ``preload`` once, and each child runs ``python -m
    module`` (or ``python module.py``) from there with :mod:`runpy`, with its own
    environment and its stderr on a pipe of its own, so it starts without paying
    the imports and set-up ``preload`` did (a zone: ~0.1 CPU-s instead of ~1;
    docs/ZONE.md). As with multiprocessing's spawn, each child imports the parent's
    main module (a script keeps its start-up under ``if __name__ == "__main__"``).

    The child is the template's, not this process's: its exit status comes from
    the template, its parent-death signal follows the template, which exits when
    this process does. Settings a module reads when it is imported are the
    template's (it starts with this process's environment).
    """

    def __init__(
        self,
        module: str,
        env: Mapping[str, str] | None = None,
        *,
        preload: str,
        name: str | None = None,
        keep_lines: int = 2000,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(module, env, name=name, keep_lines=keep_lines, echo=echo)
        self.preload = preload

    def _spawn(self) -> subprocess.Popen[str]:
        read, write = os.pipe()
        try:
            child = fork_server(self.preload).Process(
                target=_run_forked, args=(self.module, self.env, _Fd(write)), name=self.name
            )
            child.start()
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        stderr = open(read, encoding="utf-8", errors="replace")  # noqa: SIM115 (the reader's)
        return _Forked(child, stderr)  # type: ignore[return-value]  # what ServiceProcess uses of a Popen


_servers: dict[str, ForkServerContext] = {}


def fork_server(preload: str) -> ForkServerContext:
    """This process's fork server, which imports ``preload`` when it starts (the
    first fork); there is one per process, so every caller must name the same."""
    if _servers and preload not in _servers:
        raise ValueError(f"the fork server preloads {next(iter(_servers))}, not {preload}")
    if preload not in _servers:
        ctx = multiprocessing.get_context("forkserver")
        assert isinstance(ctx, ForkServerContext)
        ctx.set_forkserver_preload([preload])
        _servers[preload] = ctx
    return _servers[preload]


class _Fd:
    """A file descriptor passed to a forked child (as a copy, over the fork
    server's socket)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Callable[[Any], int], tuple[Any]]:
        return _detach, (reduction.DupFd(self.fd),)


def _detach(dup: Any) -> int:
    return int(dup.detach())


def _run_forked(module: str, env: Mapping[str, str], stderr: int) -> None:
    """In the forked child: the caller's environment, stderr on the caller's pipe,
    death with the template (see :func:`die_with_parent`), then ``python -m module``."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(stderr, 2)
    # Nothing else of the template's: among those fds is the write end of the pipe
    # whose end tells the template its parent is gone (then it exits, and its
    # children get their parent-death signal).
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.environ.clear()
    os.environ.update({**env, PARENT_PID: str(os.getppid())})
    die_with_parent()
    if module.endswith(".py"):
        runpy.run_path(module, run_name="__main__")
    else:
        sys.modules.pop(module + ".__main__", None)  # the template's import of it: run it afresh
        runpy.run_module(module, run_name="__main__", alter_sys=True)


class _Forked:
    """A forked child with the parts of :class:`subprocess.Popen` ServiceProcess uses."""

    def __init__(self, child: multiprocessing.process.BaseProcess, stderr: IO[str]) -> None:
        self.child = child
        self.stderr = stderr

    @property
    def pid(self) -> int:
        assert self.child.pid is not None
        return self.child.pid

    def poll(self) -> int | None:
        return self.child.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.child.join(timeout)
        if self.child.exitcode is None:
            raise subprocess.TimeoutExpired(self.child.name, timeout or 0.0)
        return self.child.exitcode

    def terminate(self) -> None:
        self.child.terminate()

    def kill(self) -> None:
        self.child.kill()
