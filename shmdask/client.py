"""Client and Future: dask.distributed's user API over the one engine.

A Client talks to a scheduler through a *connection* with a handful of
verbs (submit a graph, scatter, unwant keys, fetch values, describe the
cluster).  :class:`LocalConnection` calls an in-process engine directly (a
``LocalCluster`` of worker processes, or threads); the TCP transport
provides the same verbs for ``Client("tcp://host:port")``.

Futures are references: a key's data stays on the cluster while at least
one Future (or persisted collection holding one) for it is alive; when the
last one is garbage-collected the client tells the scheduler to release
it.  The scheduler answers through a listener that completes the Future's
shared :class:`_KeyStatus` on the engine thread::

    user thread                       engine thread
    client.submit(f, x) ─ graph ──▶  state.update_graph ... task runs ...
    future.result() waits on  ◀──── listener(key, "memory" | "erred", exc)
      then fetches the value (shared memory -> private copy, in this thread)

While a Client is open it is the default scheduler of ``compute``,
``persist``, ``get`` and ``.compute()`` (``set_as_default=True``); closing it
restores the previous default.
"""

from __future__ import annotations

import atexit
import html
import itertools
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from shmdask import base, config
from shmdask.delayed import _call, _funcname, unpack_collections
from shmdask.diagnostics.task_stream import TaskStream, TaskStreamContext
from shmdask.graph import flatten
from shmdask.tokenize import tokenize
from shmdask.units import format_bytes

# -- key status and futures ------------------------------------------------------


class CancelledError(Exception):
    """The future was cancelled (or its data dropped by ``restart``)."""


class _KeyStatus:
    """What a client knows about one key; shared by all its Futures."""

    __slots__ = ("event", "status", "exception", "callbacks")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.status = "pending"
        self.exception: BaseException | None = None
        self.callbacks: list[Callable] = []

    def finish(self, status: str, exception: BaseException | None) -> None:
        self.status = "finished" if status == "memory" else (
            "cancelled" if status == "cancelled" else "error")
        self.exception = exception
        self.event.set()
        callbacks, self.callbacks = self.callbacks, []
        for cb in callbacks:
            cb()


class Future:
    """A remote result: ``.result()``, ``.done()``, ``.exception()``, ``.cancel()``."""

    _shmdask_future = True

    def __init__(self, key: Any, client: Client, status: _KeyStatus | None = None):
        self.key = key
        self.client = client
        self._status = status if status is not None else client._hold(key)[0]

    @property
    def status(self) -> str:
        return self._status.status

    def done(self) -> bool:
        return self._status.event.is_set()

    def _wait(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        event = self._status.event
        while not event.wait(0.1):  # short waits keep Ctrl-C responsive
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"future {self.key!r} not done after {timeout} s")
            self.client._check_alive()

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        st = self._status
        if st.status == "error":
            raise st.exception
        if st.status == "cancelled":
            raise CancelledError(f"future {self.key!r} was cancelled")
        return self.client._fetch([self.key])[self.key]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._status.exception

    def cancel(self) -> None:
        self.client.cancel([self])

    def cancelled(self) -> bool:
        return self._status.status == "cancelled"

    def add_done_callback(self, fn: Callable[[Future], None]) -> None:
        with self.client._lock:
            if not self.done():
                self._status.callbacks.append(lambda: fn(self))
                return
        fn(self)

    def __del__(self) -> None:
        try:
            self.client._drop(self.key, self._status)
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"<Future: {self.status}, key: {self.key!r}>"

    def _repr_html_(self) -> str:
        return f"<b>Future: {html.escape(str(self.key))}</b> status: {self.status}"

    def __reduce__(self) -> tuple:
        raise TypeError(
            "a Future cannot be pickled into a task; pass it as an argument to "
            "client.submit or a delayed function and it becomes its value"
        )

    def __await__(self):  # pragma: no cover - convenience for notebooks
        yield from ()
        return self.result()


# -- connections ----------------------------------------------------------------


