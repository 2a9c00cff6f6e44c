"""The engine: one scheduler loop for every backend.

The loop owns a :class:`~shmdask.scheduler.state.SchedulerState` and the data
of the keys in memory, and talks to workers only through two small
interfaces, so threads, local worker processes and remote workers are just
transports of the same loop::

    user / Client threads                engine loop (one thread)                 workers
    ─────────────────────                ────────────────────────                 ───────
    submit(graph, wanted, listener) ─┐
    unwant(keys), call(fn) ──────────┼─▶ inbox ─▶ handle event ─▶ SchedulerState
                                     │      ▲            │
                                     │      │            ▼ dispatch: ready tasks in batches
                                     │      │      WorkerHandle.run([TaskSpec...]) ───────▶ run
                                     │      └── ("done", wid, [TaskResult...]) ◀─────────── tasks
                                     │          ("erred", ...), ("worker-lost", ...)
                                     └─ listeners(key, status, exception) are called
                                        on the loop thread when a wanted key finishes

A **WorkerHandle** per worker and a **DataStore** for the values are the two
interfaces (:mod:`shmdask.scheduler.interfaces`); values in ``Engine.data``
are opaque to the loop.

Batching policy.  Each worker is kept fed with at least ``target_batch``
seconds of work per thread (estimated from the running mean task duration,
rounded up to whole tasks), at least one task per thread and at most
``max_batch`` (or the worker handle's own ``max_batch``), plus as much again
queued behind it so that it never idles for the round trip of its results
(a worker reports every ~``target_batch`` of work: see cluster/worker.py):
tiny tasks travel hundreds to a message, long tasks one per thread plus one
queued per worker, so the load stays balanced.  A dispatch first gives every
worker work for its threads, and only then the queued batches; what one
dispatch gives a worker goes in one message of up to ``max_batch`` a thread.
No worker takes more than its threads' share of what is ready.

Scheduling options (dask's ``workers=``, ``resources=``, ``fifo_timeout=``;
``priority`` and ``retries`` are the state's) arrive with a graph as
``annotations``.  A task restricted to workers or resources is passed over by
workers that do not match, or set aside until a worker joins or resources
are given back (:mod:`shmdask.scheduler.placement`).  Resource amounts are
held per worker while a task is in flight, as dask does.

Listeners are called on the loop thread, each call isolated: one that raises
is logged and the others, and the rest of the batch, go on.  A listener with a
``many(keys, "memory")`` method hears the keys of one batch of results in one
call (a run of ten thousand tiny tasks pays per batch, not per key).

The loop runs either on its own thread (:meth:`Engine.start`, for clusters
and clients that live across computations) or in the caller's thread until
some keys are done (:meth:`Engine.run_until`, for one-shot ``compute``
calls on the sync and threads backends).  Either way, while it runs the
cyclic garbage collector looks at young objects less often
(:mod:`shmdask.scheduler.gc_pause`).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shmdask import config
from shmdask.scheduler.gc_pause import SPARSE_COLLECTION, gc_paused
from shmdask.scheduler.interfaces import (
    DataStore,
    Listener,
    LocalStore,
    RemoteTraceback,
    TaskResult,
    TaskSpec,
    WorkerHandle,
)
from shmdask.scheduler.placement import Placement
from shmdask.scheduler.records import TaskStream, record_dict, record_duration
from shmdask.scheduler.state import SchedulerState

logger = logging.getLogger("shmdask.engine")


class Engine:
    """One scheduler loop; see the module docstring."""

    target_batch = 0.005  # seconds of work per worker thread in one batch
    max_batch = 128
    remote_input_limit = 1 << 20  # bytes of input above which local workers are preferred

    def __init__(self, store: DataStore | None = None, name: str = "engine"):
        self.name = name
        self.store = store or LocalStore()
        # dask's distributed.scheduler.allowed-failures: deaths tolerated, plus the last
        self.state = SchedulerState(max_worker_deaths=config.get("allowed_failures") + 1)
        self.data: dict = {}
        self.workers: dict[str, WorkerHandle] = {}
        self.in_flight: dict[str, set] = {}
        # Tasks that left their worker's thread pool to wait on other tasks
        # (``secede``): still in flight, but not counted against its threads.
        self.seceded: dict[str, set] = {}
        # Workers leaving on purpose: no new tasks; told when their last one is done.
        self.retiring: dict[str, Callable[[str], None]] = {}
        self.where: dict = {}  # processing key -> worker id
        self.task_stream = TaskStream()
        # Called on the loop with each batch of records, compact or dicts
        # (records.record_dict unfolds either).
        self.record_callbacks: list[Callable[[list], None]] = []
        # Called on the loop with (dsk, dependencies) of every graph it accepts
        # (the dashboard draws small ones); must only take note, not work.
        self.graph_callbacks: list[Callable[[Mapping, Mapping], None]] = []
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        # key -> its listener, or a list of them when there are several (most
        # keys have one: a run of ten thousand keys makes no ten thousand lists)
        self.listeners: dict[Any, Listener | list[Listener]] = {}
        self.started = time.time()
        self.closed = False
        self._thread: threading.Thread | None = None
        # Until tasks are measured, assume they are long: one task per thread
        # spreads the first tasks over all workers.
        self._mean_duration = self.target_batch
        self._measured = False
        self.tasks_done = 0
        self.placement = Placement()  # workers= and resources= of annotated tasks
        self._last_graph = float("-inf")  # monotonic time of the last graph

    # -- called from any thread ------------------------------------------------

    def post(self, event: tuple) -> None:
        self.inbox.put(event)

    def submit(
        self,
        dsk: Mapping,
        dependencies: Mapping,
        wanted: Iterable,
        priorities: Mapping | None = None,
        listener: Listener | None = None,
        annotations: Mapping | None = None,
        hold: Iterable = (),
    ) -> None:
        """Add a graph; ``listener(key, "memory"|"erred", exc)`` hears about ``wanted``.

        ``annotations``: dask's scheduling options for every task of the graph
        (``priority``, ``retries``, ``workers``, ``allow_other_workers``,
        ``resources``, ``fifo_timeout`` in seconds); see the module docstring.

        ``hold``: keys wanted too, but without a listener -- a graph sent in
        pieces holds each piece's keys until its last piece is in (a later
        piece may still need them), then unwants them."""
        self.post(("update-graph", dsk, dependencies, list(wanted), priorities, listener,
                   annotations, hold))

    def retry(self, keys: Iterable, listener: Listener | None = None) -> None:
        """Run erred ``keys`` again; ``listener`` hears how they end this time."""
        self.post(("retry", list(keys), listener))

    def scatter(self, items: Mapping, listener: Listener | None = None) -> None:
        """Put user objects in the store under the given keys (wanted once each)."""
        stored = {k: self.store.from_user(v) for k, v in items.items()}
        self.post(("scatter", stored, listener))

    def unwant(self, keys: Iterable) -> None:
        self.post(("unwant", list(keys)))

    def call(self, fn: Callable[[Engine], Any], timeout: float | None = 10) -> Any:
        """Run ``fn(engine)`` on the loop thread and return its result."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn(self)
        done = threading.Event()
        box: list = []

        def run(engine: Engine) -> None:
            try:
                box.append((True, fn(engine)))
            except BaseException as exc:  # handed back to the caller
                box.append((False, exc))
            done.set()

        self.post(("call", run))
        if not done.wait(timeout):
            raise TimeoutError(f"scheduler did not answer within {timeout} s")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def add_worker(self, worker: WorkerHandle) -> None:
        self.post(("worker-added", worker))

    def retire_worker(self, worker_id: str, on_idle: Callable[[str], None]) -> None:
        """Send ``worker_id`` no more tasks; ``on_idle(worker_id)`` runs on the loop
        thread once the tasks it holds are answered (at once if it is idle)."""
        self.post(("retire", worker_id, on_idle))

    # -- the loop ----------------------------------------------------------------

    def start(self) -> None:
        """Run the loop on a daemon thread until :meth:`close`."""
        SPARSE_COLLECTION.hold()  # given back by close
        self._thread = threading.Thread(target=self._run_forever, name=self.name, daemon=True)
        self._thread.start()

    def _run_forever(self) -> None:
        while not self.closed:
            try:
                self._step(block=True)
            except Exception:  # a bug in one event must not stop every computation
                logger.exception("shmdask engine %s: an event failed", self.name)
                # The failed step skipped its dispatch: tasks the events before
                # it made ready would wait for an event that may never come.
                try:
                    self._dispatch()
                except Exception:
                    logger.exception("shmdask engine %s: dispatching failed", self.name)

    def run_until(self, done: Callable[[], bool], poll: float = 0.1,
                  feed: Callable[[], bool] | None = None) -> None:
        """Run the loop in this thread until ``done()``; Ctrl-C propagates.

        ``feed()``, called before each step until it returns False, may post
        more work (the next piece of a graph given in pieces)."""
        with SPARSE_COLLECTION.held():
            while not done():
                if feed is not None and not feed():
                    feed = None
                self._step(block=feed is None, timeout=poll, stop=done)

    def _step(self, block: bool, timeout: float | None = None,
              stop: Callable[[], bool] | None = None) -> None:
        try:
            event = self.inbox.get(block, timeout)
        except queue.Empty:
            return
        handle = self._handle
        handle(event)
        inbox = self.inbox
        while True:
            try:
                event = inbox.get_nowait()
            except queue.Empty:
                break
            handle(event)
        if stop is None or not stop():  # after an error, start nothing more
            self._dispatch()

    def _handle(self, event: tuple) -> None:
        kind = event[0]
        if kind == "done":
            self._on_done(event[1], event[2])
        elif kind == "erred":
            self._on_erred(*event[1:])
        elif kind == "update-graph":
            self._on_update_graph(*event[1:])
        elif kind == "unwant":
            self._free(self.state.unwant(event[1]))
        elif kind == "scatter":
            self._on_scatter(event[1], event[2])
        elif kind == "worker-added":
            worker = event[1]
            self.workers[worker.id] = worker
            self.in_flight.setdefault(worker.id, set())
            self._requeue(self.placement.worker_added())  # it may be the one they wait for
        elif kind == "retry":
            self._on_retry(event[1], event[2])
        elif kind == "worker-lost":
            self._on_worker_lost(event[1], event[2])
        elif kind == "call":
            event[1](self)
        elif kind == "secede":
            if event[2] in self.in_flight.get(event[1], ()):
                self.seceded.setdefault(event[1], set()).add(event[2])
        elif kind == "rejoin":
            self._answered(event[1], [event[2]])
        elif kind == "retire":
            self._on_retire(event[1], event[2])
        elif kind == "wake":
            pass
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown engine event {kind!r}")

    # -- event handlers ----------------------------------------------------------

    def _listen(self, keys: Iterable, listener: Listener) -> None:
        listeners = self.listeners
        for key in keys:
            held = listeners.get(key)
            if held is None:
                listeners[key] = listener
            elif type(held) is list:
                held.append(listener)
            else:
                listeners[key] = [held, listener]

    def _notify(self, key: Any, status: str, exc: BaseException | None) -> None:
        held = self.listeners.pop(key, None)
        if held is None:
            return
        for listener in held if type(held) is list else (held,):
            self._call_outside(listener, (key, status, exc), "a listener of %r", key)

    def _call_outside(self, fn: Callable, args: tuple, what: str, *detail: Any) -> None:
        """``fn(*args)`` for code outside the engine (listeners, task-stream
        callbacks): one that raises is logged and passed over, so it costs
        neither the others their news nor the loop its dispatching."""
        try:
            fn(*args)
        except Exception:
            logger.exception("shmdask engine %s: " + what + " raised", self.name, *detail)

    def _notify_memory(self, keys: list) -> None:
        """Tell the listeners of ``keys`` they are in memory: one call per
        listener that takes ``many``, in the keys' order."""
        pop = self.listeners.pop
        groups: dict[int, tuple[Listener, list]] = {}
        for key in keys:
            held = pop(key, None)
            if held is None:
                continue
            for listener in held if type(held) is list else (held,):
                group = groups.get(id(listener))
                if group is None:
                    groups[id(listener)] = (listener, [key])
                else:
                    group[1].append(key)
        for listener, heard in groups.values():
            many = getattr(listener, "many", None)
            if many is None:
                for key in heard:
                    self._call_outside(listener, (key, "memory", None), "a listener of %r", key)
                continue
            self._call_outside(many, (heard, "memory"), "a listener of %d keys", len(heard))

    def _on_update_graph(self, dsk, dependencies, wanted, priorities, listener,
                         annotations=None, hold=()) -> None:
        if listener is not None:
            self._listen(wanted, listener)
        new_generation = True
        if annotations:
            # dask's fifo_timeout: graphs this close together share a generation
            now = time.monotonic()
            new_generation = now - self._last_graph > (annotations.get("fifo_timeout") or 0)
            self._last_graph = now
        else:
            self._last_graph = time.monotonic()
        try:
            with gc_paused(len(dsk)):
                finished = self.state.update_graph(
                    dsk, dependencies, [*wanted, *hold] if hold else wanted, priorities,
                    annotations, new_generation)
        except Exception as exc:
            for key in wanted:
                self._notify(key, "erred", exc)
            return
        for callback in self.graph_callbacks:
            callback(dsk, dependencies)
        listeners = self.listeners
        for key in finished:
            if key in listeners:
                ts = self.state.tasks[key]
                self._notify(key, ts.state, ts.exception)

    def _on_retry(self, keys: list, listener: Listener | None) -> None:
        try:
            again = self.state.retry(keys)
        except Exception as exc:
            for key in keys:
                self._notify(key, "erred", exc)
            return
        if listener is not None:
            asked = set(keys)
            for key in again:
                if key not in asked:  # an erred input that runs again: pending once more
                    listener(key, "pending", None)
            self._listen(asked.union(again), listener)
        for key in keys:  # not erred (any more): say how they stand
            state = self.state.state_of(key)
            if state in ("memory", "erred"):
                self._notify(key, state, self.state.exception_of(key))

    def _on_scatter(self, stored: Mapping, listener: Listener | None) -> None:
        for key, value in stored.items():
            old = self.data.get(key)
            if old is not None and self.state.state_of(key) == "memory":
                self.store.release([value])  # same key scattered twice: keep the first
                value = old
            self.data[key] = value
        self.state.add_data(stored)
        if listener is not None:
            for key in stored:
                listener(key, "memory", None)

    def _on_retire(self, worker_id: str, on_idle: Callable[[str], None]) -> None:
        self.workers.pop(worker_id, None)
        if self.in_flight.get(worker_id):
            self.retiring[worker_id] = on_idle
        else:
            on_idle(worker_id)

    def _answered(self, worker_id: str, keys: Iterable) -> None:
        """Keys a worker answered: no longer seceded; a retiring worker may go."""
        seceded = self.seceded.get(worker_id)
        if seceded is not None:
            seceded.difference_update(keys)
            if not seceded:  # keep the common path (no seceded task) a miss
                del self.seceded[worker_id]
        if worker_id in self.retiring and not self.in_flight.get(worker_id):
            self.retiring.pop(worker_id)(worker_id)

    def _on_done(self, worker_id: str, results: list[TaskResult]) -> None:
        state, data, where = self.state, self.data, self.where
        in_flight = self.in_flight.get(worker_id, set())
        listeners = self.listeners
        finished = state.finished
        records = []
        to_free = []
        heard = []  # keys someone listens for: told once the batch is in
        released: list = []  # freed once for the whole batch: one message per owner
        duration = 0.0
        if self.placement.held:
            for result in results:
                self._unhold(result[0])
        for key, value, record in results:
            in_flight.discard(key)
            if where.get(key) != worker_id:  # a stale answer (task was moved)
                to_free.append(value)
                continue
            del where[key]
            data[key] = value
            if not finished(key, released)[1]:
                to_free.append(data.pop(key))
            records.append(record)
            duration += record_duration(record)
            if key in listeners:
                heard.append(key)
        if heard:
            self._notify_memory(heard)
        if released:
            to_free.extend([data.pop(k) for k in released if k in data])
        if to_free:
            self.store.release(to_free)
        if records:
            n = len(records)
            self.tasks_done += n
            if self._measured:
                weight = n / (n + 4)  # a big batch is a good sample: trust it more
            else:  # the first measure replaces the guess outright
                weight, self._measured = 1.0, True
            self._mean_duration += weight * (duration / n - self._mean_duration)
            self._add_records(records)
        if worker_id in self.seceded or worker_id in self.retiring:
            self._answered(worker_id, [r[0] for r in results])

    def _on_erred(self, worker_id, key, exc, traceback_text, record) -> None:
        self.in_flight.get(worker_id, set()).discard(key)
        if worker_id in self.seceded or worker_id in self.retiring:
            self._answered(worker_id, [key])
        if self.where.get(key) != worker_id:
            return
        del self.where[key]
        if self.placement.held:
            self._unhold(key)
        if traceback_text and exc.__cause__ is None:
            exc.__cause__ = RemoteTraceback(traceback_text)
        if hasattr(exc, "add_note") and not getattr(exc, "_shmdask_noted", False):
            exc.add_note(f"shmdask: raised by task {key!r}")
            try:
                exc._shmdask_noted = True
            except Exception:  # exceptions with __slots__
                pass
        erred, released = self.state.erred(key, exc)
        if record is not None:
            record = dict(record_dict(record), error=True)
            self._add_records([record])
        for k in erred:
            self._notify(k, "erred", exc)
        self._free(released)

    def _on_worker_lost(self, worker_id: str, reason: str) -> None:
        self.workers.pop(worker_id, None)
        self.seceded.pop(worker_id, None)
        self.retiring.pop(worker_id, None)
        keys = self.in_flight.pop(worker_id, set())
        for key in keys:
            self.where.pop(key, None)
            if self.placement.held:
                self._unhold(key)
        self._requeue(self.placement.worker_lost(worker_id))
        released: list = []
        _, killed = self.state.worker_lost(keys, reason, released)
        for key in killed:
            self._notify(key, "erred", self.state.exception_of(key))
        self._free(released)

    def _free(self, keys: list) -> None:
        if not keys:
            return
        data = self.data
        values = [data.pop(k) for k in keys if k in data]
        if values:
            self.store.release(values)

    @property
    def records(self) -> list[dict]:
        """Every task-stream record kept so far (a copy)."""
        return self.task_stream.records_since(0)

    def _add_records(self, records: list[dict]) -> None:
        self.task_stream.add(records)
        for callback in self.record_callbacks:
            self._call_outside(callback, (records,), "a task-stream callback")

    # -- dispatch ----------------------------------------------------------------

    def batch_size(self, worker: WorkerHandle, queued: bool = True) -> int:
        """How many tasks ``worker`` may have in flight.

        Enough whole tasks per thread for ``target_batch`` seconds of work (at
        least one, at most ``max_batch``, the worker's if it has one) and, with
        ``queued``, as much again waiting behind it: the worker starts on the
        next batch while the results of the last travel back, instead of
        idling for a round trip.  Tasks longer than ``target_batch`` go one
        per thread plus one queued per worker."""
        # Rounded up: a batch holds at least target_batch of work, so a worker
        # reports its results (every FLUSH_INTERVAL of work, worker.py) while
        # the queued batch still runs.  (round(): 0.005 / 0.0005 is 10.000000000000002)
        per_thread = math.ceil(round(self.target_batch / max(self._mean_duration, 1e-6), 6))
        nthreads = worker.nthreads
        if per_thread <= 1:
            return nthreads + 1 if queued else nthreads
        batch = min(self.largest_batch(worker), per_thread * nthreads)
        return 2 * batch if queued else batch

    def largest_batch(self, worker: WorkerHandle) -> int:
        """The most tasks one batch, and one message, to ``worker`` may hold."""
        return (worker.max_batch or self.max_batch) * worker.nthreads

    def choose_workers(self) -> list[WorkerHandle]:
        """Workers with room, emptiest first; local before remote on a tie.  A
        paused worker (over its memory budget) gets nothing new."""
        busy = self.busy
        return sorted((w for w in self.workers.values() if not w.paused),
                      key=lambda w: (busy(w.id) / w.nthreads, w.kind == "remote"))

    def busy(self, worker_id: str) -> int:
        """Tasks a worker holds that occupy its threads (seceded ones do not)."""
        return len(self.in_flight.get(worker_id, ())) - len(self.seceded.get(worker_id, ()))

    def _input_bytes(self, ts: Any) -> int:
        data, nbytes = self.data, self.store.nbytes
        return sum(nbytes(data[d.key]) for d in ts.dependencies)

    def _dispatch(self) -> None:
        state = self.state
        if not state.has_ready() or not self.workers:
            return
        any_local = any(w.kind != "remote" for w in self.workers.values())
        # What both passes below give a worker goes out in one message, up to
        # the worker's max_batch a thread (a long task and the one queued
        # behind it are one message, not two).
        outgoing: dict[str, list] = {}
        try:
            # First every worker with an idle thread gets work for its threads,
            # then workers with at most one batch left get the next one: the
            # queue never takes work an idle worker could start now, and topping
            # up waits for a whole batch of room (one message, not one per result).
            for queued in (False, True):
                workers = self.choose_workers()
                # No worker takes more than its threads' share of what is ready:
                # a batch may hold hundreds of tiny tasks, and the first worker
                # would otherwise take a small graph whole.
                threads = sum(w.nthreads for w in workers)
                share = -(-state.n_ready() // threads) if threads else 0  # per thread, rounded up
                for worker in workers:
                    busy = self.busy(worker.id)  # seceded tasks hold no thread
                    batch = self.batch_size(worker, queued=False)
                    if not queued:
                        room = batch - busy if busy < worker.nthreads else 0
                    elif busy <= batch and not worker.runs_inline:
                        room = self.batch_size(worker) - busy
                    else:
                        room = 0
                    room = min(room, share * worker.nthreads)
                    if room > 0:
                        self._take_batch(worker, room, any_local,
                                         outgoing.setdefault(worker.id, []))
                    if not state.has_ready():
                        return
        finally:
            for worker_id, tasks in outgoing.items():
                worker = self.workers[worker_id]
                most = self.largest_batch(worker)
                for start in range(0, len(tasks), most):
                    worker.run(tasks[start:start + most])

    def _take_batch(self, worker: WorkerHandle, room: int, any_local: bool,
                    batch: list) -> None:
        """Up to ``room`` ready tasks for ``worker``, appended to ``batch``."""
        state, data, where = self.state, self.data, self.where
        worker_id = worker.id
        busy = self.in_flight[worker_id]
        # A remote worker must be sent every input byte over the network:
        # leave tasks with large inputs to the local workers, who map them.
        picky = worker.kind == "remote" and any_local
        passed_over = []
        new_spec = tuple.__new__
        while room > 0:
            ts = state.pop_ready(prefer_freeing=worker.above_target)
            if ts is None:
                break
            skip = picky and self._input_bytes(ts) > self.remote_input_limit
            if not skip and ts.annotations is not None:
                place = self.placement.place(ts, worker, self.workers)
                if place == "parked":  # until a worker joins or resources are freed
                    continue
                skip = place == "elsewhere"
            if skip:
                passed_over.append(ts)
                if len(passed_over) > 4 * self.max_batch:
                    break
                continue
            key = ts.key
            dependencies = ts.dependencies
            # (tuple.__new__: a TaskSpec without the Python frame of its __new__)
            batch.append(new_spec(TaskSpec, (key, ts.computation,
                                             {d.key: data[d.key] for d in dependencies}
                                             if dependencies else {})))
            where[key] = worker_id
            busy.add(key)
            room -= 1
        for ts in passed_over:
            state.requeue(ts)

    def _unhold(self, key: Any) -> None:
        """Give back the resources ``key`` held; tasks waiting for them may run."""
        self._requeue(self.placement.release(key))

    def _requeue(self, tasks: list) -> None:
        for ts in tasks:
            self.state.requeue(ts)

    def reset(self) -> None:
        """Forget every task and free all data (``client.restart``); on the loop."""
        self.store.release(list(self.data.values()))
        self.data.clear()
        self._cancel_listeners()
        self.state = SchedulerState(self.state.max_worker_deaths)
        self.placement.clear()
        self.where.clear()  # answers still in flight are now stale and get freed
        for keys in self.in_flight.values():
            keys.clear()
        self.seceded.clear()
        retiring, self.retiring = self.retiring, {}
        for worker_id, on_idle in retiring.items():
            on_idle(worker_id)

    def load(self) -> dict:
        """Tasks waiting for a thread and threads in use (loop thread: use ``call``)."""
        counts = self.state.counts()
        return {
            "ready": counts.get("ready", 0),
            "processing": counts.get("processing", 0),
            "busy": {wid: self.busy(wid) for wid in self.workers},
            "threads": sum(w.nthreads for w in self.workers.values()),
        }

    def _cancel_listeners(self) -> None:
        """Every key a listener waits for is cancelled (restart, close)."""
        for key in list(self.listeners):
            self._notify(key, "cancelled", None)

    def worker_metrics(self) -> dict[str, dict]:
        """Per worker: tasks executing now (read on any thread; a snapshot)."""
        return {wid: {"executing": len(keys)} for wid, keys in list(self.in_flight.items())}

    # -- shutting down -------------------------------------------------------------

    def close(self, timeout: float = 5) -> None:
        if self.closed:
            return
        self.closed = True
        if self._thread is not None:
            SPARSE_COLLECTION.release()
        self.post(("wake",))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._cancel_listeners()  # nobody may wait for a result that cannot come
        for worker in list(self.workers.values()):
            worker.close()
        self.workers.clear()
        self.store.release(list(self.data.values()))
        self.data.clear()
        self.store.close()
