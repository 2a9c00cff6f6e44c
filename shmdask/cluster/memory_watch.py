"""The memory budget of a LocalCluster's workers: measure, spill, pause, restart.

In: every ``MEMORY_POLL`` seconds, what each worker owns -- the shared memory
it created (charged to it however many processes map it, read from /dev/shm)
plus its private memory (resident minus shared pages) -- and the client's
shared memory.  Out, against the thresholds of ``memory_limit``
(``memory.target/spill/pause/terminate`` in :mod:`shmdask.config`):

- above *target*: a request to the spill thread to move that owner's least
  recently used values to disk (:meth:`ShmStore.spill`), off every other thread,
  and the engine gives the worker tasks that free memory before tasks that make
  more (``handle.above_target``; see :mod:`shmdask.scheduler.state`);
- above *pause*: the worker's handle is marked paused, and the engine gives it
  no new tasks until it falls below again;
- above *terminate*: the worker is restarted (its data stays readable: values
  of a dead worker are spilled).

A mixin of the cluster's ``_Runtime``, which owns the workers, the store and
the engine these methods read; kept apart so the policy reads in one place.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

import psutil

from shmdask.cluster.shm import bytes_by_owner
from shmdask.cluster.spill import private_memory
from shmdask.units import format_bytes, parse_bytes

log = logging.getLogger("shmdask.cluster")

MEMORY_POLL = 0.1  # seconds between memory-limit checks


class WorkerMemoryWarning(RuntimeWarning):
    """A worker passed its memory limit and was restarted."""


def parse_memory_limit(limit: Any, n_workers: int) -> int | None:
    """"auto" -> total memory / n_workers; None/0 -> no limit; ints, floats
    (a fraction of total memory if <= 1) and strings like "2GB", "512 MiB"."""
    total = psutil.virtual_memory().total
    if limit is None or limit == 0:
        return None
    if isinstance(limit, str):
        if limit.lower() == "auto":
            return int(total / max(1, n_workers))
        try:
            return parse_bytes(limit)
        except ValueError as exc:
            raise ValueError(f"memory_limit {limit!r} is not a size like '2GB' or "
                             f"'auto': {exc}") from None
    if isinstance(limit, bool) or not isinstance(limit, int | float):
        raise TypeError(f"memory_limit must be a size, 'auto' or None, not {limit!r}")
    if limit < 0:
        raise ValueError(f"memory_limit must be positive, got {limit}")
    if isinstance(limit, float) and limit <= 1:
        return int(total * limit)
    return int(limit)


class MemoryWatch:
    """The budget policy; see the module docstring.  Expects ``workers``,
    ``store``, ``engine``, ``memory_limit``, ``fractions``, ``cluster_id`` and
    the ``_stop``, ``_spill_requested`` events and ``_spill_wanted`` of the runtime."""

    workers: dict
    store: Any
    engine: Any
    memory_limit: int | None
    fractions: dict
    cluster_id: str
    _stop: threading.Event
    _spill_requested: threading.Event
    _spill_wanted: dict

    def memory_report(self) -> dict[str, dict]:
        """Per worker (and "client"): what counts against the budget, measured now."""
        shm = bytes_by_owner(self.cluster_id)
        held = self.store.memory_by_owner()
        report = {}
        for wid, handle in list(self.workers.items()):
            private = handle.measure_private()
            if private is None:
                continue
            report[wid] = self._account(shm.get(wid, 0), private, held.get(wid), handle.paused)
        report["client"] = self._account(shm.get("client", 0), private_memory(),
                                         held.get("client"), False)
        return report

    @staticmethod
    def _account(shm: int, private: int, held: dict | None, paused: bool) -> dict:
        held = held or {"managed": 0, "spilled": 0}
        return {"memory": shm + private, "shm": shm, "private": private,
                "managed_bytes": held["managed"],
                "spilled_bytes": {"memory": held["managed"], "disk": held["spilled"]},
                "paused": paused}

    def _watch_memory(self) -> None:
        """Measure every worker against its budget: spill, pause, restart."""
        limit = self.memory_limit
        fractions = self.fractions
        all_paused = False
        while not self._stop.wait(MEMORY_POLL):
            try:
                report = self.memory_report()
            except Exception:  # noqa: BLE001 - a measurement must never stop the watch
                log.exception("measuring memory failed")
                continue
            wanted = {}
            woke = False
            for wid, m in report.items():
                # The client's private memory is the user's program: only the
                # shared memory of its values is the cluster's to manage.
                used = m["shm"] if wid == "client" else m["memory"]
                above_target = bool(fractions["target"]) and used > fractions["target"] * limit
                if above_target:
                    wanted[wid] = used - int(fractions["target"] * limit)
                handle = self.workers.get(wid)
                if handle is None or handle.lost_reason:
                    continue
                if fractions["terminate"] and used > fractions["terminate"] * limit:
                    self._terminate(handle, m)
                    continue
                handle.above_target = above_target
                paused = bool(fractions["pause"]) and used > fractions["pause"] * limit
                if paused != handle.paused:
                    handle.paused = paused
                    woke = woke or not paused
                    log.info("worker %s %s (%s of %s)", wid,
                             "paused" if paused else "resumed", format_bytes(used),
                             format_bytes(limit))
            for owner in self.store.dead_owners_in_shm():
                wanted[owner] = self.store.memory_by_owner()[owner]["managed"]
            if wanted:
                self._spill_wanted = wanted
                self._spill_requested.set()
            if woke:
                self.engine.post(("wake",))
            handles = list(self.workers.values())
            stuck = bool(handles) and all(h.paused for h in handles)
            if stuck and not all_paused:
                log.warning("every worker is paused: their private memory is above %s of "
                            "memory_limit=%s and nothing runs until it falls (is a task "
                            "keeping large objects alive?)", fractions["pause"],
                            format_bytes(limit))
            all_paused = stuck
            self.store.collect_frees()

    def _terminate(self, handle: Any, m: dict) -> None:
        key = handle.running_task()
        reason = (f"worker {handle.id} (pid {handle.pid}) exceeded its memory limit "
                  f"({format_bytes(m['memory'])} > {format_bytes(self.memory_limit)}: "
                  f"{format_bytes(m['private'])} private, {format_bytes(m['shm'])} shared) "
                  f"while running task {key!r}; restarting it")
        warnings.warn(reason, WorkerMemoryWarning, stacklevel=1)
        handle.kill(reason)

    def _spill_loop(self) -> None:
        """Move cold values to disk as the watcher asks, off every other thread."""
        while True:
            self._spill_requested.wait()
            if self._stop.is_set():
                return
            self._spill_requested.clear()
            wanted, self._spill_wanted = self._spill_wanted, {}
            for owner, nbytes in wanted.items():
                try:
                    self.store.spill(owner, nbytes)
                except Exception:  # noqa: BLE001 - spilling again next round is the remedy
                    log.exception("spilling %s of %s failed", format_bytes(nbytes), owner)
