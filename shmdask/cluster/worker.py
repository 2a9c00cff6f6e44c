"""The worker process: receive batches of tasks, run them, send batches of results.

Started by the cluster as ``python -m shmdask.cluster.worker --fd N ...`` (a
fresh interpreter: never a fork of the multi-threaded client, and never
multiprocessing's spawn, which re-imports the user's ``__main__``).  It speaks
through one :class:`multiprocessing.connection.Connection` on the inherited fd.

In (header, body)::

    ("run", keys), (computations, inputs)   tasks in priority order, as columns:
                                 the i-th task is keys[i], computations[i], and
                                 inputs[i], a dict {dep_key: Stored} or empty
    ("free", [block, ...])       the scheduler released keys whose blocks we own
    ("forget", [segment, ...])   segments unlinked elsewhere: drop our mappings
    ("stats", [req])             counters, for tests and diagnostics
    ("answer", req, ok, value)   the cluster's answer to one of our "ask"s
    ("run-function", req), (fn, args, kwargs)   ``client.run``: call it on a thread

Out (header, body)::

    ("hello", info)                        once, when ready
    ("results", unlinked), columns         finished tasks, as the columns of
                                           cluster.result_batch: keys, values,
                                           and the task-stream stamps (lane,
                                           start, stop, nbytes, where) from
                                           which the reader makes the records
    ("unlinked", [segment, ...])           after a free gave memory back
    ("stats", {...}, [req])                the counters, with the request's number
    ("secede", key) / ("rejoin", key)      a task left (came back to) the thread pool
    ("ask", req, what, args)               a task needs the cluster (e.g. its address)
    ("function-result", req, ok), value    what a "run-function" returned (or raised)

Shape: the main thread only receives (so the pipe is always drained and frees
apply at once); ``nthreads`` executor threads take tasks from a queue.  Results
are flushed when the queue runs dry (end of a batch) or once the results held
cover ~5 ms of work, timed from the start of the oldest one's task, so the
scheduler can keep dispatching without paying one message per tiny task.
(Not timed from the last flush: after an idle spell the first result of a new
batch would otherwise go alone, one extra message per batch.  Not from the
oldest task's end: a task of 5 ms or more would wait for the one queued
behind it, and the worker would idle for the round trip that queue is there
to hide.)  Inputs are read-only views of shared memory (or of
spill files, mapped the same way); results of at least ``threshold`` bytes are
written into this worker's slabs (or made there in the first place, through
``shmdask.result_buffers``: see ``born_blocks.py``) while its shared memory plus private memory
stays under ``spill_fraction`` of its ``memory_limit``, and into files of the
cluster's spill folder past that or when /dev/shm is full (spill.py).  The
worker exits as soon as its connection closes (the client closed it or died);
it never unlinks its segments on exit: data in shm outlives the worker, and
the scheduler's store or the janitor removes it.

The thread pool is elastic for tasks that wait on other tasks: ``secede()``
(shmdask.worker_client) takes the calling thread out of the pool and starts
a replacement, so queued tasks keep running; the scheduler is told, so it
does not count that task against our threads.  A thread that rejoined makes
the pool one too big: the first thread to finish a task then leaves.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from shmdask import result_buffers
from shmdask.cluster.born_blocks import BornBlocks
from shmdask.cluster.protocol import (
    NOT_LOADED,
    SHM_THRESHOLD,
    ConnectionState,
    Stored,
    decode_message,
    deserialize_value,
    dump_exception,
    encode_message,
    is_immediate,
    loads_call,
    loads_message,
    serialize_value,
)
from shmdask.cluster.requests import Requests
from shmdask.cluster.result_batch import ResultBatch
from shmdask.cluster.shm import DEFAULT_CACHE_BYTES, MappingCache, SlabAllocator
from shmdask.cluster.spill import BudgetedAllocator, SpillDir, private_memory
from shmdask.scheduler.state import as_task_error

FLUSH_INTERVAL = 0.005  # seconds of work after which finished results are sent anyway

# On executor threads: ``worker`` (the Worker), ``key`` (the task running now),
# ``seceded`` (whether that task left the thread pool).
current = threading.local()


class Worker:
    """Executes tasks for one scheduler connection (pipe or, later, TCP)."""

    def __init__(
        self,
        conn: Connection,
        worker_id: str,
        cluster_id: str,
        nthreads: int = 1,
        threshold: int = SHM_THRESHOLD,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        use_shm: bool = True,
        warm_imports: tuple[str, ...] = (),
        spill_dir: str | None = None,
        memory_limit: int | None = None,
        spill_fraction: float | None = None,
    ):
        from shmdask.graph import execute_task

        self._execute_task = execute_task
        self.conn = conn
        self.worker_id = worker_id
        self.nthreads = nthreads
        self.threshold = threshold
        # A worker on another host (use_shm=False) sends every result inline and
        # is sent its inputs inline (ShmStore.outgoing).
        self.allocator = (SlabAllocator(cluster_id, worker_id, cache_bytes=cache_bytes)
                          if use_shm else None)
        self.mappings = MappingCache(self.allocator)
        self.memory_limit = memory_limit
        self.spill_budget = (memory_limit * spill_fraction
                             if memory_limit and spill_fraction else None)
        self.results = (BudgetedAllocator(self.allocator, SpillDir(spill_dir, worker_id),
                                          self._over_budget)
                        if use_shm and spill_dir else self.allocator)
        # Blocks tasks fill in place (result_buffers.empty): no copy into shm.
        self.born = BornBlocks(self.results, threshold) if use_shm else None
        self._claim_born = self.born.claim if self.born is not None else None
        self.state = ConnectionState()
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._send_lock = threading.Lock()
        self._outbox = ResultBatch()
        self._outbox_lock = threading.Lock()
        self._held_since = 0.0  # when the oldest result in the outbox was put there
        self.tasks_run = 0
        self.bytes_received = 0
        self.warm_imports = warm_imports
        self._warming: threading.Thread | None = None
        self._pool_lock = threading.Lock()
        self._pooled = nthreads  # executor threads that count against nthreads
        self._lanes = itertools.count()
        self._asks = Requests()
        # How a task reaches the scheduler as a client (set by transports that know).
        self.scheduler_connect: dict | None = None

    @property
    def address(self) -> str:
        """How the scheduler names this worker (the keys of ``client.run``'s answer)."""
        return self.worker_id

    @property
    def name(self) -> str:
        """The name it was given (``shmdask worker --name``), else its id."""
        return self.given_name or self.worker_id

    given_name: str | None = None

    @property
    def id(self) -> str:
        return self.worker_id

    def _over_budget(self, nbytes: int) -> bool:
        """Would ``nbytes`` more of shared memory pass our spill threshold?"""
        budget = self.spill_budget
        if budget is None:
            return False
        slabs = self.allocator
        return slabs.mapped_bytes + slabs.growth(nbytes) + private_memory() > budget

    # ------------------------------------------------------------------ transport

    def send(self, header: tuple, body: Any = None) -> None:
        data = encode_message(header, body)
        with self._send_lock:
            self.conn.send_bytes(data)

    # The worker of this process, for get_worker() off executor threads: set by the
    # entry points of worker processes only (a Worker may also serve inside a test).
    instance: Worker | None = None

    def serve(self) -> None:
        """Receive until the connection closes."""
        self.send(("hello", self.info()))
        if self.warm_imports:
            # Modules the client uses (shmdask.array, say) load while we wait
            # for work, not inside the first task that unpickles one of them.
            self._warming = threading.Thread(target=_warm_up, args=(self.warm_imports,),
                                             daemon=True, name="shmdask-warm-imports")
            self._warming.start()
        self.start_lanes()
        try:
            self._receive()
        finally:
            # Queued tasks are nobody's any more; executor threads stop after
            # the task at hand (a worker process exits before that anyway).
            while not self.tasks.empty():
                self.tasks.get_nowait()
            for _ in range(self.nthreads):
                self.tasks.put(None)

    def _receive(self) -> None:
        while True:
            try:
                data = self.conn.recv_bytes()
            except (EOFError, OSError):
                return
            self.bytes_received += len(data)
            header, body = decode_message(data)
            op = header[0]
            if op == "run":
                self._receive_tasks(header[1], body)
            elif op == "free":
                if self.allocator is not None and self.allocator.free(header[1]):
                    self.send(("unlinked", self.allocator.take_unlinked()))
            elif op == "forget":
                self.mappings.forget(header[1])
            elif op == "stats":
                self.send(("stats", self.stats(), *header[1:]))
            elif op == "close":
                return
            elif not self.handle_request(op, header, body):
                raise ValueError(f"worker received an unknown message {op!r}")

    # ------------------------------------------------------------------ requests

    def handle_request(self, op: str, header: tuple, body: list) -> bool:
        """Answers to our asks, and functions to run (``client.run``); False if
        ``op`` is neither."""
        if op == "answer":
            self._asks.answer(header[1], (header[2], header[3]))
        elif op == "run-function":
            threading.Thread(target=self._run_function, args=(header[1], body), daemon=True,
                             name="shmdask-run-function").start()
        else:
            return False
        return True

    def _run_function(self, req: int, body: list) -> None:
        from shmdask.cluster.worker_calls import call_function

        ok, value = call_function(self, lambda: loads_call(body))
        try:
            # (in a tuple: a body of None would be no body at all)
            self.send(("function-result", req, ok), (value if ok else dump_exception(value),))
        except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be pickled
            err = TypeError(f"the result of the function cannot be sent back: {exc!r}")
            self.send(("function-result", req, False), (dump_exception(err),))

    def ask(self, what: str, *args: Any, timeout: float = 60) -> Any:
        """Ask the cluster something (from a task thread) and wait for the answer."""
        ok, value = self._asks.ask(lambda req: self.send(("ask", req, what, args)),
                                   timeout, f"{what!r} from the scheduler")
        if not ok:
            raise RuntimeError(f"the scheduler could not answer {what!r}: {value}")
        return value

    # ------------------------------------------------------------------ thread pool

    def start_lanes(self) -> None:
        for _ in range(self.nthreads):
            self._start_lane()

    def _start_lane(self) -> None:
        lane = next(self._lanes)
        threading.Thread(target=self._run_tasks, args=(lane,), name=f"shmdask-exec-{lane}",
                         daemon=True).start()

    def secede(self) -> None:
        """The task on this thread leaves the pool (it is about to wait on others)."""
        if getattr(current, "key", None) is None:
            raise ValueError("secede() must be called from a task (this thread runs none)")
        if current.seceded:
            return
        current.seceded = True
        self._flush_outbox()  # results held here may be what the task will wait on
        with self._pool_lock:
            self._pooled -= 1
            replace = self._pooled < self.nthreads
            if replace:
                self._pooled += 1
        if replace:
            self._start_lane()
        self.send(("secede", current.key))

    def rejoin(self) -> None:
        """The seceded task on this thread counts against the pool again."""
        if not getattr(current, "seceded", False):
            return
        current.seceded = False
        with self._pool_lock:
            self._pooled += 1
        self.send(("rejoin", current.key))

    def _receive_tasks(self, keys: list, body: list) -> None:
        if self._warming is not None:
            # Unpickling tasks imports their modules: never while the warm-up
            # thread is half-way through importing the same ones (two threads in
            # one import can see a partially initialised module).
            self._warming.join()
            self._warming = None
        try:
            computations, inputs = loads_message(body, self.state)
        except BaseException as exc:  # noqa: BLE001 - e.g. a module missing here
            now = time.time()
            unloaded = ResultBatch()
            error, tb, lane = dump_exception(exc), traceback.format_exc(), f"{self.worker_id}/0"
            for key in keys:
                unloaded.add((key, error, tb, lane, now, now), failed=True)
            self.send(("results", []), unloaded.columns())
            return
        put = self.tasks.put
        for task in zip(keys, computations, inputs, strict=True):
            put(task)

    def info(self) -> dict:
        return {
            "id": self.worker_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "nthreads": self.nthreads,
        }

    def stats(self) -> dict:
        alloc = self.allocator
        return {
            "pid": os.getpid(),
            "tasks_run": self.tasks_run,
            "functions_loaded": self.state.functions_loaded,
            "segments_created": alloc.segments_created if alloc else 0,
            "segments_attached": self.mappings.attached,
            "mapped_bytes": alloc.mapped_bytes if alloc else 0,
            "free_bytes": alloc.free_bytes if alloc else 0,
            "bytes_received": self.bytes_received,
            "private_memory": private_memory(),
            "results_spilled": getattr(self.results, "spilled_results", 0),
            "results_born": self.born.claimed if self.born is not None else 0,
            "warm_imported": [m for m in self.warm_imports if m in sys.modules],
        }

    # ------------------------------------------------------------------ execution

    def _load(self, stored: Any) -> Any:
        if type(stored) is not Stored:
            return stored  # a remote scheduler may hand plain values
        value = stored.loaded
        if value is NOT_LOADED:
            # Two threads may both read it the first time: the same value twice,
            # which costs less than a lock for every input of every task.
            value = stored.loaded = deserialize_value(stored, self.mappings)
        return value

    def _run_tasks(self, lane: int) -> None:
        lane_name = f"{self.worker_id}/{lane}"
        result_buffers.install(self.born.make if self.born is not None else None)
        current.worker = self
        current.seceded = False
        while True:
            task = self.tasks.get()
            if task is None:
                return
            key, computation, deps = task
            current.key = key
            started = time.monotonic()
            row, failed = self._run_one(key, computation, deps, lane_name)
            del task, computation, deps  # let inputs (and their cached values) go
            current.key = None
            seceded, current.seceded = current.seceded, False
            self.tasks_run += 1
            batch = None
            with self._outbox_lock:
                now = time.monotonic()
                outbox = self._outbox
                if not outbox:
                    self._held_since = started  # (see the module docstring)
                outbox.add(row, failed)
                if seceded or self.tasks.empty() or now - self._held_since >= FLUSH_INTERVAL:
                    batch, self._outbox = outbox, ResultBatch()
            if batch and not self._send_results(batch):
                return  # the scheduler hung up
            if seceded:
                return  # a replacement took this thread's place in the pool
            if self._pooled > self.nthreads:  # a rejoined task made the pool too big
                with self._pool_lock:  # (checked again under the lock: one thread goes)
                    if self._pooled > self.nthreads:
                        self._pooled -= 1
                        return

    def _send_results(self, batch: ResultBatch) -> bool:
        unlinked = self.allocator.take_unlinked() if self.allocator else []
        try:
            self.send(("results", unlinked), batch.columns())
        except OSError:
            return False
        return True

    def _flush_outbox(self) -> None:
        with self._outbox_lock:
            batch, self._outbox = self._outbox, ResultBatch()
        if batch:
            self._send_results(batch)

    def _run_one(self, key, computation, deps, lane: str) -> tuple[tuple, bool]:
        """Run one task -> (its row for the ResultBatch, whether it failed)."""
        start = time.time()
        try:
            data = {k: self._load(v) for k, v in deps.items()}
            value = self._execute_task(computation, data)
            del data
            if is_immediate(value):  # travels as itself (see protocol.is_immediate)
                stored, nbytes, where = value, sys.getsizeof(value), "inline"
            else:
                stored = serialize_value(value, self.results, self.worker_id, self.threshold,
                                         self._claim_born)
                nbytes, where = stored.nbytes, stored.where
            del value
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the scheduler
            stop = time.time()
            return (key, dump_exception(as_task_error(key, exc)), traceback.format_exc(),
                    lane, start, stop), True
        return (key, stored, lane, start, time.time(), nbytes, where), False


def _warm_up(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: S112 - a task that needs it will report the error
            continue


def _extend_sys_path() -> None:
    # Modules the client can import (its script's directory, its sys.path) must
    # be importable here too: cloudpickle sends importable functions by name.
    extra = os.environ.get("SHMDASK_SYS_PATH")
    if not extra:
        return
    for entry in json.loads(extra):
        if entry not in sys.path:
            sys.path.append(entry)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shmdask.cluster.worker")
    parser.add_argument("--fd", type=int, required=True, help="inherited connection fd")
    parser.add_argument("--id", required=True, help="worker id")
    parser.add_argument("--cluster", required=True, help="cluster id (shm name prefix)")
    parser.add_argument("--nthreads", type=int, default=1)
    parser.add_argument("--threshold", type=int, default=SHM_THRESHOLD)
    parser.add_argument("--cache-bytes", type=int, default=DEFAULT_CACHE_BYTES)
    parser.add_argument("--warm-imports", default="", help="modules to import when idle")
    parser.add_argument("--spill-dir", default=None, help="the cluster's spill folder")
    parser.add_argument("--memory-limit", type=int, default=None, help="bytes")
    parser.add_argument("--spill-fraction", type=float, default=None,
                        help="of the memory limit, past which results go to spill files")
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group; the client decides
    # what an interrupt means, the worker just keeps its pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _extend_sys_path()
    from shmdask.cluster.worker_calls import keep_logs

    keep_logs()
    conn = Connection(args.fd)
    worker = Worker(conn, args.id, args.cluster, args.nthreads, args.threshold,
                    args.cache_bytes,
                    warm_imports=tuple(m for m in args.warm_imports.split(",") if m),
                    spill_dir=args.spill_dir, memory_limit=args.memory_limit,
                    spill_fraction=args.spill_fraction)
    Worker.instance = worker
    try:
        worker.serve()
    finally:
        from shmdask.cluster.worker_calls import remove_uploads

        remove_uploads()  # os._exit skips atexit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: tasks find their worker
    # (``current``, ``Worker.instance``) in shmdask.cluster.worker.
    from shmdask.cluster import worker as _worker_module

    _worker_module.main()
