"""Changing the number of workers of a LocalCluster: ``scale``, ``retire_workers``, ``adapt``.

In: a target (``scale(n)``), workers to let go (``retire_workers``), or bounds
for an adaptive policy.  Out: worker processes started or stopped through
the cluster's runtime, and a line in the cluster's log for each.

Retiring is graceful: the engine sends a retiring worker no more tasks, and
the process is stopped once the tasks it already holds are answered (at once
if it is idle), so nothing it ran is lost or counted as a crash.  Its results
stay: they live in shared memory, which outlives the process (the store
unlinks a dead worker's segments only when their last value is released).
When fewer workers are wanted, idle ones go first, then the least busy, the
newest first among equals.

Adaptive scaling (:class:`Adaptive`, one thread per cluster, stopped when the
cluster closes or ``adapt`` is called again) asks the engine every
``interval`` how much work waits: tasks ready or running, times the mean task
duration so far.  It wants enough workers to finish that in
``target_duration`` (and no more than there are tasks to run), within
``[minimum, maximum]``.  More workers are started at once; workers are
retired only after ``wait_count`` intervals in a row wanted fewer, and only
idle ones, so a burst of short tasks does not make the cluster flap.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shmdask.units import parse_bytes, parse_timedelta

if TYPE_CHECKING:
    from shmdask.cluster.local_cluster import _Runtime

log = logging.getLogger("shmdask.cluster")

RETIRE_TIMEOUT = 300.0  # seconds a retiring worker may take to finish its tasks


def scale_up(runtime: _Runtime, n: int) -> list[str]:
    """Start ``n`` more workers; returns their ids once they are up."""
    if n <= 0:
        return []
    handles = runtime.start_workers(n)
    for handle in handles:
        runtime.add(handle)
    runtime.note("INFO", f"scaled up: started {', '.join(h.id for h in handles)}")
    return [h.id for h in handles]


def choose_to_retire(runtime: _Runtime, n: int, idle_only: bool = False) -> list[str]:
    """Which ``n`` workers to let go: idle first, then least busy, newest first."""
    if n <= 0:
        return []
    busy = _busy(runtime)
    candidates = [h for h in runtime.workers.values()
                  if not h.retiring and h.id in busy and (busy[h.id] == 0 or not idle_only)]
    order = sorted(candidates, key=lambda h: (busy[h.id], -_number(h.id)))
    return [h.id for h in order[:n]]


def _busy(runtime: _Runtime) -> dict[str, int]:
    """Tasks occupying each worker's threads (workers taking tasks only)."""
    return runtime.engine.call(lambda e: {wid: e.busy(wid) for wid in e.workers})


def _number(worker_id: str) -> int:
    tail = worker_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def retire_workers(runtime: _Runtime, worker_ids: Iterable[str], wait: bool = True,
                   timeout: float = RETIRE_TIMEOUT) -> dict[str, dict]:
    """Retire these workers gracefully (see the module docstring); returns what
    ``scheduler_info`` said of each.  ``wait``: return once they are gone."""
    infos: dict[str, dict] = {}
    gone: list[threading.Event] = []
    for wid in dict.fromkeys(worker_ids):
        handle = runtime.workers.get(wid)
        if handle is None:
            raise KeyError(f"no worker {wid!r} in this cluster; workers: "
                           f"{sorted(runtime.workers)}")
        if handle.retiring:
            continue
        handle.retiring = True
        infos[wid] = handle.info()
        done = handle.retired = threading.Event()
        gone.append(done)

        def stop(_wid: str, handle: Any = handle, done: threading.Event = done) -> None:
            # On the engine thread: stopping a process takes a while, do it apart.
            def close() -> None:
                try:
                    runtime.retire(handle, f"worker {handle.id} was retired")
                    runtime.note("INFO", f"retired {handle.id}")
                finally:
                    done.set()

            threading.Thread(target=close, daemon=True,
                             name=f"shmdask-retire-{handle.id}").start()

        runtime.engine.retire_worker(wid, stop)
    if wait:
        for done in gone:
            if not done.wait(timeout):
                raise TimeoutError(f"workers still busy after {timeout} s of retiring")
    return infos


