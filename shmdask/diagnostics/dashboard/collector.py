"""The live side of the dashboard: what a running cluster is doing, read off its loop.

In: an :class:`~shmdask.scheduler.engine.Engine` (its task stream, its scheduler
state, its processing set, the graphs it accepts) and a ``scheduler_info()``
callable.  Out: the models of :mod:`.model`, refreshed a few times a second on
a thread of the collector's own, and JSON-ready payloads built from them for
the HTTP handlers.

Why shaped so: the scheduler loop must never wait for the dashboard.  Nothing
here posts to the engine or calls into it; everything is read from another
thread through structures the loop only appends to or reassigns (the task
stream has its own lock, and its records, never changed once logged, are read
in place rather than copied; dicts are copied whole, which CPython does without
letting the loop in between, and a copy that races anyway is retried).  The
only code that runs on the loop is :meth:`Collector._on_graph`, which notes a
reference and returns.

The cost stays bounded however many people watch: HTTP handlers only read the
latest models (50 page loads cost what one does), and the collector works
hard only while someone has asked for data in the last few seconds.  The one
walk over every task (counting states by group) is spaced so that it takes at
most ``1 / SCAN_COST_FACTOR`` of the time, and between walks the progress rows
are kept current from records and the processing set (see ``model.py``); the
workers (``scheduler_info()`` and psutil, which read ``/proc``) are measured
once a second.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from shmdask.graph import key_split

from .model import (
    MAX_GRAPH_TASKS,
    GraphView,
    GroupProgress,
    MemorySeries,
    TaskWindow,
    info_payload,
    no_graph,
    progress_payload,
    worker_rows,
)

logger = logging.getLogger("shmdask.dashboard")

#: a full count of task states may take at most 1/SCAN_COST_FACTOR of the time
SCAN_COST_FACTOR = 200
MIN_SCAN_INTERVAL = 0.25  # seconds
WORKERS_INTERVAL = 1.0  # seconds between measurements of the workers (psutil reads /proc)
GROUP_CACHE_SIZE = 100_000


def _copy(container: Any, items: bool = False) -> list:
    """``list(container)`` (or its items) taken while another thread may change it."""
    for _ in range(5):
        try:
            return list(container.items()) if items else list(container)
        except RuntimeError:  # changed size during the copy: try again
            continue
    return []


class ProcessStats:
    """CPU share and private memory of worker processes on this host (psutil).

    Processes are kept between calls: ``cpu_percent`` measures from one call to
    the next.
    """

    def __init__(self) -> None:
        self._procs: dict[int, Any] = {}
        self._here = {socket.gethostname(), "127.0.0.1", "localhost"}

    def __call__(self, info: Mapping) -> dict[str, Any]:
        import psutil

        pid = info.get("pid")
        if not isinstance(pid, int) or (info.get("kind") == "remote"
                                        and info.get("host") not in self._here):
            return {}
        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            with proc.oneshot():
                cpu = proc.cpu_percent(None)
                mem = proc.memory_info()
        except (psutil.Error, OSError):
            self._procs.pop(pid, None)
            return {}
        # shared pages (shm chunks the worker mapped) are not its own memory
        return {"cpu": round(cpu, 1), "memory": int(mem.rss),
                "private": int(mem.rss - getattr(mem, "shared", 0))}

    def forget_except(self, pids: set) -> None:
        for pid in [p for p in self._procs if p not in pids]:
            del self._procs[pid]


class Collector:
    """Keeps the dashboard's models current for one engine; see the module docstring."""

    interval = 0.3  # seconds between refreshes while someone watches
    idle_interval = 1.0  # ... and while nobody does (records only)
    watch_seconds = 5.0  # a request counts as watching for this long

    def __init__(self, engine: Any, scheduler_info: Callable[[], dict],
                 describe: Callable[[], dict] | None = None, window_seconds: float = 300.0):
        self.engine = engine
        self._scheduler_info = scheduler_info
        self._describe = describe or (lambda: {})
        self.window = TaskWindow(window_seconds)
        self.progress = GroupProgress()
        self.memory = MemorySeries()
        self.graph: GraphView | None = None
        self.workers: list[dict] = []
        self.scheduler: dict = {}
        self.process_stats = ProcessStats()
        self.now = time.time()
        self.ticks = 0
        self.scan_seconds = 0.0  # how long the last full count took
        self._lock = threading.Lock()  # guards the models
        self._tick_lock = threading.Lock()  # one refresh at a time
        self._start_lock = threading.Lock()
        self._cursor = 0
        self._memory_cursor = 0
        self._latest_graph: Mapping | int | None = None
        self._graph_seq = 0
        self._graph_built = 0
        self._graph_scanned = 0
        self._last_scan = 0.0
        self._next_scan = 0.0
        self._workers_at = 0.0
        self._groups: dict = {}
        self._watched_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._answers: dict = {}  # (request, tick) -> body: see answer()
        self._answers_lock = threading.Lock()
        self.closed = False
        engine.graph_callbacks.append(self._on_graph)

    # -- the engine's loop thread --------------------------------------------------

    def _on_graph(self, dsk: Mapping, dependencies: Mapping) -> None:
        # On the scheduler loop: note it and return.  Only a graph small enough
        # to draw is kept (until the next one), a big one by its size alone.
        self._latest_graph = dsk if len(dsk) <= MAX_GRAPH_TASKS else len(dsk)
        self._graph_seq += 1

    # -- lifecycle -------------------------------------------------------------------

    def touch(self) -> None:
        """Someone is watching: refresh often for a while (the first time, now)."""
        self._watched_until = time.monotonic() + self.watch_seconds
        if self._thread is not None or self.closed:
            return
        with self._start_lock:
            if self._thread is None and not self.closed:
                self.tick(full=True)
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="shmdask-dashboard-collector")
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            watched = time.monotonic() < self._watched_until
            try:
                self.tick(full=watched)
            except Exception:  # a diagnostic must never stop: log, go on
                logger.exception("dashboard: refreshing failed")
            self._stop.wait(self.interval if watched else self.idle_interval)

    def close(self) -> None:
        self.closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        try:
            self.engine.graph_callbacks.remove(self._on_graph)
        except ValueError:
            pass
        self._latest_graph = None

    # -- refreshing ------------------------------------------------------------------

    def _group(self, key: Any) -> str:
        name = key[0] if type(key) is tuple and key else key
        cache = self._groups
        try:
            group = cache.get(name)
        except TypeError:  # unhashable: not cacheable
            return key_split(key)
        if group is None:
            group = key_split(key)
            if len(cache) >= GROUP_CACHE_SIZE:
                cache.clear()
            cache[name] = group
        return group

    def _count_processing(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        group = self._group
        for key in _copy(self.engine.where):
            g = group(key)
            counts[g] = counts.get(g, 0) + 1
        return counts

    def _count_states(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        group = self._group
        for key, ts in _copy(self.engine.state.tasks, items=True):
            g = group(key)
            c = counts.get(g)
            if c is None:
                c = counts[g] = {}
            state = ts.state
            c[state] = c.get(state, 0) + 1
        return counts

    def _scan_due(self, now: float) -> bool:
        if now >= self._next_scan:
            return True
        # a new graph adds tasks: count sooner, though not more than a tenth of the time
        return (self._graph_seq != self._graph_scanned
                and now >= self._last_scan + max(MIN_SCAN_INTERVAL,
                                                 10 * self.scan_seconds))

    def _take_graph(self) -> GraphView | None:
        seq = self._graph_seq
        if seq == self._graph_built:
            return None
        latest, self._graph_built = self._latest_graph, seq
        if latest is None:
            return None
        view = GraphView(seq, latest)
        self._latest_graph = None  # drawn: the graph's objects may go
        return view

    def tick(self, full: bool = True) -> None:
        """One refresh: new records and memory samples always; with ``full``, also
        what runs, the workers and (when due) a full count of task states."""
        with self._tick_lock:
            stream = self.engine.task_stream
            now = time.time()
            graph = self._take_graph()
            records, self._cursor = stream.read(self._cursor, copy=False)
            samples, self._memory_cursor = stream.read_memory(self._memory_cursor)
            states = processing = workers = info = None
            late: list = []
            if full:
                processing = self._count_processing()
                if self._scan_due(now):
                    seq = self._graph_seq
                    t0 = time.perf_counter()
                    states = self._count_states()
                    self.scan_seconds = time.perf_counter() - t0
                    self._last_scan = now
                    self._graph_scanned = seq
                    self._next_scan = now + max(MIN_SCAN_INTERVAL,
                                                SCAN_COST_FACTOR * self.scan_seconds)
                    # records of tasks that finished during the count are news to it
                    late, self._cursor = stream.read(self._cursor, copy=False)
                if now >= self._workers_at + WORKERS_INTERVAL:
                    try:
                        info = self._scheduler_info()
                    except Exception:  # the cluster is closing: keep the last table
                        info = None
                if info is not None:
                    self._workers_at = now
                    workers = worker_rows(info.get("workers", {}), self.process_stats)
                    self.process_stats.forget_except({w["pid"] for w in workers})
            with self._lock:
                if graph is not None:
                    self.graph = graph
                self.window.add(records)
                self.progress.add_records(records)
                if states is not None:
                    self.progress.set_states(states)
                if late:
                    self.window.add(late)
                    self.progress.add_records(late)
                if processing is not None:
                    self.progress.set_processing(processing)
                if self.graph is not None:
                    self.graph.add_records(records)
                    self.graph.add_records(late)
                self.memory.add(samples)
                if workers is not None:
                    self.workers = workers
                    self.scheduler = info
                self.now = now
                self.ticks += 1

    # -- payloads (HTTP handler threads) ---------------------------------------------

    def answer(self, request: Any, build: Callable[[], Any]) -> Any:
        """``build()``'s answer to ``request``, built once per refresh: pages loaded
        together ask the same questions, and the scheduler's process pays for one."""
        with self._answers_lock:
            key = (request, self.ticks)
            body = self._answers.get(key)
            if body is None:
                if len(self._answers) >= 64:
                    self._answers.clear()
                body = self._answers[key] = build()
            return body

    def info_payload(self) -> dict[str, Any]:
        with self._lock:
            workers = list(self.workers)
            scheduler = self.scheduler
            now = self.now
        more = {"started": scheduler.get("started", getattr(self.engine, "started", None)),
                "scheduler": scheduler.get("address"), "id": scheduler.get("id"),
                "pid": os.getpid()}
        more.update(self._describe())  # the cluster's own word wins
        return info_payload(workers, now, getattr(self.engine, "tasks_done", 0), live=True,
                            **more)

    def workers_payload(self) -> dict[str, Any]:
        with self._lock:
            return {"now": self.now, "workers": list(self.workers)}

    def progress_payload(self) -> dict[str, Any]:
        with self._lock:
            rows = self.progress.rows(self.window.colors())
            now = self.now
        return progress_payload(rows, now, getattr(self.engine, "tasks_done", 0))

    def task_stream_payload(self, since: int | None, window: float) -> dict[str, Any]:
        with self._lock:
            return self.window.since(since, self.now, window)

    def memory_payload(self, since: int | None) -> dict[str, Any]:
        with self._lock:
            return self.memory.since(since)

    def graph_payload(self) -> dict[str, Any]:
        with self._lock:
            graph = self.graph
        if graph is None:
            return no_graph()
        state = self.engine.state  # reassigned by a restart: read it once

        def state_of(key: Any) -> str | None:
            try:
                ts = state.tasks.get(key)
            except TypeError:
                return None
            return None if ts is None else ts.state

        with self._lock:  # the view's finished set grows under this lock
            return graph.payload(state_of)
