"""``gc_paused()``: no cyclic garbage collection while a huge graph is being handled.

Building, walking and adding a graph of a million tasks allocates millions of
tuples, dicts and task states that all live on; every few hundred allocations
Python's cyclic collector runs, and its older generations are walked again and
again as they grow.  Measured on the 100,000-task ``random(...).sum()`` graph,
that was about 60 % of ``SchedulerState.update_graph`` and a quarter of
materializing and ordering the graph.  Nothing in those steps makes garbage
cycles, so collection waits until the step is over.

The switch is process-wide (``gc.disable``): a pause nested in another, or
running at the same time in another thread, leaves the switch to whoever
turned it off, so the collector is never left off.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

#: Steps smaller than this many tasks do not bother.
GC_PAUSE_MIN_TASKS = 10_000


@contextlib.contextmanager
def gc_paused(n_tasks: int = GC_PAUSE_MIN_TASKS) -> Iterator[None]:
    """Collector off for the block when it handles at least ``GC_PAUSE_MIN_TASKS``."""
    if n_tasks < GC_PAUSE_MIN_TASKS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