def scale(runtime: _Runtime, n: int, wait: bool = False) -> None:
    """Have ``n`` workers: start more, or retire some (idle first).  Workers
    still running tasks leave when those are done (``wait``: block until then)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"scale() needs a number of workers, not {n!r}")
    if n < 0:
        raise ValueError(f"cannot scale to {n} workers")
    with runtime.scale_lock:
        runtime.n_workers = n
        staying = [h for h in runtime.workers.values() if not h.retiring]
        if n > len(staying):
            scale_up(runtime, n - len(staying))
        elif n < len(staying):
            busy = _busy(runtime)
            leaving = choose_to_retire(runtime, len(staying) - n)
            retire_workers(runtime, leaving, wait=wait)
            for wid in leaving:  # idle ones are gone when scale() returns
                handle = runtime.workers.get(wid)
                if handle is not None and not busy.get(wid):
                    handle.retired.wait(RETIRE_TIMEOUT)


def workers_for(n: int | None, memory: Any, cores: int | None, runtime: _Runtime) -> int:
    """dask's ``scale(n, memory=, cores=)``: enough workers for all that is asked."""
    want = n or 0
    if memory is not None:
        if not runtime.memory_limit:
            raise ValueError("scale(memory=...) needs workers with a memory_limit")
        want = max(want, math.ceil(parse_bytes(memory) / runtime.memory_limit))
    if cores is not None:
        want = max(want, math.ceil(cores / runtime.nthreads))
    return want


def _seconds(value: Any, name: str) -> float:
    seconds = parse_timedelta(value)  # seconds, or dask's strings: "1s", "500ms"
    if seconds <= 0:
        raise ValueError(f"{name} must be a positive duration, not {value!r}")
    return seconds


class Adaptive:
    """The adaptive policy of one cluster; see the module docstring."""

    def __init__(self, runtime: _Runtime, minimum: int = 0, maximum: float = math.inf,
                 interval: Any = "1s", wait_count: int = 3, target_duration: Any = "5s"):
        for name, value in (("minimum", minimum), ("maximum", maximum)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"adapt({name}=...) must be a number >= 0, not {value!r}")
        if minimum > maximum:
            raise ValueError(f"adapt(minimum={minimum}) is above maximum={maximum}")
        if isinstance(wait_count, bool) or not isinstance(wait_count, int) or wait_count < 1:
            raise ValueError(f"wait_count must be a positive int, not {wait_count!r}")
        self.runtime = runtime
        self.minimum = int(minimum)
        self.maximum = maximum
        self.interval = _seconds(interval, "interval")
        self.wait_count = wait_count
        self.target_duration = _seconds(target_duration, "target_duration")
        self.log: list[tuple[float, str, int]] = []  # (time, "up"|"down", how many)
        self._below = 0  # intervals in a row that wanted fewer workers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"shmdask-adapt-{runtime.cluster_id}")
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self) -> None:
        runtime = self.runtime
        self._step()  # reach the minimum at once
        while not (self._stop.wait(self.interval) or runtime._stop.is_set()):
            try:
                self._step()
            except Exception:  # a failed round is logged; the next one tries again
                if runtime.closing:
                    return
                log.exception("adaptive scaling of %s failed a round", runtime.cluster_id)

    def recommendation(self) -> int:
        """How many workers the work waiting now asks for, within the bounds."""
        runtime = self.runtime
        engine = runtime.engine
        load = engine.call(lambda e: e.load())
        tasks = load["ready"] + load["processing"]
        work = tasks * engine._mean_duration  # seconds of work, as far as we know
        want = math.ceil(work / self.target_duration) if tasks else 0
        want = min(want, math.ceil(tasks / runtime.nthreads))
        if tasks:
            want = max(want, 1)
        return int(min(self.maximum, max(self.minimum, want)))

    def _step(self) -> None:
        runtime = self.runtime
        if runtime.closing:
            return
        with runtime.scale_lock:
            have = sum(not h.retiring for h in runtime.workers.values())
            want = self.recommendation()
            if want > have:
                self._below = 0
                self.log.append((time.time(), "up", want - have))
                scale_up(runtime, want - have)
            elif want < have:
                self._below += 1
                if self._below >= self.wait_count:
                    self._below = 0
                    idle = choose_to_retire(runtime, have - want, idle_only=True)
                    if idle:
                        self.log.append((time.time(), "down", len(idle)))
                        retire_workers(runtime, idle, wait=False)
            else:
                self._below = 0
            runtime.n_workers = max(want, self.minimum)

    def __repr__(self) -> str:
        return (f"<Adaptive minimum={self.minimum} maximum={self.maximum} "
                f"interval={self.interval:g}s{'' if self.running else ' stopped'}>")


__all__ = ["Adaptive", "scale", "scale_up", "retire_workers", "choose_to_retire", "workers_for"]
