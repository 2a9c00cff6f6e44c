"""LocalCluster: worker processes on this machine, fed by the engine's scheduler thread.

What flows where::

    engine thread ──ProcessWorkerHandle.run(batch)──▶ pipe ──▶ worker process
         ▲                                                        │
         └── ("done"/"erred", ...) ◀── reader thread ◀── pipe ◀───┘
    ShmStore: the engine's data plane.  Values are :class:`Stored` (a pickle
    header plus inline bytes or shared-memory block addresses); releasing a
    key sends its blocks back to the owning worker's free list.

Parts:

- :class:`ShmStore` keeps the registry of live blocks per segment.  Data in
  shm outlives the worker that wrote it: when a worker dies, its segments
  still holding live blocks are kept and unlinked once their last block is
  released; its other segments (free cache, half-written results) go at once.
- :class:`ProcessWorkerHandle` is the engine's view of one worker process:
  ``run`` encodes a batch and writes it to the pipe; a reader thread turns
  the worker's messages into engine events, and its EOF into "worker-lost".
- :class:`LocalCluster` starts the janitor, the store, the engine and the
  workers (all workers in parallel: a fresh interpreter each, started with
  ``subprocess`` so a guard-less user script is never re-imported), replaces
  workers that die or pass their memory limit, and tears everything down on
  ``close()``, at interpreter exit, or (via the janitor) when the client
  process is killed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

import psutil

from shmdask.cluster.protocol import (
    SHM_THRESHOLD,
    ConnectionState,
    Stored,
    decode_message,
    deserialize_value,
    encode_message,
    load_exception,
    loads_message,
    serialize_value,
)
from shmdask.cluster.shm import (
    DEFAULT_CACHE_BYTES,
    MappingCache,
    SlabAllocator,
    cluster_prefix,
    new_cluster_id,
    sweep,
    unlink_segment,
)
from shmdask.diagnostics.task_stream import MemorySampler
from shmdask.scheduler.engine import DataStore, Engine, TaskResult, TaskSpec, WorkerHandle
from shmdask.units import format_bytes

START_TIMEOUT = 60.0  # seconds a worker may take to import and say hello
MEMORY_POLL = 0.1  # seconds between memory-limit checks
JANITOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "janitor.py")


class WorkerMemoryWarning(RuntimeWarning):
    """A worker passed its memory limit and was restarted."""


# ----------------------------------------------------------------------------- store


class ShmStore(DataStore):
    """The data plane of a cluster: results and scattered data as :class:`Stored`.

    Thread-safety: ``adopt`` runs on worker reader threads, ``release`` on the
    engine thread, ``from_user``/``to_user`` on user threads; one lock guards
    the registry.
    """

    def __init__(self, cluster_id: str, threshold: int = SHM_THRESHOLD):
        self.cluster_id = cluster_id
        self.threshold = threshold
        self.allocator = SlabAllocator(cluster_id, "client")
        self.mappings = MappingCache(self.allocator)
        self._lock = threading.Lock()
        self._segments: dict[str, list] = {}  # name -> [owner, live blocks]
        self._workers: dict[str, ProcessWorkerHandle] = {}
        self._dead: set[str] = set()
        self.values_by_owner: Counter = Counter()
        self.shm_bytes = 0
        self.shm_bytes_by_owner: Counter = Counter()  # live shm bytes each worker wrote
        self.closed = False

    # -- registry ------------------------------------------------------------

    def adopt(self, stored: Stored) -> None:
        """Count a new value's blocks (called before the engine sees it)."""
        with self._lock:
            if stored.live:
                return
            stored.live = True
            self.values_by_owner[stored.owner] += 1
            for name, _offset, length in stored.blocks:
                entry = self._segments.get(name)
                if entry is None:
                    entry = self._segments[name] = [stored.owner, 0]
                entry[1] += 1
                self.shm_bytes += length
                self.shm_bytes_by_owner[stored.owner] += length

    def add_worker(self, handle: ProcessWorkerHandle) -> None:
        with self._lock:
            self._workers[handle.id] = handle

    def worker_lost(self, worker_id: str) -> None:
        """Unlink what nobody can use any more; keep segments with live blocks."""
        with self._lock:
            self._workers.pop(worker_id, None)
            self._dead.add(worker_id)
            keep = set()
            for name, (owner, live) in list(self._segments.items()):
                if owner != worker_id:
                    continue
                if live > 0:
                    keep.add(name)
                else:
                    del self._segments[name]
        removed = sweep(cluster_prefix(self.cluster_id, worker_id), keep=keep)
        if removed:
            self.segments_unlinked(worker_id, removed)

    def segments_unlinked(self, owner: str | None, names: list[str]) -> None:
        """``owner`` gave segments back: every other reader drops its mapping."""
        with self._lock:
            for name in names:
                self._segments.pop(name, None)
            others = [h for wid, h in self._workers.items() if wid != owner]
        self.mappings.forget(names)
        for handle in others:
            handle.forget(names)

    # -- DataStore -----------------------------------------------------------

    def to_user(self, value: Any) -> Any:
        if type(value) is not Stored:
            return value
        return deserialize_value(value, self.mappings, copy=True)

    def from_user(self, obj: Any) -> Stored:
        stored = serialize_value(obj, self.allocator, "client", self.threshold)
        self.adopt(stored)
        return stored

    def nbytes(self, value: Any) -> int:
        return value.nbytes if type(value) is Stored else 0

    def inlined(self, value: Stored) -> Stored:
        """The same value with every shm block copied inline: what a worker on
        another host (which cannot map our segments) is sent."""
        if not value.blocks:
            return value
        buffers = [bytes(self.mappings.view(*b)) if type(b) is tuple else b
                   for b in value.buffers]
        return Stored(value.header, buffers, value.nbytes, value.owner)

    def release(self, values: list) -> None:
        if not any(type(v) is Stored and v.buffers and v.where == "shm" for v in values):
            counts = self.values_by_owner
            with self._lock:  # inline values only (the common case): just count
                for value in values:
                    if type(value) is Stored and value.live:
                        value.live = False
                        counts[value.owner] -= 1
            return
        by_owner: dict[str, list] = {}
        unlink = []
        with self._lock:
            for value in values:
                if type(value) is not Stored or not value.live:
                    continue  # not ours, or released already: a block is freed once
                value.live = False
                self.values_by_owner[value.owner] -= 1
                for block in value.blocks:
                    self.shm_bytes -= block[2]
                    self.shm_bytes_by_owner[value.owner] -= block[2]
                    entry = self._segments.get(block[0])
                    if entry is None:
                        continue
                    entry[1] -= 1
                    if value.owner in self._dead:
                        if entry[1] <= 0:
                            del self._segments[block[0]]
                            unlink.append(block[0])
                    else:
                        by_owner.setdefault(value.owner, []).append(block)
            handles = {o: self._workers.get(o) for o in by_owner}
        for name in unlink:
            unlink_segment(name)
        if unlink:
            self.segments_unlinked(None, unlink)
        for owner, blocks in by_owner.items():
            if owner == "client":
                gone = self.allocator.free(blocks)
                if gone:
                    self.segments_unlinked("client", gone)
            elif handles[owner] is not None:
                handles[owner].free(blocks)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.mappings.close()
        self.allocator.close()
        sweep(cluster_prefix(self.cluster_id))


