"""A small reader for the Dockerfile's instructions, shared by the image tests."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"

# The components the issue names; each is `python -m tessera.<component>`.
COMPONENTS = ("operator", "zone", "auth", "matchmaking", "relay", "console")


@dataclass
class Instruction:
    op: str
    args: str

    def words(self) -> list[str]:
        """Arguments in exec form (JSON array) or shell-split."""
        if self.args.startswith("["):
            words: list[str] = json.loads(self.args)
            return words
        return shlex.split(self.args)

    def pairs(self) -> dict[str, str]:
        """KEY=VALUE arguments (ENV, LABEL, ARG)."""
        return dict(w.split("=", 1) for w in self.words() if "=" in w)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def ops(self, op: str) -> list[Instruction]:
        return [i for i in self.instructions if i.op == op]


def instructions(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            op, _, args = line.strip().partition(" ")
            out.append(Instruction(op.upper(), " ".join(args.split())))
    return out


def stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages in order."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for ins in instructions(text):
        if ins.op == "FROM":
            words = ins.args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(base, name))
        elif not result and ins.op == "ARG":
            global_args.update(ins.pairs())
        else:
            result[-1].instructions.append(ins)
    return global_args, result


def entry_modules(final: Stage) -> list[str]:
    """The modules the image declares as its entry points."""
    labels: dict[str, str] = {}
    for label in final.ops("LABEL"):
        labels.update(label.pairs())
    return labels["io.tessera.entrypoints"].split()


def pythonpath_roots(final: Stage) -> list[str]:
    env: dict[str, str] = {}
    for ins in final.ops("ENV"):
        env.update(ins.pairs())
    return env["PYTHONPATH"].split(":")