class LocalConnection:
    """The connection verbs on an engine in this process."""

    def __init__(self, cluster: Any):
        self.cluster = cluster
        self.engine = cluster.engine

    def submit(self, dsk, dependencies, wanted, priorities, listener) -> None:
        self.engine.submit(dsk, dependencies, wanted, priorities, listener)

    def scatter(self, items: Mapping, listener) -> None:
        self.engine.scatter(items, listener)

    def unwant(self, keys: list) -> None:
        self.engine.unwant(keys)

    def fetch(self, keys: list) -> dict:
        data, store = self.engine.data, self.engine.store
        return {k: store.to_user(data[k]) for k in keys}

    def scheduler_info(self) -> dict:
        return self.cluster.scheduler_info()

    def task_stream(self) -> TaskStream:
        return self.engine.task_stream

    def tasks_done(self) -> int:
        return self.engine.tasks_done

    def unfinished_tasks(self) -> int:
        """Tasks the scheduler has yet to finish (asked on its own thread)."""
        unfinished = ("waiting", "ready", "processing")
        return self.engine.call(
            lambda e: sum(ts.state in unfinished for ts in e.state.tasks.values()))

    def restart(self) -> None:
        self.cluster.restart()

    def alive(self) -> bool:
        return not self.engine.closed

    def close(self) -> None:
        pass


# -- the client -------------------------------------------------------------------

_client_ids = itertools.count()


