"""In-process backends of the engine: ``sync`` (the caller's thread) and ``threads``.

Both are transports of :class:`~shmdask.scheduler.engine.Engine`: a
:class:`ThreadWorker` owns ``nthreads`` threads that take tasks one at a
time from its queue (so one batch is shared by all of them);
:class:`SyncWorker` runs a batch at once inside ``run`` (so the loop, the
tasks and the caller share one thread, which is what ``pdb`` users want).
Values are live Python objects (:class:`~shmdask.scheduler.interfaces.LocalStore`).

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

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import psutil

from shmdask.graph import execute_task
from shmdask.scheduler.engine import Engine
from shmdask.scheduler.interfaces import TaskResult, TaskSpec, WorkerHandle
from shmdask.scheduler.pieces import PieceSubmitter
from shmdask.scheduler.records import compute_record
from shmdask.scheduler.state import as_task_error
from shmdask.units import format_bytes

_FLUSH_SECONDS = 0.005

# On a thread running a task: ``worker`` (its ThreadWorker), ``key``, ``seceded``
# and ``flush`` (posts the results the thread holds), for shmdask.worker_client.
current = threading.local()


def run_batch(worker: WorkerHandle, tasks: Iterable[TaskSpec], lane: str, post,
              stop_on_error: bool = False,
              ctrl_c: Callable[[], bool] = lambda: False) -> None:
    """Run tasks in order, posting results every few milliseconds.

    A task error is posted and the batch goes on (its other tasks may belong
    to other computations), unless ``stop_on_error``.  A task that raises
    SystemExit or KeyboardInterrupt fails like any other (as a
    :class:`~shmdask.scheduler.state.TaskExit`).  Ctrl-C (``ctrl_c()`` says
    whether a KeyboardInterrupt came from SIGINT) is not a task error: it
    propagates to the caller at once; nor is the interruption of a stopping
    worker thread.
    """
    results: list[TaskResult] = []
    last_flush = time.time()
    clock = time.time

    def flush() -> None:
        nonlocal results
        if results:
            post(("done", worker.id, results))
            results = []

    current.worker, current.flush, current.seceded = worker, flush, False
    for key, computation, deps in tasks:
        if worker.stopping:
            break
        start = clock()
        current.key = key
        try:
            value = execute_task(computation, deps)
        except BaseException as exc:  # reported to the engine, not raised here
            stop = clock()
            current.key = None
            flush()
            if isinstance(exc, KeyboardInterrupt) and ctrl_c():
                raise
            if isinstance(exc, KeyboardInterrupt | SystemExit) and worker.stopping:
                break  # close() interrupted this thread: not the task's doing
            record = compute_record(key, worker.id, lane, start, stop)
            post(("erred", worker.id, key, as_task_error(key, exc), "", record))
            if stop_on_error:
                break
            continue
        stop = clock()
        current.key = None
        results.append(TaskResult(key, value, compute_record(key, worker.id, lane, start, stop)))
        if stop - last_flush > _FLUSH_SECONDS or current.seceded:
            flush()
            last_flush = stop
    flush()
    current.worker = current.flush = None


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
        with _watch_sigint() as ctrl_c:
            run_batch(self, tasks, f"{self.id}/0", self.engine.post, stop_on_error=True,
                      ctrl_c=ctrl_c)


@contextlib.contextmanager
def _watch_sigint() -> Iterator[Callable[[], bool]]:
    """Tell Ctrl-C from a task that raises KeyboardInterrupt itself: while the
    default SIGINT handler is in place, ours notes the signal before raising.
    Where it cannot be watched (not the main thread, a handler of the user's),
    a KeyboardInterrupt on the main thread counts as Ctrl-C."""
    on_main = threading.current_thread() is threading.main_thread()
    if not on_main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield lambda: on_main
        return
    seen = []

    def note(signum: int, frame: Any) -> None:
        seen.append(signum)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield lambda: bool(seen)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class ThreadWorker(WorkerHandle):
    """``nthreads`` threads fed through one queue of tasks (dask's worker with
    ``threads_per_worker`` threads).  ``memory_limit`` is reported, as dask does
    for in-process workers, not enforced: a thread cannot be restarted."""

    kind = "thread"

    def __init__(self, engine: Engine, worker_id: str, nthreads: int = 1,
                 memory_limit: int | None = None, resources: dict | None = None):
        self.id = worker_id
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        self.resources = resources
        self.engine = engine
        self.stopping = False
        self._tasks: deque[TaskSpec] = deque()
        self._cond = threading.Condition()
        self._busy: set[int] = set()  # idents of threads inside a task
        self._pooled = nthreads  # threads that count against nthreads (see secede)
        names = ([f"shmdask-{worker_id}"] if nthreads == 1 else
                 [f"shmdask-{worker_id}-{i}" for i in range(nthreads)])
        self.threads = [threading.Thread(target=self._work, args=(i,), daemon=True, name=name)
                        for i, name in enumerate(names)]
        for thread in self.threads:
            thread.start()

    @property
    def address(self) -> str:
        return self.id

    @property
    def name(self) -> str:
        return self.id

    def secede(self) -> None:
        """The task on this thread leaves the pool: a new thread takes its place,
        and the engine no longer counts the task against our threads."""
        if getattr(current, "key", None) is None or current.worker is not self:
            raise ValueError("secede() must be called from a task (this thread runs none)")
        if current.seceded:
            return
        current.seceded = True
        current.flush()  # results held here may be what the task is about to wait on
        with self._cond:
            self._pooled -= 1
            replace = self._pooled < self.nthreads and not self.stopping
            if replace:
                self._pooled += 1
                index = len(self.threads)
                thread = threading.Thread(target=self._work, args=(index,), daemon=True,
                                          name=f"shmdask-{self.id}-{index}")
                self.threads.append(thread)
        if replace:
            thread.start()
        self.engine.post(("secede", self.id, current.key))

    def rejoin(self) -> None:
        """The seceded task on this thread counts against the pool again."""
        if not getattr(current, "seceded", False) or current.worker is not self:
            return
        current.seceded = False
        with self._cond:
            self._pooled += 1
        self.engine.post(("rejoin", self.id, current.key))

    @property
    def running(self) -> bool:
        return bool(self._busy)

    def run(self, tasks: list[TaskSpec]) -> None:
        with self._cond:
            self._tasks.extend(tasks)
            self._cond.notify(len(tasks))

    def clear(self) -> None:
        """Drop queued tasks and wake every thread (to see ``stopping``)."""
        with self._cond:
            self._tasks.clear()
            self._cond.notify_all()

    def _take(self) -> Iterator[TaskSpec]:
        """Tasks one at a time, while the queue has some (and this thread is in
        the pool: one that seceded, or one too many after a rejoin, stops)."""
        while True:
            with self._cond:
                if self.stopping or self._leaving() or not self._tasks:
                    return
                task = self._tasks.popleft()
            yield task

    def _work(self, index: int) -> None:
        lane = f"{self.id}/{index}"
        post = self.engine.post
        ident = threading.get_ident()
        while True:
            with self._cond:
                while not self._tasks and not self.stopping:
                    self._cond.wait()
                if self.stopping:
                    return
                self._busy.add(ident)
            try:
                run_batch(self, self._take(), lane, post)
            except KeyboardInterrupt:  # interrupted by close(); stop quietly
                return
            finally:
                self._busy.discard(ident)
            if getattr(current, "seceded", False) or getattr(current, "left", False):
                current.seceded = current.left = False
                return  # out of the pool (see _leaving)

    def _leaving(self) -> bool:
        """Whether this thread leaves the pool: it seceded (a replacement took its
        place), or a rejoin made the pool one too big (under ``_cond``)."""
        if getattr(current, "seceded", False):
            leaving = True
        elif self._pooled > self.nthreads:
            self._pooled -= 1
            current.left = leaving = True
        else:
            return False
        if self._tasks:  # we may have been woken for these: wake one who stays
            self._cond.notify()
        return leaving

    def memory_now(self) -> int:
        return _process_rss()

    def close(self, interrupt: bool = False, timeout: float = 1.0) -> None:
        with self._cond:
            self.stopping = True
            self._tasks.clear()
            self._cond.notify_all()
        if interrupt:
            for ident in list(self._busy):
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt))
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _process_rss() -> int:
    try:
        return psutil.Process().memory_info().rss
    except psutil.Error:
        return 0


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

    def update(self, done: int, total: int | None = None) -> None:
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
        submitter = PieceSubmitter(engine, pieces, keys, waiter)
        bar.start(0)

        def feed() -> bool:  # one piece per loop step; the bar's total grows with them
            more = submitter.submit_next()
            if more:
                bar.update(engine.tasks_done, submitter.total)
            return more
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


def _stop(workers: list, interrupt: bool, wait: float) -> None:
    for w in workers:
        w.stopping = True
        if isinstance(w, ThreadWorker):
            w.clear()
    deadline = time.monotonic() + wait  # one deadline for all, not one per thread
    for w in workers:
        if isinstance(w, ThreadWorker):
            w.close(interrupt=interrupt, timeout=max(0.0, deadline - time.monotonic()))


class ThreadCluster:
    """An in-process cluster: the engine on its own thread, worker threads.

    What ``LocalCluster(processes=False)`` is in dask: ``n_workers`` workers of
    ``threads_per_worker`` threads each, reported with ``memory_limit`` bytes
    each (None: no limit), each with dask's worker ``resources``.  A Client can
    use it when tasks release the GIL or processes are not wanted.
    """

    def __init__(self, n_workers: int | None = None, threads_per_worker: int = 1,
                 memory_limit: int | None = None, resources: dict | None = None):
        self.engine = Engine(name="shmdask-thread-cluster")
        self.started = time.time()
        self.n_workers = n_workers or default_num_threads()
        self.threads_per_worker = threads_per_worker
        self.memory_limit = memory_limit
        self.resources = resources
        self.address = f"inproc://127.0.0.1/{os.getpid()}/{id(self):x}"
        self._add_workers()
        self.engine.start()

    def _add_workers(self) -> None:
        for i in range(self.n_workers):
            w = ThreadWorker(self.engine, f"thread-{i}", self.threads_per_worker,
                             self.memory_limit, self.resources)
            self.engine.add_worker(w)

    def scheduler_info(self) -> dict:
        metrics = self.engine.worker_metrics()
        return {
            "type": "Scheduler",
            "id": f"ThreadCluster-{id(self):x}",
            "address": self.address,
            "started": self.started,
            "workers": {wid: self._worker_info(w, metrics)
                        for wid, w in list(self.engine.workers.items())},
        }

    @staticmethod
    def _worker_info(worker: WorkerHandle, metrics: dict) -> dict:
        info = worker.info()
        info["pid"] = os.getpid()  # every thread worker lives in this process
        executing = metrics.get(worker.id, {}).get("executing", 0)
        info["metrics"]["executing"] = min(worker.nthreads, executing)
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

    def __repr__(self) -> str:
        n = len(self.engine.workers) if not self.engine.closed else 0
        memory = (format_bytes(self.memory_limit * n) if self.memory_limit else "unlimited")
        return (f"LocalCluster({self.address!r}, processes=False, workers={n}, "
                f"threads={n * self.threads_per_worker}, memory={memory})")
