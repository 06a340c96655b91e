"""Generated protobuf code is never stale: regenerating gives the same files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    subprocess.run(
        [
            "bash",
            str(ROOT / "scripts/gen_protos.sh"),
            sys.executable,
            str(ROOT / "protos"),
            str(out),
        ],
        check=True,
        cwd=ROOT,
    )
    generated = ROOT / "protos/gen"
    fresh = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    current = {
        p.relative_to(generated): p.read_bytes()
        for p in generated.rglob("*")
        if p.is_file() and p.name != ".stamp" and "__pycache__" not in p.parts
    }
    assert fresh.keys() == current.keys(), "run `make protos`"
    stale = [str(name) for name, data in fresh.items() if current[name] != data]
    assert not stale, f"stale generated code (run `make protos`): {stale}"


@pytest.mark.parametrize("module", ["common", "auth", "zone", "matchmaking", "relay"])
def test_every_message_and_field_is_documented(module: str) -> None:
    text = (ROOT / f"protos/tessera/v1/{module}.proto").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(text):
        stripped = line.strip()
        is_decl = stripped.startswith(("message ", "service ", "rpc ", "enum ")) or (
            "=" in stripped
            and stripped.endswith(";")
            and not stripped.startswith(("syntax", "option"))
        )
        if is_decl and not text[i - 1].strip().startswith("//"):
            undocumented.append(f"{module}.proto:{i + 1}: {stripped}")
    assert not undocumented, "\n".join(undocumented)