class Client:
    """Connect to a cluster: ``Client()``, ``Client(cluster)``, ``Client("host:port")``."""

    def __init__(self, address: Any = None, *, set_as_default: bool = True,
                 timeout: float = 10, report_dir: str | None = None, **cluster_kwargs: Any):
        self.id = f"Client-{uuid.uuid4().hex[:8]}"
        self._lock = threading.RLock()
        self._refcount: dict = {}
        self._status: dict[Any, _KeyStatus] = {}
        self._owns_cluster = False
        self.cluster: Any = None
        self.closed = False
        if address is None:
            from shmdask.cluster.local_cluster import LocalCluster

            if report_dir is not None:
                cluster_kwargs["report_dir"] = report_dir
            self.cluster = LocalCluster(**cluster_kwargs)
            self._owns_cluster = True
            self.connection: Any = LocalConnection(self.cluster)
        elif hasattr(address, "engine"):
            self.cluster = address
            self.connection = LocalConnection(address)
        elif isinstance(address, str):
            from shmdask.cluster.tcp import connect_client

            connect_options = {k: cluster_kwargs.pop(k) for k in
                               ("auth_key", "tls_ca", "tls_cert", "tls_key")
                               if k in cluster_kwargs}
            if cluster_kwargs:
                raise TypeError(f"Client(address) got unexpected keyword argument(s) "
                                f"{', '.join(sorted(cluster_kwargs))}")
            self.connection = connect_client(address, timeout=timeout, **connect_options)
        else:
            raise TypeError(
                f"Client() takes a cluster, an address like '127.0.0.1:8786' or nothing, "
                f"not {type(address).__name__}"
            )
        if report_dir is None and self.cluster is not None:
            report_dir = getattr(self.cluster, "report_dir", None)
        self.report_dir = report_dir
        self._reports = 0
        stream = self.connection.task_stream()
        self._plot_from = (stream.position, stream.memory_position)
        self._previous_default: Any = None
        self._default_set = None
        if set_as_default:
            self._previous_default = config.get("scheduler")
            config.set(scheduler=self)
            self._default_set = True
        self._finalizer = weakref.finalize(self, _close_quietly, weakref.ref(self))

    # -- bookkeeping of keys held by Futures ----------------------------------------

    def _hold(self, key: Any) -> tuple[_KeyStatus, bool]:
        """One more Future for ``key``; True when this client did not hold it yet
        (the scheduler counts one reference per client, not per Future)."""
        with self._lock:
            n = self._refcount.get(key, 0)
            self._refcount[key] = n + 1
            st = self._status.get(key)
            if st is None:
                st = self._status[key] = _KeyStatus()
            return st, n == 0

    def _new_futures(self, keys: list) -> tuple[list[Future], list]:
        """Futures for keys, and the keys the scheduler must be told we want."""
        futures, new = [], []
        for k in keys:
            st, is_new = self._hold(k)
            futures.append(Future(k, self, st))
            if is_new:
                new.append(k)
        return futures, new

    def _drop(self, key: Any, status: _KeyStatus) -> None:
        with self._lock:
            if self._status.get(key) is not status:  # cancelled or restarted already
                return
            n = self._refcount[key] - 1
            if n > 0:
                self._refcount[key] = n
                return
            self._refcount.pop(key, None)
            self._status.pop(key, None)
        if not self.closed:
            self.connection.unwant([key])

    def _listener(self, key: Any, status: str, exc: BaseException | None) -> None:
        with self._lock:
            st = self._status.get(key)
        if st is not None and not st.event.is_set():
            st.finish(status, exc)

    def _check_alive(self) -> None:
        if self.closed:
            raise CancelledError("the client was closed")
        if not self.connection.alive():
            raise ConnectionError("lost the connection to the scheduler")

    def _fetch(self, keys: list) -> dict:
        self._check_alive()
        return self.connection.fetch(keys)

    # -- submitting work ---------------------------------------------------------------

    def _submit_graph(self, dsk: Mapping, keys: list, optimize: bool = False) -> list[Future]:
        """Send a graph; returns one Future per key of ``keys``."""
        self._check_alive()
        dsk, deps, prio = _prepare_for_cluster(dsk, keys, optimize)
        futures, new = self._new_futures(keys)  # hold before the engine can answer
        self.connection.submit(dsk, deps, new, prio, self._listener)
        return futures

    def submit(self, func: Callable, *args: Any, key: Any = None, pure: bool = True,
               **kwargs: Any) -> Future:
        """Run ``func(*args, **kwargs)`` on the cluster; Futures in args become values."""
        if not callable(func):
            raise TypeError(f"submit() needs a callable, not {type(func).__name__}")
        d = _call(func, args, kwargs, pure=pure, name=None, key=key, nout=None)
        return self._submit_graph(d.dask, [d.key])[0]

    def map(self, func: Callable, *iterables: Iterable, key: Any = None, pure: bool = True,
            **kwargs: Any) -> list[Future]:
        """``submit`` over zipped iterables, as one graph."""
        dsk: dict = {}
        keys = []
        for i, args in enumerate(zip(*iterables, strict=False)):
            k = f"{key}-{i}" if isinstance(key, str) else (key[i] if key else None)
            d = _call(func, args, kwargs, pure=pure, name=None, key=k, nout=None)
            dsk.update(d.dask)
            keys.append(d.key)
        return self._submit_graph(dsk, keys)

    def compute(self, collections: Any, sync: bool = False, optimize_graph: bool = True,
                **kwargs: Any) -> Any:
        """Start computing collection(s); returns Future(s) of their final values."""
        single = not isinstance(collections, list | tuple)
        colls = [collections] if single else list(collections)
        dsk: dict = {}
        keys = []
        for c in colls:
            if not base.is_collection(c):
                raise TypeError(f"client.compute() needs collections, got {type(c).__name__}")
            graph, (ks,) = base.collections_to_graph([c], optimize_graph)
            finalize, extra = c.__shmdask_postcompute__()
            key = f"finalize-{tokenize(ks, uuid.uuid4().hex)}"
            dsk.update(graph)
            dsk[key] = (finalize, ks, *extra)
            keys.append(key)
        futures = self._submit_graph(dsk, keys, optimize=optimize_graph)
        if sync:
            results = self.gather(futures)
            return results[0] if single else results
        return futures[0] if single else futures

    def persist(self, collections: Any, optimize_graph: bool = True, **kwargs: Any) -> Any:
        """Compute collections on the cluster and keep their data there."""
        single = not isinstance(collections, list | tuple)
        colls = [collections] if single else list(collections)
        out = self.persist_collections(colls, optimize_graph)
        return out[0] if single else out

    def persist_collections(self, collections: list, optimize: bool) -> list:
        dsk, keys = base.collections_to_graph(collections, optimize)
        flat = list(dict.fromkeys(k for ks in keys for k in flatten(ks)))
        futures = dict(zip(flat, self._submit_graph(dsk, flat, optimize), strict=True))
        out = []
        for c, ks in zip(collections, keys, strict=True):
            rebuild, extra = c.__shmdask_postpersist__()
            out.append(rebuild({k: futures[k] for k in flatten(ks)}, *extra))
        return out

    def run_graph(self, dsk: Mapping, dependencies: Mapping, keys: list,
                  priorities: Mapping) -> dict:
        """The scheduler interface of ``shmdask.compute``/``get``: run and fetch."""
        self._check_alive()
        # Work still running for persisted Futures this graph waits on counts
        # too, or the bar would sit at "1/1 tasks" until they finish.
        waits_on_running = any(base.is_future(v) and not v.done() for v in dsk.values())
        running = getattr(self.connection, "unfinished_tasks", None)
        earlier = running() if waits_on_running and running is not None else 0
        dsk, dependencies, priorities = _strip_futures(dsk, dependencies, priorities)
        stream = self.connection.task_stream()
        first = (stream.position, stream.memory_position)
        futures, new = self._new_futures(keys)
        self.connection.submit(dsk, dependencies, new, priorities, self._listener)
        try:
            self._wait_with_progress(futures, len(dsk) + earlier)
            values = self.gather(futures)
        finally:
            del futures  # releases the keys on the cluster
            if self.report_dir is not None:
                self._write_report(stream, first)
        return dict(zip(keys, values, strict=True))

    def _wait_with_progress(self, futures: list[Future], total: int) -> None:
        """Wait for futures, with a progress bar for runs longer than a second."""
        from shmdask.diagnostics.progress import make_progress_bar

        bar = make_progress_bar()
        done_at_start = self.connection.tasks_done()
        bar.start(total)
        failed = True
        try:
            for f in futures:
                while not f._status.event.wait(0.1):
                    self._check_alive()
                    bar.update(min(total, self.connection.tasks_done() - done_at_start))
            failed = any(f._status.status != "finished" for f in futures)
            if not failed:
                bar.update(total)
        finally:
            bar.finish(failed=failed)

    def _write_report(self, stream: TaskStream, first: tuple[int, int]) -> None:
        """One Gantt picture per compute into ``report_dir``."""
        import os

        from shmdask.diagnostics.gantt import plot_task_stream

        records = stream.records_since(first[0])
        if not records:
            return
        os.makedirs(self.report_dir, exist_ok=True)
        self._reports += 1
        name = f"compute-{time.strftime('%Y%m%d-%H%M%S')}-{self._reports:03d}.png"
        plot_task_stream(records, stream.memory_since(first[1]),
                         filename=os.path.join(self.report_dir, name))

    def get_task_stream(self, plot: bool = False, filename: str | None = None
                        ) -> TaskStreamContext:
        """``with client.get_task_stream() as ts: ...``: ``ts.data`` holds the
        records of the tasks run inside the block; ``ts.plot()`` draws them."""
        return TaskStreamContext(self.connection.task_stream, plot=plot, filename=filename)

    def plot_task_stream(self, filename: str | None = None) -> Any:
        """Draw every task since the client started, or since the last call."""
        from shmdask.diagnostics.gantt import plot_task_stream

        stream = self.connection.task_stream()
        records = stream.records_since(self._plot_from[0])
        memory = stream.memory_since(self._plot_from[1])
        self._plot_from = (stream.position, stream.memory_position)
        return plot_task_stream(records, memory, filename=filename)

    def get(self, dsk: Mapping, keys: Any, **kwargs: Any) -> Any:
        return base.get(dsk, keys, scheduler=self, **kwargs)

    def gather(self, futures: Any, errors: str = "raise") -> Any:
        """Wait for Futures (in any nesting of lists/tuples/dicts) and fetch values."""
        flat = [f for f in _iter_futures(futures)]
        for f in flat:
            f._wait(None)
        wanted = []
        for f in flat:
            st = f._status
            if st.status == "error":
                if errors == "raise":
                    raise st.exception
            elif st.status == "cancelled":
                if errors == "raise":
                    raise CancelledError(f"future {f.key!r} was cancelled")
            else:
                wanted.append(f.key)
        values = self._fetch(list(dict.fromkeys(wanted))) if wanted else {}
        return _replace_futures(futures, values)

    def scatter(self, data: Any, broadcast: bool = False, hash: bool = True) -> Any:
        """Put data into the cluster's store once; returns Future(s).

        numpy arrays go to shared memory, and every task on every worker then
        maps them zero-copy (read-only).
        """
        self._check_alive()
        if isinstance(data, dict):
            items = {k: v for k, v in data.items()}
            keyed = {k: k for k in data}
        else:
            seq = data if isinstance(data, list | tuple) else [data]
            keyed = {}
            items = {}
            for i, v in enumerate(seq):
                k = f"{type(v).__name__}-{uuid.uuid4().hex}"
                keyed[i] = k
                items[k] = v
        held, new = self._new_futures(list(items))
        futures = {f.key: f for f in held}
        self.connection.scatter({k: items[k] for k in new}, self._listener)
        if isinstance(data, dict):
            return {k: futures[k] for k in data}
        out = [futures[keyed[i]] for i in range(len(keyed))]
        if isinstance(data, list | tuple):
            return type(data)(out) if isinstance(data, list) else tuple(out)
        return out[0]

    def cancel(self, futures: Any) -> None:
        """Stop computing (or drop) these keys; their Futures become cancelled."""
        for f in _iter_futures(futures):
            with self._lock:
                held = self._refcount.pop(f.key, None) is not None
                st = self._status.pop(f.key, None)
            if st is not None and not st.event.is_set():
                st.finish("cancelled", CancelledError(f"future {f.key!r} was cancelled"))
            elif st is not None and st.status == "finished":
                st.status = "cancelled"
            if held:
                self.connection.unwant([f.key])

    def restart(self) -> Client:
        """Replace the workers and drop all data; existing Futures are cancelled."""
        with self._lock:
            statuses = list(self._status.values())
            self._status.clear()
            self._refcount.clear()
        for st in statuses:  # their data is gone, finished or not
            st.finish("cancelled", CancelledError("the cluster was restarted"))
        self.connection.restart()
        return self

    # -- information -----------------------------------------------------------------

    def scheduler_info(self) -> dict:
        return self.connection.scheduler_info()

    def nthreads(self) -> dict:
        return {w: info["nthreads"] for w, info in self.scheduler_info()["workers"].items()}

    @property
    def dashboard_link(self) -> str | None:
        """The live dashboard's address, as in dask (None when the scheduler has none)."""
        if self.cluster is not None:
            return getattr(self.cluster, "dashboard_link", None)
        from shmdask.diagnostics.dashboard.service import dashboard_link_of

        try:
            return dashboard_link_of(self.scheduler_info(),
                                     getattr(self.connection, "address", None))
        except Exception:  # describing must never fail
            return None

    def __repr__(self) -> str:
        if self.closed:
            return f"<Client: {self.id} closed>"
        try:
            info = self.scheduler_info()
        except Exception:  # describing must never fail
            return f"<Client: {self.id}>"
        workers = info.get("workers", {})
        threads = sum(w.get("nthreads", 0) for w in workers.values())
        memory = sum(w.get("memory_limit", 0) or 0 for w in workers.values())
        link = self.dashboard_link
        return (f"<Client: {info.get('address', 'inproc')} processes={len(workers)} "
                f"threads={threads}, memory={format_bytes(memory)}"
                f"{f', dashboard={link}' if link else ''}>")

    def _repr_html_(self) -> str:
        if self.closed:
            return f"<b>Client {self.id}</b>: closed"
        info = self.scheduler_info()
        rows = "".join(
            f"<tr><td>{html.escape(str(wid))}</td><td>{w.get('kind', '')}</td>"
            f"<td>{w.get('nthreads', '')}</td><td>{format_bytes(w.get('memory_limit') or 0)}"
            f"</td><td>{format_bytes(w.get('metrics', {}).get('memory', 0))}</td></tr>"
            for wid, w in info.get("workers", {}).items()
        )
        link = self.dashboard_link
        dashboard = (f'<br>Dashboard: <a href="{html.escape(link)}" target="_blank">'
                     f"{html.escape(link)}</a>" if link else "")
        return (
            f"<div><b>Client</b> {html.escape(self.id)} &mdash; scheduler "
            f"{html.escape(str(info.get('address', 'inproc')))}{dashboard}"
            "<table><tr><th>worker</th><th>kind</th><th>threads</th><th>memory limit</th>"
            f"<th>memory</th></tr>{rows}</table></div>"
        )

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._default_set and config.get("scheduler") is self:
            config.set(scheduler=self._previous_default)
        with self._lock:
            statuses = list(self._status.values())
            held = list(self._refcount)
            self._status.clear()
            self._refcount.clear()
        for st in statuses:
            if not st.event.is_set():
                st.finish("cancelled", CancelledError("the client was closed"))
        try:
            if held and self.connection.alive():
                self.connection.unwant(held)  # the cluster may outlive this client
            self.connection.close()
        finally:
            if self._owns_cluster and self.cluster is not None:
                self.cluster.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_quietly(ref: weakref.ref) -> None:
    client = ref()
    if client is not None:
        client.close()


