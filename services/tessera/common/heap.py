"""The cyclic garbage collector once a process has started."""

from __future__ import annotations

import gc


def settle_heap(threshold: int | None = None) -> None:
    """Move everything alive (modules, protobuf descriptors, gRPC, numba, the
    wiring) to the permanent generation, which collections never walk: a full
    collection over a zone's ~150,000 start-up objects stops its loop for
    ~75 ms, and in a process forked from a template it would also copy every
    page of the template's it touches. With ``threshold``, set generation 0's
    (0: no automatic collections); the older generations' are kept."""
    gc.collect()
    gc.freeze()
    if threshold is not None:
        gc.set_threshold(threshold, *gc.get_threshold()[1:])
