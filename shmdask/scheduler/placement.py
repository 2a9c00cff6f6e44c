"""Where a restricted task may run: dask's ``workers=`` and ``resources=``.

In: a ready task whose graph carried scheduling ``annotations``, the worker
the loop is filling and the present workers.  Out: "here" (the task's
resource amounts are then held on that worker until it is answered),
"elsewhere" (another present worker can take it now: pass it over), or
"parked": set aside until something changes that could let it run -- a
worker joins (no present worker could ever run it, or all that could are
busy), or resource amounts are given back (every worker that has them has
them in use).  A parked task is not looked at again on each dispatch, so a
queue of tasks waiting on one GPU costs nothing until the GPU is free.

Kept out of the loop (:mod:`shmdask.scheduler.engine`), which only asks
:meth:`Placement.place` about tasks that have annotations and gives back
what :meth:`Placement.release` and friends hand it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shmdask.scheduler.interfaces import WorkerHandle


def may_run(options: Mapping, worker: WorkerHandle) -> bool:
    """Could ``worker`` ever run a task with these options (ignoring load)?"""
    allowed = options.get("workers")
    if allowed and not options.get("allow_other_workers"):
        names = {worker.id, str(getattr(worker, "name", worker.id)), worker.host}
        if names.isdisjoint(allowed):
            return False
    need = options.get("resources")
    if need:
        have = worker.resources or {}
        return all(have.get(r, 0) >= n for r, n in need.items())
    return True


class Placement:
    """Resource amounts in use per worker, and the tasks set aside (see module)."""

    def __init__(self) -> None:
        self.held: dict = {}  # key -> (worker id, resources) while in flight
        self.used: dict[str, dict] = {}  # worker id -> amounts in use
        self.no_worker: list = []  # no present worker could ever run these (TaskState)
        self.no_slot: list = []  # the workers that could have their resources in use

    def place(self, ts: Any, worker: WorkerHandle, workers: Mapping[str, WorkerHandle]) -> str:
        """"here", "elsewhere" or "parked" for ``ts`` on ``worker`` (see module)."""
        options = ts.annotations
        need = options.get("resources")
        if not need and not options.get("workers"):
            return "here"
        if may_run(options, worker) and self._free(worker, need):
            if need:
                used = self.used.setdefault(worker.id, {})
                for r, n in need.items():
                    used[r] = used.get(r, 0) + n
                self.held[ts.key] = (worker.id, need)
            return "here"
        able = [w for w in workers.values() if w is not worker and may_run(options, w)]
        if any(self._free(w, need) for w in able):
            return "elsewhere"
        if able or may_run(options, worker):  # busy: until amounts are given back
            self.no_slot.append(ts)
        else:  # until a worker joins
            self.no_worker.append(ts)
        return "parked"

    def _free(self, worker: WorkerHandle, need: Mapping | None) -> bool:
        """Whether ``worker`` has ``need`` free now."""
        if not need:
            return True
        used = self.used.get(worker.id, {})
        have = worker.resources or {}
        return all(used.get(r, 0) + n <= have.get(r, 0) for r, n in need.items())

    def release(self, key: Any) -> list:
        """``key`` was answered: give back its amounts; the tasks to requeue."""
        held = self.held.pop(key, None)
        if held is None:
            return []
        used = self.used.get(held[0])
        if used is not None:
            for r, n in held[1].items():
                used[r] -= n
        return self._unpark_slots()

    def worker_lost(self, worker_id: str) -> list:
        """Forget the amounts a lost worker held; the tasks to requeue."""
        if self.used.pop(worker_id, None) is None:
            return []
        return self._unpark_slots()

    def worker_added(self) -> list:
        """A worker joined: every parked task may have a place now; requeue them."""
        parked = self.no_worker + self.no_slot
        self.no_worker, self.no_slot = [], []
        return parked

    def _unpark_slots(self) -> list:
        parked, self.no_slot = self.no_slot, []
        return parked

    def clear(self) -> None:
        self.held.clear()
        self.used.clear()
        self.no_worker.clear()
        self.no_slot.clear()