# -- helpers ------------------------------------------------------------------------


def _strip_futures(dsk: Mapping, dependencies: Mapping, priorities: Mapping | None) -> tuple:
    """Graph entries that are Futures are data already on the cluster."""
    if not any(base.is_future(v) for v in dsk.values()):
        return dsk, dependencies, priorities
    keep = {k: v for k, v in dsk.items() if not base.is_future(v)}
    deps = {k: dependencies[k] for k in keep}
    prio = {k: priorities[k] for k in keep} if priorities else priorities
    return keep, deps, prio


def _prepare_for_cluster(dsk: Mapping, keys: list, optimize: bool) -> tuple:
    prepared, deps, prio = base.prepare_graph(dsk, keys, optimize)
    return _strip_futures(prepared, deps, prio)


def _iter_futures(x: Any) -> Iterator[Future]:
    if isinstance(x, Future):
        yield x
    elif isinstance(x, list | tuple | set):
        for i in x:
            yield from _iter_futures(i)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _iter_futures(v)


def _replace_futures(x: Any, values: Mapping) -> Any:
    if isinstance(x, Future):
        return values.get(x.key)
    if isinstance(x, list | tuple):
        return type(x)(_replace_futures(i, values) for i in x)
    if isinstance(x, dict):
        return {k: _replace_futures(v, values) for k, v in x.items()}
    return x


