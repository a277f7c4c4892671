"""Pausing Python's cyclic garbage collector while the engine builds its big structures.

Listings, plans, results and audit rows hold no reference cycles, so reference counting frees them all; the
cyclic collector only costs time, re-scanning every live container each time enough new ones pile up. On a
100k-file plan that was two thirds of make_plan's time (0.25 s -> 0.09 s without it)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block (nested blocks are fine); it runs as usual after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
