"""Declarations are checked when made; load() names what is wrong."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.game import (
    DEFAULT,
    Action,
    Argument,
    Component,
    Module,
    ModuleError,
    Replication,
    System,
    load,
)


def nothing(*_args: object) -> None:
    return None


@pytest.mark.parametrize(
    ("dtype", "value", "fits"),
    [
        ("uint32", 0, True),
        ("uint32", 2**32 - 1, True),
        ("uint32", 2**32, False),
        ("uint32", -1, False),
        ("uint32", 1.5, False),
        ("int8", -128, True),
        ("int8", 128, False),
        ("bool", 1, True),
        ("bool", 2, False),
        ("float32", 1e39, False),
        ("float32", -3.5, True),
        ("float64", 1e300, True),
        ("float64", math.nan, False),
        ("float64", math.inf, False),
    ],
)
def test_a_component_holds_what_its_dtype_holds(dtype: str, value: float, fits: bool) -> None:
    assert Component("c", dtype).fits(value) is fits


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Component("Gold", "uint32"), "component name"),
        (lambda: Component("gold", "int64"), "dtype"),
        (lambda: Component("gold", "uint8", default=300), "default"),
        (lambda: Component("gold", "float64", default=math.nan), "default"),
        (lambda: Replication(step=0.0, bits=8), "step"),
        (lambda: Replication(step=1.0, bits=33), "bits"),
        (lambda: Replication(step=1.0, bits=8, tiers=("close",)), "tiers"),
        (lambda: Replication(step=1.0, bits=8, tiers=()), "tiers"),
        (lambda: System("tick", 3), "not callable"),  # type: ignore[arg-type]
        (lambda: Argument("n", 5, 1), "low <= high"),
        (lambda: Argument("n", 0, math.inf), "low <= high"),
        (lambda: Action(0, "a", nothing), "id"),
        (lambda: Action(65536, "a", nothing), "id"),
        (lambda: Action(1, "a", nothing, rate_per_s=0), "rate_per_s"),
        (lambda: Action(1, "a", nothing, arguments=(Argument("n", 0, 1),) * 2), "duplicate"),
        (lambda: Module(""), "module name"),
        (lambda: Module("a/b"), "module name"),
        (lambda: Module("m", components=(Component("c", "bool"),) * 2), "duplicate components"),
        (lambda: Module("m", systems=(System("s", nothing),) * 2), "duplicate systems"),
        (
            lambda: Module("m", actions=(Action(1, "a", nothing), Action(1, "b", nothing))),
            "duplicate action ids",
        ),
        (lambda: Module("m", events=("Boom",)), "event name"),
        (lambda: Module("m", systems=(nothing,)), "System values"),  # type: ignore[arg-type]
        (
            lambda: Module(
                "m",
                components=tuple(
                    Component(f"c{i}", "uint8", replicate=Replication(1.0, 8)) for i in range(33)
                ),
            ),
            "33 replicated components, at most 32",
        ),
    ],
)
def test_nonsense_is_refused_when_declared(make: object, message: str) -> None:
    with pytest.raises(ModuleError, match=message):
        make()  # type: ignore[operator]


def test_the_default_module_declares_nothing() -> None:
    game = load("")
    assert game.name == DEFAULT
    assert (game.components, game.systems, game.actions, game.events) == ((), (), (), ())


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("studio_")]:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise RuntimeError('no licence')", "failed to import: RuntimeError"),
        ("GAME = 3", "has no GAME"),
        (
            "from tessera.game import Component, Module\n"
            "GAME = Module('m', components=(Component('gold', 'complex128'),))",
            "declares something invalid: component gold: dtype",
        ),
    ],
)
def test_load_names_the_module_and_the_fault(packages: Path, source: str, message: str) -> None:
    (packages / "studio_bad.py").write_text(source)
    with pytest.raises(ModuleError, match="'studio_bad' " + message):
        load("studio_bad")


def test_load_of_a_missing_module() -> None:
    with pytest.raises(ModuleError, match="'studio_absent' failed to import: ModuleNotFound"):
        load("studio_absent")


def test_load_returns_the_declared_game(packages: Path) -> None:
    (packages / "studio_ok.py").write_text(
        "from tessera.game import Module\nGAME = Module('ok', events=('won',))\n"
    )
    assert load("studio_ok").events == ("won",)