# -- waiting helpers (dask.distributed's wait / as_completed) -----------------------


def wait(fs: Any, timeout: float | None = None, return_when: str = "ALL_COMPLETED") -> tuple:
    """Wait for futures; returns ``(done, not_done)`` sets."""
    futures = list(_iter_futures(fs))
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done = {f for f in futures if f.done()}
        if len(done) == len(futures) or (return_when == "FIRST_COMPLETED" and done):
            return done, set(futures) - done
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{len(futures) - len(done)} futures not done after {timeout} s")
        time.sleep(0.005)


class as_completed:  # noqa: N801 - dask's name
    """Iterate over futures in the order they finish."""

    def __init__(self, futures: Iterable = (), with_results: bool = False):
        self._pending: list[Future] = list(futures)
        self._with_results = with_results

    def add(self, future: Future) -> None:
        self._pending.append(future)

    def __iter__(self) -> Iterator:
        while self._pending:
            for f in list(self._pending):
                if f.done():
                    self._pending.remove(f)
                    yield (f, f.result()) if self._with_results else f
            if self._pending:
                time.sleep(0.002)

    def count(self) -> int:
        return len(self._pending)


# -- the process scheduler without a Client ------------------------------------------

_default_client: Client | None = None
_default_lock = threading.Lock()


def default_process_client() -> Client:
    """``scheduler="processes"``: one LocalCluster made on first use, closed at exit."""
    global _default_client
    with _default_lock:
        if _default_client is None or _default_client.closed:
            _default_client = Client(set_as_default=False)
            atexit.register(_default_client.close)
        return _default_client


__all__ = ["Client", "Future", "wait", "as_completed", "CancelledError", "_funcname",
           "unpack_collections"]
