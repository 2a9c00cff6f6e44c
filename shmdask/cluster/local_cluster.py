"""LocalCluster: worker processes on this machine, fed by the engine's scheduler thread.

What a LocalCluster owns, and who talks to whom::

    Client ──LocalConnection──▶ Engine (scheduler thread, scheduler/engine.py)
                                  │ data plane: ShmStore (store.py)
                                  │ transport:  ProcessWorkerHandle ──pipe──▶ worker
                                  │             processes (pipe_transport.py, worker.py)
                                  └ optional:   TCP listener (tcp_server.py) for
                                                remote workers and clients
    janitor process (janitor.py): removes this cluster's shared memory and
                                  spill folder if we die
    memory watcher + spiller threads: keep each worker inside its memory budget

:class:`LocalCluster` starts the janitor, the store, the engine and the
workers (all in parallel), replaces workers that die or pass their memory
limit, and tears everything down on ``close()``, at interpreter exit, or (via
the janitor) when the client process is killed.  Everything it owns lives in
a :class:`_Runtime`, so background threads and the exit-time finalizer never
keep the user's cluster object alive.

The memory budget.  A worker's memory is the shared memory it owns (the
segments it created: its results, wherever they are mapped) plus its private
memory (RSS minus shared pages).  Every ``MEMORY_POLL`` the watcher (memory_watch.py) measures
it against ``memory_limit`` and the ``shmdask.config`` fractions: above
``memory.target`` the spiller thread moves the worker's least recently used
values to the spill folder (store.py), above ``memory.pause`` the engine
gives the worker no new tasks until it is back under, above
``memory.terminate`` it is restarted (its data in shm and on disk is kept).
The workers themselves write new results to disk past ``memory.spill``.
Values the client process owns (scatter, uploads) get the same treatment.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

import psutil

from shmdask.annotations import check_resources
from shmdask.cluster import scaling
from shmdask.cluster.memory_watch import (
    MemoryWatch,
    WorkerMemoryWarning,
    parse_memory_limit,
)
from shmdask.cluster.pipe_transport import ProcessWorkerHandle, spawn_workers
from shmdask.cluster.protocol import SHM_THRESHOLD
from shmdask.cluster.scheduler_view import SchedulerInfo, SchedulerView
from shmdask.cluster.shm import DEFAULT_CACHE_BYTES, new_cluster_id
from shmdask.cluster.spill import spill_directory
from shmdask.cluster.store import ShmStore
from shmdask.cluster.worker_calls import install_upload, keep_logs
from shmdask.config import get as config_get
from shmdask.config import memory_fraction
from shmdask.diagnostics.task_stream import MemorySampler
from shmdask.scheduler.engine import Engine
from shmdask.units import format_bytes

log = logging.getLogger("shmdask.cluster")

JANITOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "janitor.py")


def _check_counts(n_workers: Any, threads_per_worker: Any) -> None:
    for name, value, low in (("n_workers", n_workers, 0),
                             ("threads_per_worker", threads_per_worker, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")


# dask's LocalCluster options that mean nothing here; accepted so dask code runs.
_IGNORED_OPTIONS = {"silence_logs", "host", "scheduler_port",
                    "protocol", "asynchronous", "worker_class", "interface", "name"}


def _dashboard_info(dashboard: Any) -> dict:
    """What ``scheduler_info()`` says of the dashboard (dask names its port a service)."""
    if dashboard is None:
        return {"services": {}}
    return {"services": {"dashboard": dashboard.port}, "dashboard_host": dashboard.host}


class _Runtime(MemoryWatch):
    """Everything a cluster owns.  Kept apart from :class:`LocalCluster` so that
    background threads and the exit-time finalizer never keep the cluster
    object alive."""

    def __init__(self, n_workers: int, threads_per_worker: int, memory_limit: int | None,
                 threshold: int, resources: dict | None = None):
        self.cluster_id = new_cluster_id()
        self.resources = resources  # dask's worker resources, the same for each worker
        self.n_workers = n_workers
        self.nthreads = threads_per_worker
        self.memory_limit = memory_limit
        self.threshold = threshold
        self.fractions = {name: memory_fraction(name)
                          for name in ("target", "spill", "pause", "terminate")}
        self.spill_dir = spill_directory(self.cluster_id, config_get("temporary_directory"))
        # Free shm a worker keeps for reuse: plenty for a pipeline of equal
        # chunks, a small share of the machine however many workers there are,
        # and of the worker's budget (it counts against it).
        self.cache_bytes = min(DEFAULT_CACHE_BYTES,
                               psutil.virtual_memory().total // (8 * max(1, n_workers)))
        if memory_limit:
            self.cache_bytes = min(self.cache_bytes, memory_limit // 8)
        self.lock = threading.Lock()
        self.scale_lock = threading.RLock()  # one change of the worker count at a time
        self.closing = False
        self.workers: dict[str, ProcessWorkerHandle] = {}
        self.counter = itertools.count()
        self.replacements = 0
        self.uploads: dict[str, bytes] = {}  # client.upload_file: new workers get them too
        self.adaptive: Any = None
        self.log = keep_logs()
        # Starts a TCP listener when a task first asks for a client (set by the cluster).
        self.listen_lazily: Any = None
        self.started = time.time()
        self.janitor = self._start_janitor()
        self.store = ShmStore(self.cluster_id, threshold, self.spill_dir, memory_limit,
                              self.fractions["spill"])
        self.engine = Engine(self.store, name=f"shmdask-engine-{self.cluster_id}")
        self.store.in_flight = lambda: self.engine.in_flight
        self.engine.start()
        self._stop = threading.Event()
        self._spill_wanted: dict[str, int] = {}
        self._spill_requested = threading.Event()
        try:
            for handle in self.start_workers(n_workers):
                self.add(handle)
        except BaseException:
            self.shutdown()
            raise
        if memory_limit:
            threading.Thread(target=self._watch_memory, daemon=True,
                             name=f"shmdask-memory-{self.cluster_id}").start()
            threading.Thread(target=self._spill_loop, daemon=True,
                             name=f"shmdask-spill-{self.cluster_id}").start()

    def _start_janitor(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", JANITOR, self.cluster_id, self.spill_dir],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True,
            start_new_session=True,  # a terminal's Ctrl-C / hangup must not reach it
        )

    def start_workers(self, n: int) -> list[ProcessWorkerHandle]:
        """Start ``n`` workers at once; return when all of them said hello."""
        ids = [f"worker-{next(self.counter)}" for _ in range(n)]
        return spawn_workers(ids, self.cluster_id, self.nthreads, self.threshold,
                             self.cache_bytes, self.memory_limit, self.spill_dir,
                             self.fractions["spill"])

    def note(self, level: str, message: str) -> None:
        """A line of the cluster's log (``cluster.get_logs()``)."""
        self.log.note(level, message)

    def answer_ask(self, what: str, args: tuple) -> Any:
        """What a worker's task may ask of the cluster (reader thread)."""
        if what == "scheduler":  # get_client(): where to connect, with which key
            if self.listen_lazily is None:
                raise RuntimeError("the cluster was closed")
            listener = self.listen_lazily()
            host = listener.host if listener.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            return {"address": f"tcp://{host}:{listener.port}", "auth_key": listener.key}
        raise ValueError(f"unknown question {what!r}")

    def add(self, handle: ProcessWorkerHandle) -> None:
        handle.on_ask = self.answer_ask
        with self.lock:
            if self.closing:
                handle.close()
                return
            self.workers[handle.id] = handle
        handle.resources = self.resources
        self.store.add_worker(handle)
        handle.start_reader(self.engine.post, self.store, self.lost)
        for filename, data in list(self.uploads.items()):  # before its first task
            ok, exc = handle.call_function(install_upload, (filename, data), timeout=60)
            if not ok:
                self.note("ERROR", f"worker {handle.id} could not load uploaded {filename}: "
                                   f"{exc!r}")
        self.engine.post(("worker-added", handle))
        self.note("INFO", f"worker {handle.id} (pid {handle.pid}) started")

    def lost(self, handle: ProcessWorkerHandle, reason: str) -> None:
        """A worker died (reader thread): tell the store and engine, start another."""
        with self.lock:
            if self.closing or self.workers.pop(handle.id, None) is None:
                return
        handle.conn.close()
        self.store.worker_lost(handle.id)
        self.engine.post(("worker-lost", handle.id, reason))
        self.note("WARNING", reason)
        if handle.retiring:  # it was leaving anyway
            return
        self.replacements += 1
        try:
            (new,) = self.start_workers(1)
        except Exception as exc:
            if not self.closing:
                log.error("could not replace %s: %s", handle.id, exc)
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
            spilled_bytes=lambda: store.spilled_bytes,
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
        self.listen_lazily = None
        if self.adaptive is not None:
            self.adaptive.stop()
        self._spill_requested.set()
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

    def __new__(cls, n_workers: int | None = None, threads_per_worker: int | None = None,
                *args: Any, processes: bool = True, **kwargs: Any):
        if processes:
            return super().__new__(cls)
        # dask's LocalCluster(processes=False): worker threads in this process;
        # by default one worker with a thread per core, as in dask.
        from shmdask.scheduler.local import ThreadCluster

        unknown = set(kwargs) - _IGNORED_OPTIONS - {"memory_limit", "report_dir", "listen",
                                                     "resources", "dashboard_address"}
        if args or unknown:
            raise TypeError("LocalCluster(processes=False) takes n_workers, "
                            "threads_per_worker, memory_limit and resources only")
        cores = os.cpu_count() or 1
        if n_workers is None:
            n_workers = max(1, cores // threads_per_worker) if threads_per_worker else 1
        if threads_per_worker is None:
            threads_per_worker = max(1, cores // n_workers)
        _check_counts(n_workers, threads_per_worker)
        memory_limit = parse_memory_limit(kwargs.get("memory_limit", "auto"), max(1, n_workers))
        return ThreadCluster(n_workers, threads_per_worker, memory_limit,
                             resources=check_resources(kwargs.get("resources")))

    def __init__(self, n_workers: int | None = None, threads_per_worker: int | None = None,
                 memory_limit: Any = "auto", report_dir: str | None = None,
                 listen: Any = None, processes: bool = True,
                 shm_threshold: int = SHM_THRESHOLD, resources: dict | None = None,
                 dashboard_address: Any = ":8787", **kwargs: Any):
        unknown = set(kwargs) - _IGNORED_OPTIONS
        if unknown:
            raise TypeError(f"LocalCluster() got unexpected keyword argument(s) "
                            f"{', '.join(sorted(unknown))}")
        if n_workers is None:
            n_workers = os.cpu_count() or 1
        if threads_per_worker is None:
            threads_per_worker = 1
        _check_counts(n_workers, threads_per_worker)
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
                                 shm_threshold, check_resources(resources))
        self._runtime.start_memory_sampler()
        self._finalizer = weakref.finalize(self, self._runtime.shutdown)
        self._listener = None
        self._listen_lock = threading.Lock()
        self._runtime.listen_lazily = _weak_method(self._listener_for_tasks)
        self.scheduler = SchedulerView(self)
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
        from shmdask.cluster.tcp_server import attach_listener

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

    def _listener_for_tasks(self) -> Any:
        """The TCP listener, started on loopback the first time a task asks for
        a client (shmdask.worker_client)."""
        with self._listen_lock:
            if self._listener is None:
                if self.closed:
                    raise RuntimeError("the cluster is closed")
                self._listen(True)
                self._runtime.note("INFO", f"listening at {self._listener.address} for "
                                           "clients in tasks")
            return self._listener

    @property
    def scheduler_info(self) -> SchedulerInfo:
        """A dict shaped like dask's ``Client.scheduler_info()`` (remote workers
        included when the cluster listens); also callable, as shmdask spells it."""
        if self._listener is not None:
            return SchedulerInfo(self._listener.scheduler_info())
        return SchedulerInfo(self._local_scheduler_info())

    def _local_scheduler_info(self) -> dict:
        """Workers' metrics say what counts against their ``memory_limit``:
        ``memory`` = ``shm`` (the segments the worker owns) + ``private`` (its
        RSS minus shared pages); ``managed_bytes`` are its live values in shm,
        ``spilled_bytes["disk"]`` those in the spill folder.  ``in_memory``
        counts the values it made that are held as ``Stored``: an immediate
        result (a number, a short string) is the scheduler's own object and
        belongs to no worker."""
        runtime = self._runtime
        in_memory = runtime.store.values_by_owner
        memory = runtime.memory_report()
        workers = {}
        for wid, handle in sorted(self.workers.items()):
            info = handle.info()
            info["metrics"]["in_memory"] = in_memory.get(wid, 0)
            info["metrics"].update(memory.get(wid, {}))
            info["metrics"]["shm_bytes"] = memory.get(wid, {}).get("shm", 0)
            workers[wid] = info
        return {
            "type": "Scheduler",
            "id": f"Scheduler-{self.id}",
            "address": self.address,
            "started": runtime.started,
            "workers": workers,
            "memory": {
                "client": memory["client"],
                "limit": self.memory_limit,
                "thresholds": dict(runtime.fractions),
                "spill_directory": runtime.spill_dir,
                "spilled_bytes": runtime.store.spilled_bytes,
                "shm_bytes": runtime.store.shm_bytes,
            },
            **_dashboard_info(runtime.dashboard),
        }

    def wait_for_workers(self, n_workers: int, timeout: float = 30) -> None:
        """Block until at least ``n_workers`` workers are up."""
        deadline = time.monotonic() + timeout
        while len(self._runtime.workers) < n_workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self._runtime.workers)} of {n_workers} "
                                   f"workers after {timeout} s")
            time.sleep(0.01)

    # -- scaling (shmdask.cluster.scaling) ----------------------------------------

    def scale(self, n: int = 0, memory: Any = None, cores: int | None = None) -> None:
        """Have ``n`` workers (or enough for ``memory`` / ``cores``): new ones are
        up when this returns; workers let go retire idle-first, busy ones after
        their running tasks.  Their results stay in shared memory."""
        self._check_open("scale")
        scaling.scale(self._runtime, scaling.workers_for(n, memory, cores, self._runtime))

    def adapt(self, minimum: int = 0, maximum: float = math.inf, **options: Any
              ) -> scaling.Adaptive:
        """Scale with the load between ``minimum`` and ``maximum`` workers;
        options ``interval``, ``wait_count``, ``target_duration`` (dask's)."""
        self._check_open("adapt")
        runtime = self._runtime
        if runtime.adaptive is not None:
            runtime.adaptive.stop()
        for name in ("minimum_cores", "maximum_cores", "minimum_memory", "maximum_memory"):
            if options.pop(name, None) is not None:
                raise TypeError(f"adapt({name}=...) is not supported; give minimum/maximum "
                                "in workers")
        runtime.adaptive = scaling.Adaptive(runtime, minimum, maximum, **options)
        return runtime.adaptive

    def retire_workers(self, workers: list[str] | None = None, n: int | None = None,
                       wait: bool = True) -> dict[str, dict]:
        """Stop workers gracefully (see :mod:`shmdask.cluster.scaling`); returns
        their info.  Neither ``workers`` nor ``n``: the idle workers, all but one."""
        self._check_open("retire workers of")
        runtime = self._runtime
        if workers is None:
            idle_only = n is None
            if n is None:
                n = len(runtime.workers) - 1
            workers = scaling.choose_to_retire(runtime, n, idle_only=idle_only)
        elif isinstance(workers, str):
            workers = [workers]
        infos = scaling.retire_workers(runtime, workers, wait=wait)
        with runtime.scale_lock:
            runtime.n_workers = sum(not h.retiring for h in runtime.workers.values())
        return infos

    def get_logs(self, cluster: bool = True, scheduler: bool = True,
                 workers: bool | list[str] = True) -> dict[str, str]:
        """Log lines of the cluster (its events), the scheduler (this process's
        shmdask log) and each worker, as dask's ``cluster.get_logs()``."""
        out: dict[str, str] = {}
        lines = list(self._runtime.log.lines)
        if cluster:
            out["Cluster"] = "\n".join(text for _, text in lines if " - shmdask - " in text)
        if scheduler:
            out["Scheduler"] = "\n".join(text for _, text in lines)
        if workers:
            from shmdask.cluster.scheduler_calls import worker_logs

            chosen = None if workers is True else list(workers)
            for wid, wlines in worker_logs(self, chosen).items():
                out[wid] = "\n".join(text for _, text in wlines)
        return out

    def get_client(self) -> Any:
        """A Client of this cluster (the default client if it is one)."""
        from shmdask import config
        from shmdask.client import Client

        current = config.get("scheduler")
        if isinstance(current, Client) and current.cluster is self and not current.closed:
            return current
        return Client(self)

    def _check_open(self, what: str) -> None:
        if self.closed:
            raise RuntimeError(f"cannot {what} a closed LocalCluster")

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


def _weak_method(method: Any) -> Any:
    """A callable that holds its object weakly (threads of the runtime must not
    keep the cluster alive)."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        bound = ref()
        if bound is None:
            raise RuntimeError("the cluster is closed")
        return bound(*args)

    return call


__all__ = ["LocalCluster", "WorkerMemoryWarning", "parse_memory_limit"]