# ----------------------------------------------------------------------------- handle


class ProcessWorkerHandle(WorkerHandle):
    """One worker process, as the engine sees it."""

    kind = "local"

    def __init__(self, worker_id: str, proc: subprocess.Popen, conn: Connection, hello: dict,
                 nthreads: int, memory_limit: int | None):
        self.id = worker_id
        self.name = worker_id
        self.proc = proc
        self.pid = proc.pid
        self.conn = conn
        self.host = hello.get("host", socket.gethostname())
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        self.state = ConnectionState()
        self.processing: dict = {}  # keys sent and not answered, in send order
        self.bytes_sent = 0
        self.bytes_received = 0
        self.closing = False
        self.lost_reason: str | None = None
        self._send_lock = threading.Lock()
        self._replies: list = []
        self._reply_ready = threading.Condition()
        self._ps = psutil.Process(proc.pid)
        self._reader: threading.Thread | None = None

    # -- sending (engine thread, store) ---------------------------------------

    def _send(self, data: bytes) -> bool:
        try:
            with self._send_lock:
                self.conn.send_bytes(data)
                self.bytes_sent += len(data)
            return True
        except (OSError, ValueError):  # the worker died: the reader reports it
            return False

    def run(self, tasks: list[TaskSpec]) -> None:
        keys = [t.key for t in tasks]
        for key in keys:
            self.processing[key] = None
        body = [(t.key, t.computation, t.deps) for t in tasks]
        try:
            self._send_tasks(keys, body)
        except Exception:
            # Some task cannot be pickled: find it, fail it, send the others.
            for task, item in zip(tasks, body, strict=True):
                try:
                    self._send_tasks([task.key], [item])
                except Exception as exc:
                    self.processing.pop(task.key, None)
                    self._post(("erred", self.id, task.key, _unpicklable(task.key, exc),
                                traceback.format_exc(), None))

    def _send_tasks(self, keys: list, body: list) -> None:
        # Encode and send under one lock: a message that introduces a function
        # must reach the worker before any message that refers to it by token.
        with self._send_lock:
            data = encode_message(("run", keys), body, self.state)
            try:
                self.conn.send_bytes(data)
                self.bytes_sent += len(data)
            except (OSError, ValueError):  # the worker died: the reader reports it
                pass

    def free(self, blocks: list) -> None:
        """Give blocks of released keys back to this worker's free lists."""
        self._send(encode_message(("free", blocks)))

    def forget(self, names: list[str]) -> None:
        self._send(encode_message(("forget", names)))

    def stats(self, timeout: float = 10) -> dict:
        """Counters from the worker process (for tests and diagnostics)."""
        with self._reply_ready:
            self._replies.clear()
        if not self._send(encode_message(("stats",))):
            raise RuntimeError(f"worker {self.id} is gone")
        with self._reply_ready:
            if not self._reply_ready.wait_for(lambda: self._replies, timeout):
                raise TimeoutError(f"worker {self.id} did not answer")
            return self._replies.pop()

    # -- receiving (reader thread) ---------------------------------------------

    def start_reader(self, post, store: ShmStore, on_lost) -> None:
        self._post = post
        self._reader = threading.Thread(target=self._read_loop, args=(post, store, on_lost),
                                        name=f"shmdask-reader-{store.cluster_id}-{self.id}",
                                        daemon=True)
        self._reader.start()

    def _post(self, event: tuple) -> None:  # replaced by start_reader
        raise RuntimeError("worker handle is not connected to an engine")

    def _read_loop(self, post, store: ShmStore, on_lost) -> None:
        conn, processing = self.conn, self.processing
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                break
            self.bytes_received += len(data)
            header, body = decode_message(data)
            op = header[0]
            if op == "results":
                if header[1]:
                    store.segments_unlinked(self.id, header[1])
                done = []
                errors = []
                for entry in loads_message(body):
                    key = entry[1]
                    processing.pop(key, None)
                    if entry[0] == "done":
                        stored = entry[2].detach()
                        store.adopt(stored)
                        done.append(TaskResult(key, stored, entry[3]))
                    else:
                        _, key, exc_bytes, tb, record = entry
                        exc = load_exception(exc_bytes, tb)
                        errors.append(("erred", self.id, key, exc, tb, record))
                if done:
                    post(("done", self.id, done))
                for event in errors:
                    post(event)
            elif op == "unlinked":
                store.segments_unlinked(self.id, header[1])
            elif op == "stats":
                with self._reply_ready:
                    self._replies.append(header[1])
                    self._reply_ready.notify_all()
        if not self.closing:
            on_lost(self, self._death_reason())

    def _death_reason(self) -> str:
        # Reap the process in every case (an unreaped Popen lingers as a zombie).
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:  # hung up but still alive: finish it
            self.proc.kill()
            self.proc.wait()
            return self.lost_reason or (f"worker {self.id} (pid {self.pid}) closed its "
                                        "connection and was killed")
        if self.lost_reason:
            return self.lost_reason
        if code < 0:
            try:
                sig = signal.Signals(-code).name
            except ValueError:
                sig = str(-code)
            return f"worker {self.id} (pid {self.pid}) was killed by {sig}"
        return f"worker {self.id} (pid {self.pid}) exited with code {code}"

    # -- lifecycle --------------------------------------------------------------

    def running_task(self) -> Any:
        """The task most likely running now (the oldest one not answered)."""
        return next(iter(list(self.processing)), None)

    def memory_now(self) -> int:
        try:
            return self._ps.memory_info().rss
        except psutil.Error:
            return 0

    def kill(self, reason: str) -> None:
        self.lost_reason = reason
        with contextlib.suppress(OSError):
            self.proc.kill()

    def disconnect(self) -> None:
        """Hang up: the worker sees EOF (and exits), our reader thread wakes up."""
        self.closing = True
        conn = self.conn
        with contextlib.suppress(OSError, ValueError):
            # close() alone would not wake a thread blocked reading this fd, and
            # the peer would not see EOF until that read returned.
            sock = socket.socket(fileno=conn.fileno())
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.detach()
        with contextlib.suppress(OSError):
            conn.close()

    def close(self, timeout: float = 2.0) -> None:
        self.disconnect()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


    def __repr__(self) -> str:
        return f"<ProcessWorkerHandle {self.id} pid={self.pid} nthreads={self.nthreads}>"


