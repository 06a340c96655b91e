"""Where numba keeps the zone's compiled kernels (``NUMBA_CACHE_DIR``), and
what else the zone settles before numba is imported.

numba only uses a cache directory it can write to. The container image warms
its cache at build time into ``NUMBA_CACHE_DIR``; under a read-only root file
system that directory is copied once to a writable temporary directory
(``TMPDIR``, an emptyDir in the chart) before numba is imported, so the warm
kernels are still found.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile


def prepare() -> str | None:
    """Make ``NUMBA_CACHE_DIR`` writable (copying it if needed); the directory in use."""
    src = os.environ.get("NUMBA_CACHE_DIR", "")
    if not src:
        return None
    try:
        os.makedirs(src, exist_ok=True)
        tempfile.TemporaryFile(dir=src).close()
        return src
    except OSError:
        dst = os.path.join(tempfile.gettempdir(), "tessera-numba-cache")
        if os.path.isdir(src):
            shutil.copytree(src, dst, dirs_exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = dst
        return dst


def exclude_scipy() -> None:
    """Make ``import scipy`` fail in this process, as it does in the image, where
    scipy is not installed (a development dependency only). Where it is installed,
    numba imports ``scipy.linalg`` when it loads its first kernel, for the BLAS
    behind ``np.dot`` and ``np.linalg`` inside kernels, which no zone kernel uses;
    that import was ~0.17 of a zone start's ~1.0 CPU-seconds (docs/ZONE.md)."""
    sys.modules.setdefault("scipy", None)  # type: ignore[arg-type]  # None: import fails


if __name__ == "__main__":
    # `python -m tessera.zone.jitcache`: fill the cache (the image build runs this).
    prepare()
    exclude_scipy()
    from tessera.zone import messages
    from tessera.zone.config import ZoneConfig
    from tessera.zone.simulation import warm_up

    warm_up(ZoneConfig.from_env())
    messages.warm_up()
