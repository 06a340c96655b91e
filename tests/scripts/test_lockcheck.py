"""The lock files against pyproject.toml and the virtualenv (scripts/lockcheck.py)."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lockcheck", ROOT / "scripts" / "lockcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lockcheck"] = module
    spec.loader.exec_module(module)
    return module


lockcheck = _load()
DEV = (ROOT / "locks" / "dev.txt").read_text()
RUNTIME = (ROOT / "locks" / "runtime.txt").read_text()


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pinned(name: str, version: str, via: str = "tessera (pyproject.toml)") -> str:
    return f"{name}=={version} \\\n    --hash=sha256:{'0' * 64}\n    # via {via}\n"


def test_pyproject_and_locks_agree() -> None:
    assert lockcheck.check_pyproject(pyproject(), DEV, RUNTIME) == []


def test_venv_holds_exactly_the_dev_lock() -> None:
    assert lockcheck.check_installed(DEV) == []


def test_dependency_only_in_pyproject_is_reported() -> None:
    project = pyproject()
    project["project"]["dependencies"].append("tessera-nonexistent>=1")
    problems = lockcheck.check_pyproject(project, DEV, RUNTIME)
    assert "locks/dev.txt: tessera-nonexistent>=1 is in pyproject.toml but not locked" in problems
    assert any(p.startswith("locks/runtime.txt: tessera-nonexistent") for p in problems)


def test_dependency_only_in_lock_is_reported() -> None:
    dev = DEV + pinned("tessera-extra", "1.0")
    problems = lockcheck.check_pyproject(pyproject(), dev, RUNTIME)
    assert problems == [
        "locks/dev.txt: tessera-extra is locked as direct but not in pyproject.toml"
    ]


def test_dev_dependency_removed_from_pyproject_is_reported() -> None:
    project = pyproject()
    project["project"]["optional-dependencies"]["dev"].remove("hypothesis>=6.120")
    problems = lockcheck.check_pyproject(project, DEV, RUNTIME)
    assert problems == ["locks/dev.txt: hypothesis is locked as direct but not in pyproject.toml"]


def test_locked_version_outside_the_specifier_is_reported() -> None:
    project = pyproject()
    deps = project["project"]["dependencies"]
    deps[:] = ["numpy>=99" if d.startswith("numpy") else d for d in deps]
    problems = lockcheck.check_pyproject(project, DEV, RUNTIME)
    assert any("numpy==" in p and "does not satisfy numpy>=99" in p for p in problems)


def test_runtime_lock_must_match_dev_versions() -> None:
    runtime = RUNTIME.replace("\nnumpy==", "\nnumpy==0.0.0+x", 1)
    problems = lockcheck.check_pyproject(pyproject(), DEV, runtime)
    assert any(p.startswith("locks/runtime.txt: numpy==0.0.0+x") for p in problems)


def test_extras_must_bring_their_packages() -> None:
    dev = re.sub(r"\nhiredis==.*?(?=\n[a-z])", "", DEV, flags=re.S)
    assert "\nhiredis==" not in dev and "\nredis==" in dev
    problems = lockcheck.check_pyproject(pyproject(), dev, RUNTIME)
    assert any("hiredis" in p and "extra" in p for p in problems), problems


def test_unhashed_pin_is_reported() -> None:
    dev = DEV + "tessera-x==1.0\n    # via kopf\n"
    assert lockcheck.check_pyproject(pyproject(), dev, RUNTIME) == [
        "locks/dev.txt: tessera-x has no hash"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (pinned("A_b", "1.2"), {"a-b": ("1.2", {"tessera (pyproject.toml)"}, 1)}),
        (
            "x==2 \\\n    --hash=sha256:1\n    --hash=sha256:2\n    # via\n    #   p\n    #   q\n",
            {"x": ("2", {"p", "q"}, 2)},
        ),
        ("# header\n--index-url x\n", {}),
    ],
)
def test_parse_lock(text: str, expected: dict[str, tuple[str, set[str], int]]) -> None:
    got = {k: (p.version, p.via, p.hashes) for k, p in lockcheck.parse_lock(text).items()}
    assert got == expected