def _unpicklable(key: Any, exc: BaseException) -> TypeError:
    err = TypeError(f"task {key!r} cannot be sent to a worker process: {exc}")
    err.__cause__ = exc
    return err


# ----------------------------------------------------------------------------- cluster


_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kmgtp]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50}


def parse_memory_limit(limit: Any, n_workers: int) -> int | None:
    """"auto" -> total memory / n_workers; None/0 -> no limit; ints, floats
    (a fraction of total memory if <= 1) and strings like "2GB", "512 MiB"."""
    total = psutil.virtual_memory().total
    if limit is None or limit == 0:
        return None
    if isinstance(limit, str):
        if limit.lower() == "auto":
            return int(total / max(1, n_workers))
        m = _SIZE.match(limit)
        if not m:
            raise ValueError(f"memory_limit {limit!r} is not a size like '2GB' or 'auto'")
        unit = m.group(2).lower().rstrip("b")
        if unit not in _UNITS:
            raise ValueError(f"memory_limit {limit!r} has an unknown unit")
        return int(float(m.group(1)) * _UNITS[unit])
    if isinstance(limit, bool) or not isinstance(limit, int | float):
        raise TypeError(f"memory_limit must be a size, 'auto' or None, not {limit!r}")
    if limit < 0:
        raise ValueError(f"memory_limit must be positive, got {limit}")
    if isinstance(limit, float) and limit <= 1:
        return int(total * limit)
    return int(limit)


