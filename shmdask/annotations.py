"""dask's scheduling options on ``submit``, ``map``, ``compute`` and ``persist``.

In: the keywords a dask user passes (``priority=``, ``retries=``,
``workers=``, ``allow_other_workers=``, ``resources=``, ``fifo_timeout=``).
Out: one checked dict of the options that change anything (None when none
does), which travels with the graph to the engine and applies to each of its
tasks.  They are taken out of the call here, so they never reach the user's
function.

What each means (as in dask.distributed):

- ``priority``: higher runs first, ahead of graph order and submission order.
- ``retries``: times a task that raises is run again before it errs.
- ``workers``: names, ids or host names of the workers that may run the tasks;
  a task waits while none of them is present.  ``allow_other_workers=True``
  makes that a preference, which on one machine (where every worker reads
  every result) means no restriction.
- ``resources``: abstract amounts a task holds on its worker while it runs
  (``{"GPU": 1}``); only workers declaring enough (``LocalCluster(resources=...)``)
  run it.
- ``fifo_timeout``: graphs submitted within this time of the previous one
  share its place in the queue (then graph order decides).  shmdask's default
  is strict submission order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shmdask.units import parse_timedelta


def scheduling_options(priority: Any = 0, retries: Any = None, workers: Any = None,
                       allow_other_workers: Any = False, resources: Any = None,
                       fifo_timeout: Any = None, actors: Any = None) -> dict | None:
    """Check dask's scheduling keywords; the ones that matter as a dict, or None."""
    options: dict[str, Any] = {}
    if actors:
        raise NotImplementedError("shmdask has no actors (actor=/actors=)")
    if priority is not None and priority != 0:
        if isinstance(priority, bool) or not isinstance(priority, int | float):
            raise TypeError(f"priority= must be a number, not {priority!r}")
        options["priority"] = priority
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries= must be an int >= 0, not {retries!r}")
        if retries:
            options["retries"] = retries
    names = _worker_names(workers)
    if names:
        options["workers"] = names
        if allow_other_workers:
            options["allow_other_workers"] = True
    elif allow_other_workers and workers is None:
        raise ValueError("allow_other_workers= only means something together with workers=")
    resources = check_resources(resources)
    if resources:
        options["resources"] = resources
    if fifo_timeout is not None:
        seconds = parse_timedelta(fifo_timeout)
        if seconds:
            options["fifo_timeout"] = seconds
    return options or None


def _worker_names(workers: Any) -> frozenset | None:
    if workers is None:
        return None
    if isinstance(workers, Mapping):
        raise TypeError("workers= as a dict per collection or key is not supported by "
                        "shmdask; give one worker name or a list of names")
    if isinstance(workers, str | int):
        workers = [workers]
    if not isinstance(workers, Iterable):
        raise TypeError(f"workers= must be a worker name or a list of names, not {workers!r}")
    return frozenset(str(w) for w in workers) or None


def check_resources(resources: Any) -> dict | None:
    """``{"GPU": 1, "memory": 2e9}``: names to amounts >= 0 (of a task, or a worker)."""
    if resources is None:
        return None
    if not isinstance(resources, Mapping):
        raise TypeError(f"resources= must be a dict like {{'GPU': 1}}, not {resources!r}")
    for name, amount in resources.items():
        if (not isinstance(name, str) or isinstance(amount, bool)
                or not isinstance(amount, int | float) or amount < 0):
            raise ValueError(f"resources= maps names to amounts >= 0, got {name!r}: {amount!r}")
    return dict(resources)
