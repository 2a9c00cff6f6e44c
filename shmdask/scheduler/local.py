"""In-process backends of the engine: ``sync`` (the caller's thread) and ``threads``.

Both are transports of :class:`~shmdask.scheduler.engine.Engine`: a
:class:`ThreadWorker` owns one thread and a queue of task batches;
:class:`SyncWorker` runs a batch at once inside ``run`` (so the loop, the
tasks and the caller share one thread, which is what ``pdb`` users want).
Values are live Python objects (:class:`~shmdask.scheduler.engine.LocalStore`).

``get_local`` is the one-shot path behind ``compute(scheduler="threads")``::

    caller thread:  Engine.run_until(all wanted keys finished)
                        │ batches                ▲ ("done", ...) events
                        ▼                        │
    worker threads: ThreadWorker._work: execute_task(...) per task

A fresh set of threads serves each call and is gone when it returns, also
after an error or Ctrl-C: tasks still running then are interrupted with an
asynchronous KeyboardInterrupt (Python code stops at its next bytecode; a
call blocked in C finishes first), and no queued task starts.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shmdask.graph import execute_task
from shmdask.scheduler.engine import (
    Engine,
    PieceSubmitter,
    TaskResult,
    TaskSpec,
    WorkerHandle,
)
from shmdask.scheduler.records import task_record

_FLUSH_SECONDS = 0.005


def run_batch(worker: WorkerHandle, tasks: Sequence[TaskSpec], lane: str, post,
              stop_on_error: bool = False) -> None:
    """Run tasks in order, posting results every few milliseconds.

    A task error is posted and the batch goes on (its other tasks may belong
    to other computations), unless ``stop_on_error``.  Ctrl-C in the main
    thread is not a task error: it propagates to the caller at once.
    """
    results: list[TaskResult] = []
    last_flush = time.time()
    clock = time.time
    for key, computation, deps in tasks:
        if worker.stopping:
            break
        start = clock()
        try:
            value = execute_task(computation, deps)
        except BaseException as exc:  # reported to the engine, not raised here
            stop = clock()
            if results:
                post(("done", worker.id, results))
                results = []
            if isinstance(exc, KeyboardInterrupt) and (
                    threading.current_thread() is threading.main_thread()):
                raise
            record = task_record(key, worker.id, lane, start, stop)
            post(("erred", worker.id, key, exc, "", record))
            if stop_on_error or (isinstance(exc, KeyboardInterrupt | SystemExit)
                                 and worker.stopping):
                break
            continue
        stop = clock()
        results.append(TaskResult(key, value, task_record(key, worker.id, lane, start, stop)))
        if stop - last_flush > _FLUSH_SECONDS:
            post(("done", worker.id, results))
            results = []
            last_flush = stop
    if results:
        post(("done", worker.id, results))


class SyncWorker(WorkerHandle):
    """Runs each batch immediately in the loop's own thread."""

    kind = "thread"
    runs_inline = True

    def __init__(self, engine: Engine, worker_id: str = "sync"):
        self.id = worker_id
        self.nthreads = 1
        self.engine = engine
        self.stopping = False

    def run(self, tasks: list[TaskSpec]) -> None:
        run_batch(self, tasks, f"{self.id}/0", self.engine.post, stop_on_error=True)


class ThreadWorker(WorkerHandle):
    """One thread fed with batches through a queue."""

    kind = "thread"

    def __init__(self, engine: Engine, worker_id: str):
        self.id = worker_id
        self.nthreads = 1
        self.engine = engine
        self.stopping = False
        self.running = False
        self._batches: list[list[TaskSpec]] = []
        self._cond = threading.Condition()
        self.thread = threading.Thread(target=self._work, name=f"shmdask-{worker_id}", daemon=True)
        self.thread.start()

    def run(self, tasks: list[TaskSpec]) -> None:
        with self._cond:
            self._batches.append(tasks)
            self._cond.notify()

    def _work(self) -> None:
        lane = f"{self.id}/0"
        post = self.engine.post
        while True:
            with self._cond:
                while not self._batches and not self.stopping:
                    self._cond.wait()
                if self.stopping:
                    return
                batch = self._batches.pop(0)
                self.running = True
            try:
                run_batch(self, batch, lane, post)
            except KeyboardInterrupt:  # interrupted by close(); stop quietly
                return
            finally:
                self.running = False

    def close(self, interrupt: bool = False, timeout: float = 1.0) -> None:
        with self._cond:
            self.stopping = True
            self._batches.clear()
            self._cond.notify()
        if interrupt and self.running and self.thread.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.thread.ident), ctypes.py_object(KeyboardInterrupt)
            )
        self.thread.join(timeout)


def default_num_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class _Waiter:
    """Collects the outcome of the wanted keys of one ``get_local`` call."""

    def __init__(self, wanted: set):
        self.pending = set(wanted)
        self.error: tuple[Any, BaseException] | None = None

    def __call__(self, key: Any, status: str, exc: BaseException | None) -> None:
        self.pending.discard(key)
        if status == "erred" and self.error is None:
            self.error = (key, exc)

    def done(self) -> bool:
        return not self.pending or self.error is not None