# Heavy modules a worker imports while idle if the client has them loaded: the
# first task that unpickles a function from one of them then does not wait.
WARM_IMPORTS = ("shmdask.array", "pandas", "scipy")


def _warm_imports() -> list[str]:
    return [name for name in WARM_IMPORTS if name in sys.modules]


# dask's LocalCluster options that mean nothing here; accepted so dask code runs.
_IGNORED_OPTIONS = {"silence_logs", "host", "scheduler_port",
                    "protocol", "asynchronous", "worker_class", "interface", "name"}


def _dashboard_info(dashboard: Any) -> dict:
    """What ``scheduler_info()`` says of the dashboard (dask names its port a service)."""
    if dashboard is None:
        return {"services": {}}
    return {"services": {"dashboard": dashboard.port}, "dashboard_host": dashboard.host}


class _Runtime:
    """Everything a cluster owns.  Kept apart from :class:`LocalCluster` so that
    background threads and the exit-time finalizer never keep the cluster
    object alive."""

    def __init__(self, n_workers: int, threads_per_worker: int, memory_limit: int | None,
                 threshold: int):
        self.cluster_id = new_cluster_id()
        self.n_workers = n_workers
        self.nthreads = threads_per_worker
        self.memory_limit = memory_limit
        self.threshold = threshold
        # Free shm a worker keeps for reuse: plenty for a pipeline of equal
        # chunks, a small share of the machine however many workers there are.
        self.cache_bytes = min(DEFAULT_CACHE_BYTES,
                               psutil.virtual_memory().total // (8 * max(1, n_workers)))
        self.lock = threading.Lock()
        self.closing = False
        self.workers: dict[str, ProcessWorkerHandle] = {}
        self.counter = itertools.count()
        self.replacements = 0
        self.started = time.time()
        self.janitor = self._start_janitor()
        self.store = ShmStore(self.cluster_id, threshold)
        self.engine = Engine(self.store, name=f"shmdask-engine-{self.cluster_id}")
        self.engine.start()
        self._stop = threading.Event()
        try:
            for handle in self.start_workers(n_workers):
                self.add(handle)
        except BaseException:
            self.shutdown()
            raise
        if memory_limit:
            threading.Thread(target=self._watch_memory, daemon=True,
                             name=f"shmdask-memory-{self.cluster_id}").start()

    def _start_janitor(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", JANITOR, self.cluster_id],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True,
            start_new_session=True,  # a terminal's Ctrl-C / hangup must not reach it
        )

    def start_workers(self, n: int) -> list[ProcessWorkerHandle]:
        """Start ``n`` workers at once; return when all of them said hello."""
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
            __file__))))
        if os.path.basename(package_root) not in ("site-packages", "dist-packages"):
            # a source checkout: the fresh interpreter must find this shmdask
            # (an installed one is found anyway, and site-packages must not
            # move ahead of the standard library)
            env["PYTHONPATH"] = os.pathsep.join(
                [package_root, *filter(None, [env.get("PYTHONPATH")])])
        env["SHMDASK_SYS_PATH"] = json.dumps([p or os.getcwd() for p in sys.path])
        pending = []
        try:
            for _ in range(n):
                worker_id = f"worker-{next(self.counter)}"
                ours, theirs = socket.socketpair()
                fd = theirs.fileno()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "shmdask.cluster.worker", "--fd", str(fd),
                     "--id", worker_id, "--cluster", self.cluster_id,
                     "--nthreads", str(self.nthreads), "--threshold", str(self.threshold),
                     "--cache-bytes", str(self.cache_bytes),
                     "--warm-imports", ",".join(_warm_imports())],
                    pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C is the client's to handle
                )
                theirs.close()
                pending.append((worker_id, proc, Connection(ours.detach())))
            handles = []
            for worker_id, proc, conn in pending:
                if not conn.poll(START_TIMEOUT):
                    raise RuntimeError(f"worker {worker_id} did not start within "
                                       f"{START_TIMEOUT} s")
                try:
                    header, _ = decode_message(conn.recv_bytes())
                except EOFError:
                    code = proc.wait()
                    raise RuntimeError(f"worker {worker_id} exited with code {code} while "
                                       "starting (its stderr says why)") from None
                handles.append(ProcessWorkerHandle(worker_id, proc, conn, header[1],
                                                   self.nthreads, self.memory_limit))
            return handles
        except BaseException:
            for _, proc, conn in pending:
                conn.close()
                with contextlib.suppress(OSError):
                    proc.kill()
                proc.wait()
            raise

    def add(self, handle: ProcessWorkerHandle) -> None:
        with self.lock:
            if self.closing:
                handle.close()
                return
            self.workers[handle.id] = handle
        self.store.add_worker(handle)
        handle.start_reader(self.engine.post, self.store, self.lost)
        self.engine.post(("worker-added", handle))

    def lost(self, handle: ProcessWorkerHandle, reason: str) -> None:
        """A worker died (reader thread): tell the store and engine, start another."""
        with self.lock:
            if self.closing or self.workers.pop(handle.id, None) is None:
                return
        handle.conn.close()
        self.store.worker_lost(handle.id)
        self.engine.post(("worker-lost", handle.id, reason))
        self.replacements += 1
        try:
            (new,) = self.start_workers(1)
        except Exception as exc:
            if not self.closing:
                warnings.warn(f"shmdask: could not replace {handle.id}: {exc}",
                              RuntimeWarning, stacklevel=1)
            return
        self.add(new)

    def retire(self, handle: ProcessWorkerHandle, reason: str) -> None:
        """Stop a worker on purpose (no replacement); the engine reschedules its tasks."""
        with self.lock:
            if self.workers.pop(handle.id, None) is None:
                return
        handle.close()
        self.store.worker_lost(handle.id)
        self.engine.post(("worker-lost", handle.id, reason))

    def restart(self) -> None:
        """Drop all data and tasks, and replace every worker by a fresh process."""
        self.engine.call(lambda engine: engine.reset(), timeout=60)
        old = list(self.workers.values())
        new = self.start_workers(len(old) or self.n_workers)
        for handle in old:
            self.retire(handle, f"worker {handle.id} was restarted")
        for handle in new:
            self.add(handle)

    def _watch_memory(self) -> None:
        limit = self.memory_limit
        while not self._stop.wait(MEMORY_POLL):
            for handle in list(self.workers.values()):
                try:
                    mem = handle._ps.memory_info()
                except psutil.Error:
                    continue
                # Shared pages (shm chunks a worker read or wrote) are not its own.
                private = mem.rss - getattr(mem, "shared", 0)
                if private <= limit or handle.lost_reason:
                    continue
                key = handle.running_task()
                reason = (f"worker {handle.id} (pid {handle.pid}) exceeded its memory limit "
                          f"({format_bytes(private)} > {format_bytes(limit)}) while "
                          f"running task {key!r}; restarting it")
                warnings.warn(reason, WorkerMemoryWarning, stacklevel=1)
                handle.kill(reason)

    sampler: MemorySampler | None = None
    listener: Any = None  # the TCP listener, when the cluster listens
    dashboard: Any = None  # the live web page, unless dashboard_address=None

    def start_memory_sampler(self, interval: float = 0.1) -> None:
        """Shared memory in use and each worker's RSS, for the task-stream picture."""
        workers, store, engine = self.workers, self.store, self.engine
        self.sampler = MemorySampler(
            engine.task_stream,
            worker_pids=lambda: {wid: h.pid for wid, h in list(workers.items())},
            shm_bytes=lambda: store.shm_bytes,
            done=lambda: engine.tasks_done,
            interval=interval,
        ).start()

    def shutdown(self) -> None:
        with self.lock:
            if self.closing:
                return
            self.closing = True
            workers = list(self.workers.values())
        self._stop.set()
        if self.dashboard is not None:
            self.dashboard.close()
        if self.listener is not None:
            self.listener.close()
        if self.sampler is not None:
            self.sampler.stop()
        for handle in workers:
            handle.closing = True
            handle.disconnect()  # every worker sees EOF now and exits in parallel
        # The engine closes the handles it knows and then the store; do the
        # rest here in case it never heard of some worker.
        self.engine.close()
        for handle in workers:
            handle.close()
        self.store.close()
        self._stop_janitor()

    def _stop_janitor(self) -> None:
        janitor = self.janitor
        with contextlib.suppress(OSError):
            janitor.stdin.write(b"x")  # goodbye: one last sweep is enough
            janitor.stdin.close()
        try:
            janitor.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass  # still sweeping a few times; it exits on its own


