"""The engine's garbage-collection policy: no collection inside huge steps
(``gc_paused``), and fewer looks at young objects while an engine runs
(``SPARSE_COLLECTION``).

Building, walking and adding a graph of a million tasks allocates millions of
tuples, dicts and task states that all live on; every few hundred allocations
Python's cyclic collector runs, and its older generations are walked again and
again as they grow.  Measured on the 100,000-task ``random(...).sum()`` graph,
that was about 60 % of ``SchedulerState.update_graph`` and a quarter of
materializing and ordering the graph.  Nothing in those steps makes garbage
cycles, so collection waits until the step is over.

The switch is process-wide (``gc.disable``), so it is a :class:`HeldSetting`
like the threshold below: pauses nested in one another, or running at the
same time in several threads, keep the collector off until the last one
ends, and then it comes back on; a collector the user turned off stays off.

Between those steps, every task's passage makes short-lived containers: the
batch sent, the decoded results, the "done" event, the records.  With
Python's default the collector walks the young objects after every 700 new
ones, so it walks these before they die, and moves them a generation up to
walk them again.  In the client of a LocalCluster(2) running noop_10k that
came to ~45 ms of ~320 ms per run, in ~50 collections that found nothing to
collect (throwaway gc callbacks).  While an engine runs (a cluster's
lifetime, or one ``compute`` on the threads or sync backend) the first
threshold is raised to ``SPARSE_YOUNG_THRESHOLD``: the user's own thresholds
come back when the last engine stops, and a higher threshold (or 0, no
collection) set by the user is left as it is.  Garbage cycles still go, only
after more allocations.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

from shmdask.scheduler.held_setting import HeldSetting

#: Steps smaller than this many tasks do not bother.
GC_PAUSE_MIN_TASKS = 10_000


COLLECTOR_OFF = HeldSetting(gc.isenabled,
                            lambda enabled: gc.enable() if enabled else gc.disable(),
                            lambda enabled: False if enabled else None)


@contextlib.contextmanager
def gc_paused(n_tasks: int = GC_PAUSE_MIN_TASKS) -> Iterator[None]:
    """Collector off for the block when it handles at least ``GC_PAUSE_MIN_TASKS``."""
    if n_tasks < GC_PAUSE_MIN_TASKS:
        yield
        return
    with COLLECTOR_OFF.held():
        yield


#: New container objects between two collections of the youngest generation
#: while an engine runs (Python's default is 700).
SPARSE_YOUNG_THRESHOLD = 20_000


def _sparse_thresholds(current: tuple[int, int, int]) -> tuple[int, int, int] | None:
    young = current[0]
    if young == 0 or young >= SPARSE_YOUNG_THRESHOLD:  # off, or already sparse
        return None
    return (SPARSE_YOUNG_THRESHOLD, *current[1:])


SPARSE_COLLECTION = HeldSetting(gc.get_threshold, lambda t: gc.set_threshold(*t),
                                _sparse_thresholds)
