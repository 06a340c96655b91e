"""Checks that the lock files, pyproject.toml and the virtualenv agree.

    python scripts/lockcheck.py installed locks/dev.txt   the venv holds exactly the lock
    python scripts/lockcheck.py pyproject                 pyproject.toml and locks/ agree

`make install` runs the first after installing; tests/test_lock.py runs both.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT_VIA = "tessera (pyproject.toml)"
# Installed by `python -m venv` itself, and not a dependency of the project.
VENV_TOOLS = {"pip"}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass
class Pin:
    version: str
    via: set[str] = field(default_factory=set)
    hashes: int = 0


def parse_lock(text: str) -> dict[str, Pin]:
    """Pinned packages of a `uv pip compile` output: version, `# via` sources, hash count."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for raw in text.splitlines():
        line = raw.strip()
        if m := _PIN.match(raw):
            current = pins[canonicalize_name(m.group(1))] = Pin(m.group(2))
            in_via = False
        elif current is None:
            continue
        elif line.startswith("--hash=sha256:"):
            current.hashes += 1
        elif line.startswith("# via"):
            rest = line.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                current.via.add(rest)
        elif in_via and line.startswith("#   "):
            current.via.add(line.removeprefix("#").strip())
    return pins


def declared(pyproject: dict[str, object], *, dev: bool) -> list[Requirement]:
    """The requirements pyproject.toml declares: runtime, plus the dev extra if asked."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    reqs = list(project["dependencies"])
    if dev:
        reqs += project["optional-dependencies"]["dev"]
    return [Requirement(r) for r in reqs]


def extras_of(reqs: list[Requirement]) -> list[Requirement]:
    """What the extras of `reqs` add (redis[hiredis] adds hiredis), from installed metadata."""
    added: list[Requirement] = []
    for req in reqs:
        for extra in req.extras:
            for line in metadata.requires(req.name) or []:
                dep = Requirement(line)
                m = dep.marker
                if m is not None and m.evaluate({"extra": extra}) and not m.evaluate({"extra": ""}):
                    added.append(dep)
    return added


def check_pyproject(pyproject: dict[str, object], dev_lock: str, runtime_lock: str) -> list[str]:
    """Disagreements between pyproject.toml and the two locks (empty when they agree)."""
    problems: list[str] = []
    locks = (("locks/dev.txt", dev_lock, True), ("locks/runtime.txt", runtime_lock, False))
    for name, text, dev in locks:
        pins = parse_lock(text)
        wanted = declared(pyproject, dev=dev)
        wanted_names = {canonicalize_name(r.name) for r in wanted}
        wanted_names |= {canonicalize_name(r.name) for r in extras_of(wanted)}
        for req in wanted:
            key = canonicalize_name(req.name)
            pin = pins.get(key)
            if pin is None:
                problems.append(f"{name}: {req} is in pyproject.toml but not locked")
                continue
            if not req.specifier.contains(pin.version, prereleases=True):
                problems.append(f"{name}: {key}=={pin.version} does not satisfy {req}")
            if PROJECT_VIA not in pin.via:
                problems.append(f"{name}: {key} is not locked as a direct dependency")
        for req in extras_of(wanted):
            if canonicalize_name(req.name) not in pins:
                problems.append(f"{name}: {req} (an extra's dependency) is not locked")
        for locked, pin in pins.items():
            if PROJECT_VIA in pin.via and locked not in wanted_names:
                problems.append(f"{name}: {locked} is locked as direct but not in pyproject.toml")
            if pin.hashes == 0:
                problems.append(f"{name}: {locked} has no hash")
    dev_pins, runtime_pins = parse_lock(dev_lock), parse_lock(runtime_lock)
    for locked, pin in runtime_pins.items():
        other = dev_pins.get(locked)
        if other is None or other.version != pin.version:
            problems.append(f"locks/runtime.txt: {locked}=={pin.version} not as in dev.txt")
    return problems


def check_installed(lock_text: str) -> list[str]:
    """Differences between the running interpreter's packages and the lock."""
    pins: dict[str, str] = {k: p.version for k, p in parse_lock(lock_text).items()}
    have: dict[str, str] = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if canonicalize_name(d.metadata["Name"]) not in VENV_TOOLS
    }
    problems = [f"missing {k}=={v}" for k, v in sorted(pins.items()) if k not in have]
    problems += [f"not in the lock: {k}=={v}" for k, v in sorted(have.items()) if k not in pins]
    problems += [
        f"{k} is {have[k]}, the lock says {v}"
        for k, v in sorted(pins.items())
        if k in have and have[k] != v
    ]
    return problems


def main(argv: list[str]) -> int:
    if argv[:1] == ["installed"] and len(argv) == 2:
        problems = check_installed(Path(argv[1]).read_text())
    elif argv == ["pyproject"]:
        problems = check_pyproject(
            tomllib.loads((ROOT / "pyproject.toml").read_text()),
            (ROOT / "locks/dev.txt").read_text(),
            (ROOT / "locks/runtime.txt").read_text(),
        )
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(f"lock: {p}", file=sys.stderr)
    if problems:
        print("lock: run `make lock` (docs/DEPENDENCIES.md)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