class LocalCluster:
    """Worker processes on this machine with a shared-memory data plane.

    ``LocalCluster(n_workers=None, threads_per_worker=1, memory_limit="auto")``
    starts ``n_workers`` (default: one per core) worker processes; ``.engine``
    is the scheduler loop that a Client drives.  Use as a context manager or
    call :meth:`close` (also done at interpreter exit).
    """

    def __new__(cls, n_workers: int | None = None, threads_per_worker: int = 1, *args: Any,
                processes: bool = True, **kwargs: Any):
        if processes:
            return super().__new__(cls)
        # dask's LocalCluster(processes=False): worker threads in this process.
        from shmdask.scheduler.local import ThreadCluster

        unknown = set(kwargs) - _IGNORED_OPTIONS - {"memory_limit", "report_dir", "listen",
                                                    "dashboard_address"}
        if args or unknown:
            raise TypeError("LocalCluster(processes=False) takes n_workers and "
                            "threads_per_worker only")
        threads = (n_workers or os.cpu_count() or 1) * max(1, threads_per_worker)
        return ThreadCluster(threads)

    def __init__(self, n_workers: int | None = None, threads_per_worker: int = 1,
                 memory_limit: Any = "auto", report_dir: str | None = None,
                 listen: Any = None, processes: bool = True,
                 shm_threshold: int = SHM_THRESHOLD, dashboard_address: Any = ":8787",
                 **kwargs: Any):
        unknown = set(kwargs) - _IGNORED_OPTIONS
        if unknown:
            raise TypeError(f"LocalCluster() got unexpected keyword argument(s) "
                            f"{', '.join(sorted(unknown))}")
        if n_workers is None:
            n_workers = os.cpu_count() or 1
        for name, value, low in (("n_workers", n_workers, 0),
                                 ("threads_per_worker", threads_per_worker, 1)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if not isinstance(shm_threshold, int) or shm_threshold < 1:
            raise ValueError(f"shm_threshold must be a positive int, got {shm_threshold!r}")
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.memory_limit = parse_memory_limit(memory_limit, max(1, n_workers))
        self.report_dir = report_dir
        self.listen = listen
        self.options = dict(kwargs)
        self.scheduler_address: str | None = None  # set by a TCP listener, if any
        self._runtime = _Runtime(n_workers, threads_per_worker, self.memory_limit,
                                 shm_threshold)
        self._runtime.start_memory_sampler()
        self._finalizer = weakref.finalize(self, self._runtime.shutdown)
        self._listener = None
        try:
            if dashboard_address is not None:
                from shmdask.diagnostics.dashboard import start_dashboard

                self._runtime.dashboard = start_dashboard(self, dashboard_address)
            if listen:
                self._listen(listen)
        except BaseException:
            self.close()
            raise

    def _listen(self, listen: Any) -> None:
        """Let remote workers and clients join at ``listen`` (an address, or
        True for any free port on loopback)."""
        from shmdask.cluster.tcp import attach_listener

        address = "tcp://127.0.0.1:0" if listen is True else str(listen)
        self._listener = attach_listener(self, address, info=self._local_scheduler_info)
        self._runtime.listener = self._listener

    # -- public -----------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._runtime.cluster_id

    @property
    def engine(self) -> Engine:
        return self._runtime.engine

    @property
    def store(self) -> ShmStore:
        return self._runtime.store

    @property
    def workers(self) -> dict[str, ProcessWorkerHandle]:
        return dict(self._runtime.workers)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    @property
    def address(self) -> str:
        return self.scheduler_address or f"local://{os.getpid()}/{self.id}"

    @property
    def dashboard_link(self) -> str | None:
        """Where the live dashboard is (``http://127.0.0.1:8787/status``), if any."""
        dashboard = self._runtime.dashboard
        return None if dashboard is None or self.closed else dashboard.link

    def scheduler_info(self) -> dict:
        """A dict shaped like dask's ``Client.scheduler_info()`` (remote workers
        included when the cluster listens)."""
        if self._listener is not None:
            return self._listener.scheduler_info()
        return self._local_scheduler_info()

    def _local_scheduler_info(self) -> dict:
        in_memory = self._runtime.store.values_by_owner
        shm_owned = self._runtime.store.shm_bytes_by_owner
        workers = {}
        for wid, handle in sorted(self.workers.items()):
            info = handle.info()
            info["metrics"]["in_memory"] = in_memory.get(wid, 0)
            info["metrics"]["shm_bytes"] = shm_owned.get(wid, 0)
            workers[wid] = info
        return {
            "type": "Scheduler",
            "id": f"Scheduler-{self.id}",
            "address": self.address,
            "started": self._runtime.started,
            "workers": workers,
            **_dashboard_info(self._runtime.dashboard),
        }

    def wait_for_workers(self, n_workers: int, timeout: float = 30) -> None:
        """Block until at least ``n_workers`` workers are up."""
        deadline = time.monotonic() + timeout
        while len(self._runtime.workers) < n_workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self._runtime.workers)} of {n_workers} "
                                   f"workers after {timeout} s")
            time.sleep(0.01)

    def restart(self) -> None:
        """Fresh worker processes and no data (what ``Client.restart`` asks for)."""
        if self.closed:
            raise RuntimeError("cannot restart a closed LocalCluster")
        self._runtime.restart()

    def close(self) -> None:
        """Stop workers, engine and janitor; unlink all shared memory.  Idempotent."""
        self._finalizer()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"LocalCluster({self.id}, closed)"
        workers = self.workers
        threads = sum(h.nthreads for h in workers.values())
        memory = (format_bytes(self.memory_limit * len(workers)) if self.memory_limit
                  else "unlimited")
        dashboard = f", dashboard={self.dashboard_link}" if self.dashboard_link else ""
        return (f"LocalCluster({self.id}, {self.address!r}, workers={len(workers)}, "
                f"threads={threads}, memory={memory}{dashboard})")

    def _repr_html_(self) -> str:
        import html

        link = self.dashboard_link
        dashboard = (f'<br>Dashboard: <a href="{html.escape(link)}" target="_blank">'
                     f"{html.escape(link)}</a>" if link else "")
        return f"<div><b>{html.escape(repr(self))}</b>{dashboard}</div>"


__all__ = ["LocalCluster", "ShmStore", "ProcessWorkerHandle", "WorkerMemoryWarning",
           "parse_memory_limit"]
