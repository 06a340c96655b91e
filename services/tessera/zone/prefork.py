"""What forked zone processes start from (``ForkedProcess(preload=...)``): the
zone's code imported and its kernels loaded once, in the fork server.

numpy's BLAS runs one thread here (no zone kernel uses BLAS), so the fork copies
no thread pool.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tessera.zone import jitcache

jitcache.prepare()
jitcache.exclude_scipy()

import tessera.zone.__main__  # noqa: E402, F401  (the entry's imports)
from tessera.common.config import Env  # noqa: E402
from tessera.common.heap import settle_heap  # noqa: E402
from tessera.zone import messages, metrics, persistence, results, servicer, store  # noqa: E402, F401
from tessera.zone.config import ZoneConfig  # noqa: E402
from tessera.zone.simulation import warm_up  # noqa: E402

warm_up(ZoneConfig.from_env(Env({})))
messages.warm_up()
settle_heap()  # the zones' collections never walk (nor copy) the template's objects