class _NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass


def get_local(
    dsk: Mapping,
    dependencies: Mapping,
    keys: list,
    priorities: Mapping | None = None,
    num_workers: int | None = None,
    sync: bool = False,
    record_sink: list | None = None,
    progress: Any = None,
    pieces: Iterable[tuple] | None = None,
) -> dict:
    """Run a prepared graph on the sync or threads backend; ``{key: value}``.

    ``progress`` (optional) is told ``start(total)``, ``advance(n)`` as tasks
    finish and ``finish(failed=...)``: a progress bar, supplied by the caller
    so the scheduler core draws nothing itself.

    ``pieces`` (with ``dsk``, ``dependencies`` and ``priorities`` empty): the
    graph as ``(graph, dependencies, priorities)`` pieces in run order
    (:func:`shmdask.graph.order_pieces`), handed to the engine one piece per
    loop step, so the first tasks run while the rest is still being walked."""
    engine = Engine(name="shmdask-local")
    if sync:
        workers: list = [SyncWorker(engine)]
    else:
        n = num_workers or default_num_threads()
        workers = [ThreadWorker(engine, f"thread-{i}") for i in range(n)]
    for w in workers:
        engine.add_worker(w)
    waiter = _Waiter(set(keys))
    bar = progress if progress is not None else _NoProgress()
    engine.record_callbacks.append(lambda records: bar.advance(len(records)))
    feed = None
    if pieces is None:
        engine.submit(dsk, dependencies, keys, priorities, waiter)
        bar.start(len(dsk))
    else:
        feed = _PieceFeeder(engine, pieces, keys, waiter, bar)
        bar.start(0)
    try:
        engine.run_until(waiter.done, feed=feed)
    except BaseException:  # Ctrl-C: stop running tasks too
        bar.finish(failed=True)
        _stop(workers, interrupt=True, wait=1.0)
        raise
    finally:
        if record_sink is not None:
            record_sink.extend(engine.records)
    bar.finish(failed=waiter.error is not None)
    # Idle threads exit at once; a thread still in a task (after an error
    # elsewhere) finishes it in the background and starts nothing more.
    _stop(workers, interrupt=False, wait=0.0 if waiter.error else 1.0)
    if waiter.error is not None:
        raise waiter.error[1]
    return {k: engine.data[k] for k in keys}


class _PieceFeeder:
    """Hands a graph's pieces to an engine running in this thread, one per step."""

    def __init__(self, engine: Engine, pieces: Iterable[tuple], keys: list, listener: Any,
                 bar: Any):
        self.submitter = PieceSubmitter(engine, pieces, keys, listener)
        self.bar = bar

    def __call__(self) -> bool:
        """Submit the next piece; False once there is none left."""
        more = self.submitter.submit_next()
        if more:
            self.bar.update(self.submitter.engine.tasks_done, self.submitter.total)
        return more


def _stop(workers: list, interrupt: bool, wait: float) -> None:
    for w in workers:
        w.stopping = True
        if isinstance(w, ThreadWorker):
            with w._cond:
                w._batches.clear()
                w._cond.notify()
    deadline = time.monotonic() + wait  # one deadline for all, not one per thread
    for w in workers:
        if isinstance(w, ThreadWorker):
            w.close(interrupt=interrupt, timeout=max(0.0, deadline - time.monotonic()))


class ThreadCluster:
    """An in-process cluster: the engine on its own thread, worker threads.

    What ``LocalCluster(processes=False)`` is in dask: a Client can use it
    when tasks release the GIL or processes are not wanted.
    """

    def __init__(self, n_workers: int | None = None):
        import time as _time

        self.engine = Engine(name="shmdask-thread-cluster")
        self.started = _time.time()
        self.n_workers = n_workers or default_num_threads()
        self._add_workers()
        self.engine.start()

    def _add_workers(self) -> None:
        for i in range(self.n_workers):
            w = ThreadWorker(self.engine, f"thread-{i}")
            self.engine.add_worker(w)

    def scheduler_info(self) -> dict:
        metrics = self.engine.worker_metrics()
        return {
            "type": "Scheduler",
            "id": f"ThreadCluster-{id(self):x}",
            "address": "inproc://",
            "started": self.started,
            "workers": {wid: self._worker_info(w, metrics)
                        for wid, w in list(self.engine.workers.items())},
        }

    @staticmethod
    def _worker_info(worker: WorkerHandle, metrics: dict) -> dict:
        info = worker.info()
        info["pid"] = os.getpid()  # every thread worker lives in this process
        info["metrics"]["executing"] = metrics.get(worker.id, {}).get("executing", 0)
        return info

    def restart(self) -> None:
        self.engine.call(lambda e: e.reset())

    report_dir = None

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> ThreadCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
