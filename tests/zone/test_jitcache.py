"""numba cache directory: kept when writable, moved to a writable temp dir when not."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tessera.zone import jitcache


def test_a_writable_cache_dir_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    assert jitcache.prepare() == str(tmp_path / "cache")
    assert (tmp_path / "cache").is_dir()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "cache")


def test_an_unusable_cache_dir_moves_to_the_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    used = jitcache.prepare()
    assert used == str(tmp_path / "tmp" / "tessera-numba-cache")
    assert os.environ["NUMBA_CACHE_DIR"] == used


def test_no_cache_dir_leaves_numba_to_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert jitcache.prepare() is None
