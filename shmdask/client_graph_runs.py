"""A Client as the scheduler of ``shmdask.compute`` / ``get``: run a graph, fetch its keys.

In: a prepared graph (or its pieces, for a huge one) and the keys wanted, from
:func:`shmdask.base.compute` through ``run_graph``.  Out: ``{key: value}``, or
what a ``finalize`` makes of read-only views of the values, and one Gantt
picture per run when the client has a ``report_dir``.

No Future per key: a run waits on one :class:`GraphWaiter` and lets go of all
its keys in one message, so its per-key cost on the client is a counter
decrement.  :class:`GraphRuns` is a part of :class:`~shmdask.client.Client`
(it uses the client's connection, ``_check_alive``, ``_listener``, ``_fetch``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from shmdask import base
from shmdask.futures import CancelledError

if TYPE_CHECKING:  # pragma: no cover
    from shmdask.client import Client


class GraphWaiter:
    """Listener for the keys of one run: done when all are in memory or one
    failed (the first error is kept, as dask raises the first it sees)."""

    __slots__ = ("pending", "error", "event", "also", "also_many", "_lock")

    def __init__(self, keys: list, also: Callable | None = None,
                 also_many: Callable | None = None):
        self.pending = len(keys)
        self.error: BaseException | None = None
        self.event = threading.Event()
        # who else hears each key: ``also(key, status, exc)``, or for a batch of
        # keys in memory ``also_many(keys, status)`` where given
        self.also = also
        self.also_many = also_many
        self._lock = threading.Lock()
        if not keys:
            self.event.set()

    def __call__(self, key: Any, status: str, exc: BaseException | None) -> None:
        if status == "memory":
            self.many((key,), status)
            return
        if self.also is not None:
            self.also(key, status, exc)
        if status == "pending":  # not an outcome (an input runs again): keep waiting
            return
        with self._lock:
            if self.error is None:
                self.error = exc if exc is not None else CancelledError(
                    f"key {key!r} was {status}")
                self.event.set()
            self.pending -= 1
            if self.pending <= 0:
                self.event.set()

    def many(self, keys: list | tuple, status: str) -> None:
        """Several keys in memory at once (the engine's batch form of the call);
        the one place a key in memory is counted."""
        if status != "memory":
            for key in keys:
                self(key, status, None)
            return
        if self.also_many is not None:
            self.also_many(keys, status)
        elif self.also is not None:
            also = self.also
            for key in keys:
                also(key, status, None)
        with self._lock:
            self.pending -= len(keys)
            if self.pending <= 0:
                self.event.set()


def futures_in(dsk: Mapping) -> list:
    """The Futures among a graph's entries (tasks, the bulk, are passed over
    at the cost of a type check)."""
    is_future = base.is_future
    return [v for v in dsk.values() if type(v) is not tuple and is_future(v)]


def strip_futures(dsk: Mapping, dependencies: Mapping, priorities: Mapping | None,
                  client: Client, futures: list | None = None) -> tuple:
    """Graph entries that are Futures are data already on the cluster (``client``'s:
    another client's keys mean nothing to this one's scheduler).  ``futures``:
    :func:`futures_in` of ``dsk``, when the caller has it already."""
    if futures is None:
        futures = futures_in(dsk)
    if not futures:
        return dsk, dependencies, priorities
    for v in futures:
        if v.client is not client:
            raise ValueError(f"future {v.key!r} belongs to another client ({v.client.id}); "
                             f"a graph sent through {client!r} can only use its own "
                             "futures (gather the value and scatter it, or submit the "
                             "work through the future's client)")
    keep = {k: v for k, v in dsk.items() if not base.is_future(v)}
    deps = {k: dependencies[k] for k in keep}
    prio = {k: priorities[k] for k in keep} if priorities else priorities
    return keep, deps, prio


class GraphRuns:
    """``run_graph`` and ``run_graph_pieces``: the scheduler interface of a Client."""

    finalizes_views = True  # run_graph takes finalize= (see base._run)

    def run_graph(self: Client, dsk: Mapping, dependencies: Mapping, keys: list,
                  priorities: Mapping, finalize: Callable[[dict], Any] | None = None) -> Any:
        """Run a graph and fetch ``keys``.

        With ``finalize``, returns ``finalize({key: value})``, called on
        read-only views of shared memory while the keys are still held: a
        finalizer that copies what it keeps (concatenating chunks) makes the
        one copy of the data."""
        self._check_alive()
        # Work still running for persisted Futures this graph waits on counts
        # too, or the bar would sit at "1/1 tasks" until they finish.
        futures = futures_in(dsk)
        waits_on_running = any(not v.done() for v in futures)
        earlier = (self.connection.unfinished_tasks() or 0) if waits_on_running else 0
        dsk, dependencies, priorities = strip_futures(dsk, dependencies, priorities, self,
                                                      futures)
        first = self._stream_position()
        # Futures of this client may wait on the same keys: they hear too.
        waiter = GraphWaiter(keys, self._listener, self._listener_many)
        self.connection.submit(dsk, dependencies, keys, priorities, waiter)
        return self._finish_run(waiter, keys, len(dsk) + earlier, finalize, first)

    def run_graph_pieces(self: Client, pieces: Iterable[tuple], keys: list,
                         finalize: Callable[[dict], Any] | None = None) -> Any:
        """``run_graph`` for a huge graph given in pieces (:func:`shmdask.graph.order_pieces`):
        each piece goes to the scheduler as soon as it is made."""
        self._check_alive()
        first = self._stream_position()
        waiter = GraphWaiter(keys, self._listener, self._listener_many)
        # On an error (a cycle found half-way) it lets go of what it sent.
        total = self.connection.submit_pieces(
            (strip_futures(*piece, self) for piece in pieces), keys, waiter)
        return self._finish_run(waiter, keys, total, finalize, first)

    def _finish_run(self: Client, waiter: GraphWaiter, keys: list, total: int,
                    finalize: Callable[[dict], Any] | None, first: tuple[int, int]) -> Any:
        """Wait for a submitted run, fetch its results, then let go of its keys."""
        try:
            self._wait_with_progress(waiter, total)
            return self._fetch_results(waiter, keys, finalize)
        finally:
            if not self.closed:
                self.connection.unwant(keys)  # the scheduler may release them now
            if self.report_dir is not None:
                self._write_report(first)

    def _fetch_results(self: Client, waiter: GraphWaiter, keys: list,
                       finalize: Callable[[dict], Any] | None) -> Any:
        """A finished graph's ``{key: value}`` (or ``finalize`` of read-only views
        of them), while its keys are still held; its first error if one failed."""
        if waiter.error is not None:
            raise waiter.error
        if finalize is None:
            return self._fetch(keys)
        self._check_alive()
        return finalize(self.connection.fetch_views(list(dict.fromkeys(keys))))

    def _wait_with_progress(self: Client, waiter: GraphWaiter, total: int) -> None:
        """Wait for a graph's keys, with a progress bar for runs longer than a second."""
        from shmdask.diagnostics.progress import make_progress_bar

        bar = make_progress_bar()
        done_at_start = self.connection.tasks_done()
        bar.start(total)
        failed = True
        try:
            while not waiter.event.wait(0.1):
                self._check_alive()
                bar.update(min(total, self.connection.tasks_done() - done_at_start))
            failed = waiter.error is not None
            if not failed:
                bar.update(total)
        finally:
            bar.finish(failed=failed)

    def _stream_position(self: Client) -> tuple[int, int]:
        """Where the task stream's records and memory samples are now."""
        stream = self.connection.task_stream()
        return stream.position, stream.memory_position

    def _write_report(self: Client, first: tuple[int, int]) -> None:
        """One Gantt picture per run into ``report_dir``: the tasks since ``first``."""
        import os

        from shmdask.diagnostics.gantt import plot_task_stream

        stream = self.connection.task_stream()
        records = stream.records_since(first[0])
        if not records:
            return
        os.makedirs(self.report_dir, exist_ok=True)
        self._reports += 1
        name = f"compute-{time.strftime('%Y%m%d-%H%M%S')}-{self._reports:03d}.png"
        plot_task_stream(records, stream.memory_since(first[1]),
                         filename=os.path.join(self.report_dir, name))
