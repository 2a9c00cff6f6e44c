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
shared :class:`~shmdask.futures.KeyStatus` on the engine thread::

    user thread                       engine thread
    client.submit(f, x) ─ graph ──▶  state.update_graph ... task runs ...
    future.result() waits on  ◀──── listener(key, "memory" | "erred", exc)
      then fetches the value (shared memory -> private copy, in this thread)

While a Client is open it is the default scheduler of ``compute``,
``persist``, ``get`` and ``.compute()`` (``set_as_default=True``); closing it
restores the previous default.

Futures, ``wait`` and ``as_completed`` live in :mod:`shmdask.futures`;
dask's scheduling options (``priority=``, ``retries=``, ...) are checked in
:mod:`shmdask.annotations`.  ``Client(asynchronous=True)`` is awaited
(``await Client(...)``, ``async with Client(...)``: :mod:`shmdask.start_on_await`);
its blocking verbs then return awaitables that run in the event loop's
executor, so the loop keeps serving while tasks run.

Here: starting, the bookkeeping of held keys, submitting, gathering,
scattering, cancelling, closing.  The parts of a Client that live elsewhere:
``run_graph`` (the scheduler of ``compute``/``get``) in
:mod:`shmdask.client_graph_runs`; descriptions, the task stream and
scheduler-side calls (``run``, ``retire_workers``, ...) in
:mod:`shmdask.client_cluster_calls`; the default client and the open clients
of this process in :mod:`shmdask.client_defaults`.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shmdask import base, config
from shmdask.annotations import scheduling_options
from shmdask.client_cluster_calls import ClusterCalls
from shmdask.client_defaults import default_client, note_default, note_open
from shmdask.client_graph_runs import GraphRuns, strip_futures
from shmdask.connection import LocalConnection
from shmdask.delayed import _call
from shmdask.event_loops import LoopThread, in_event_loop
from shmdask.futures import (
    CallbackThread,
    CancelledError,
    Future,
    KeyStatus,
    as_completed,
    fire_and_forget,
    futures_of,
    wait,
)
from shmdask.graph import flatten
from shmdask.interop import make_dask_default, undo_dask_default
from shmdask.start_on_await import StartOnAwait
from shmdask.tokenize import tokenize
from shmdask.units import parse_timedelta


class Client(StartOnAwait, GraphRuns, ClusterCalls):
    """Connect to a cluster: ``Client()``, ``Client(cluster)``, ``Client("host:port")``.

    ``Client(asynchronous=True)`` starts when awaited: ``client = await
    Client(asynchronous=True)`` or ``async with Client(asynchronous=True) as c``.
    """

    def __init__(self, address: Any = None, *, set_as_default: bool = True,
                 timeout: Any = None, report_dir: str | None = None,
                 asynchronous: bool = False, name: str | None = None, **cluster_kwargs: Any):
        self.id = f"Client-{uuid.uuid4().hex[:8]}"
        self.name = name
        self._lock = threading.RLock()
        self._held: dict[Any, KeyStatus] = {}  # keys some Future of ours holds
        self._forgotten: set = set()  # fire_and_forget keys: let go of when finished
        self._callbacks = CallbackThread(f"shmdask-callbacks-{self.id}")
        self._loop_thread: LoopThread | None = None
        self._owns_cluster = False
        self.cluster: Any = None
        self.connection: Any = None
        self.closed = False
        self.started = False
        self._dask_undo: tuple | None = None
        self.report_dir = report_dir
        self._reports = 0
        self._previous_default: Any = None
        self._default_set = None
        self._asynchronous = bool(asynchronous)
        self._start_args = (address, set_as_default, timeout, report_dir, cluster_kwargs)
        self._start_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_quietly, weakref.ref(self))
        if not asynchronous:
            self._start()

    def _start(self) -> None:
        """Make or join the cluster (blocking; an asynchronous client runs it in
        the event loop's executor)."""
        with self._start_lock:
            if self.started:
                return
            address, set_as_default, timeout, report_dir, cluster_kwargs = self._start_args
            cluster_kwargs = dict(cluster_kwargs)
            if address is None:
                from shmdask.cluster.local_cluster import LocalCluster

                if report_dir is not None:
                    cluster_kwargs["report_dir"] = report_dir
                self.cluster = LocalCluster(**cluster_kwargs)
                self._owns_cluster = True
                self.connection = LocalConnection(self.cluster)
            elif hasattr(address, "engine"):
                self.cluster = address
                self.connection = LocalConnection(address)
            elif isinstance(address, str):
                from shmdask.cluster.tcp_client import connect_client

                connect_options = {k: cluster_kwargs.pop(k) for k in
                                   ("auth_key", "tls_ca", "tls_cert", "tls_key")
                                   if k in cluster_kwargs}
                if cluster_kwargs:
                    raise TypeError(f"Client(address) got unexpected keyword argument(s) "
                                    f"{', '.join(sorted(cluster_kwargs))}")
                if timeout is None:  # dask's distributed.comm.timeouts.connect
                    timeout = config.get("connect_timeout")
                self.connection = connect_client(address, timeout=parse_timedelta(timeout),
                                                 **connect_options)
            else:
                raise TypeError(
                    f"Client() takes a cluster, an address like '127.0.0.1:8786' or nothing, "
                    f"not {type(address).__name__}"
                )
            if report_dir is None and self.cluster is not None:
                self.report_dir = getattr(self.cluster, "report_dir", None)
            self._plot_from = self._stream_position()
            if set_as_default:
                self._previous_default = config.get("scheduler")
                config.set(scheduler=self)
                self._default_set = True
                note_default(self)
                make_dask_default(self)  # dask's default too, once dask is imported
            self.started = True
            note_open(self)

    # -- asynchronous use ----------------------------------------------------------------

    @property
    def asynchronous(self) -> bool:
        """True for a client made with ``asynchronous=True``, when called from
        inside a running event loop: its verbs then return awaitables."""
        return self._asynchronous and in_event_loop()

    def _maybe_async(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """``fn(...)`` now, or, for an asynchronous client in its loop, an
        awaitable running it in the loop's executor (it may block)."""
        if not self.asynchronous:
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(None, lambda: fn(*args, **kwargs))

    def sync(self, func: Callable, *args: Any, asynchronous: bool | None = None,
             callback_timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``func(*args, **kwargs)``; if it gives an awaitable, its result.

        An asynchronous client inside its event loop gets the awaitable back
        (to ``await``); otherwise it runs to completion on an event loop of this
        client's own (so this works in a notebook whose loop is running too).
        """
        if asynchronous is None:
            asynchronous = self.asynchronous
        result = func(*args, **kwargs)
        if not inspect.isawaitable(result):
            return result
        if asynchronous:
            return asyncio.wait_for(result, callback_timeout) if callback_timeout else result
        with self._lock:
            if self._loop_thread is None:
                self._loop_thread = LoopThread(f"shmdask-loop-{self.id}")
        return self._loop_thread.run(result, callback_timeout)

    # -- bookkeeping of keys held by Futures ----------------------------------------

    def _hold(self, key: Any) -> tuple[KeyStatus, bool]:
        """One more Future for ``key``; True when this client did not hold it yet
        (the scheduler counts one reference per client, not per Future)."""
        (st,), new = self._hold_many([key])
        return st, bool(new)

    def _hold_many(self, keys: list) -> tuple[list[KeyStatus], list]:
        """One more Future for each key (under one lock), and the keys this
        client did not hold yet (the scheduler must be told we want them)."""
        statuses, new = [], []
        with self._lock:
            held = self._held
            for k in keys:
                st = held.get(k)
                if st is None:
                    st = held[k] = KeyStatus()
                    new.append(k)
                st.holders += 1
                statuses.append(st)
        return statuses, new

    def _new_futures(self, keys: list) -> tuple[list[Future], list]:
        """Futures for keys, and the keys the scheduler must be told we want."""
        statuses, new = self._hold_many(keys)
        return [Future(k, self, st) for k, st in zip(keys, statuses, strict=True)], new

    def _drop(self, key: Any, status: KeyStatus) -> None:
        with self._lock:
            if self._held.get(key) is not status:  # cancelled or restarted already
                return
            status.holders -= 1
            if status.holders > 0:
                return
            del self._held[key]
        if not self.closed:
            self.connection.unwant([key])

    def _let_go_all(self) -> list[tuple[Any, KeyStatus]]:
        """Forget every held key (``restart``, ``close``): its ``(key, status)`` pairs."""
        with self._lock:
            held = list(self._held.items())
            self._held.clear()
            self._forgotten.clear()
        return held

    def _listener(self, key: Any, status: str, exc: BaseException | None) -> None:
        """The scheduler's answer for a key (engine or connection thread: never
        blocks, never runs user code; callbacks go to the callback thread)."""
        with self._lock:
            st = self._held.get(key)
            forgotten = status != "pending" and key in self._forgotten
            if forgotten:
                self._forgotten.discard(key)
        if status == "pending":  # an erred input runs again (retry)
            if st is not None:
                st.reset()
            return
        if st is not None:
            st.finish(status, exc)
        if forgotten and not self.closed:
            self.connection.unwant([key])

    def _listener_many(self, keys: list | tuple, status: str) -> None:
        """:meth:`_listener` for a batch of keys in one state: only keys a
        Future of ours holds (or one fire-and-forget let go of) need it, and a
        plain compute has none (one lock acquisition, not one per key)."""
        with self._lock:
            held, forgotten = self._held, self._forgotten
            if not held and not forgotten:
                return
            mine = [k for k in keys if k in held or k in forgotten]
        for key in mine:
            self._listener(key, status, None)

    def _check_alive(self) -> None:
        if self.closed:
            raise CancelledError("the client was closed")
        if not self.started:
            raise RuntimeError("this asynchronous client has not started: "
                               "client = await Client(..., asynchronous=True)")
        if not self.connection.alive():
            raise ConnectionError("lost the connection to the scheduler")

    def _fetch(self, keys: list) -> dict:
        self._check_alive()
        return self.connection.fetch(keys)

    # -- submitting work ---------------------------------------------------------------

    def _submit_graph(self, dsk: Mapping, keys: list, optimize: bool = False,
                      options: dict | None = None) -> list[Future]:
        """Send a graph; returns one Future per key of ``keys``."""
        self._check_alive()
        dsk, deps, prio = base.prepare_graph(dsk, keys, optimize)
        dsk, deps, prio = strip_futures(dsk, deps, prio, self)
        futures, new = self._new_futures(keys)  # hold before the engine can answer
        self.connection.submit(dsk, deps, new, prio, self._listener, options)
        return futures

    def submit(self, func: Callable, *args: Any, key: Any = None, workers: Any = None,
               resources: dict | None = None, retries: int | None = None,
               priority: int = 0, fifo_timeout: Any = None, allow_other_workers: bool = False,
               actor: bool = False, actors: bool = False, pure: bool = True,
               **kwargs: Any) -> Future:
        """Run ``func(*args, **kwargs)`` on the cluster; Futures in args become values.

        The scheduling keywords (``priority``, ``retries``, ``workers``, ...; see
        :mod:`shmdask.annotations`) are the scheduler's, never ``func``'s.
        """
        if not callable(func):
            raise TypeError(f"submit() needs a callable, not {type(func).__name__}")
        options = scheduling_options(priority, retries, workers, allow_other_workers,
                                     resources, fifo_timeout, actor or actors)
        d = _call(func, args, kwargs, pure=pure, name=None, key=key, nout=None)
        return self._submit_graph(d.dask, [d.key], options=options)[0]

    def map(self, func: Callable, *iterables: Iterable, key: Any = None, workers: Any = None,
            retries: int | None = None, resources: dict | None = None, priority: int = 0,
            allow_other_workers: bool = False, fifo_timeout: Any = None, actor: bool = False,
            actors: bool = False, pure: bool = True, batch_size: int | None = None,
            **kwargs: Any) -> list[Future]:
        """``submit`` over zipped iterables, as one graph (``batch_size`` is
        accepted for dask's sake: one graph is one message anyway)."""
        if not callable(func):
            raise TypeError(f"map() needs a callable, not {type(func).__name__}")
        options = scheduling_options(priority, retries, workers, allow_other_workers,
                                     resources, fifo_timeout, actor or actors)
        dsk: dict = {}
        keys = []
        for i, args in enumerate(zip(*iterables, strict=False)):
            k = f"{key}-{i}" if isinstance(key, str) else (key[i] if key else None)
            d = _call(func, args, kwargs, pure=pure, name=None, key=k, nout=None)
            dsk.update(d.dask)
            keys.append(d.key)
        return self._submit_graph(dsk, keys, options=options)

    def compute(self, collections: Any, sync: bool = False, optimize_graph: bool = True,
                workers: Any = None, allow_other_workers: bool = False,
                resources: dict | None = None, retries: int | None = 0, priority: int = 0,
                fifo_timeout: Any = None, actors: Any = None, traverse: bool = True,
                **kwargs: Any) -> Any:
        """Start computing collection(s); returns Future(s) of their final values
        (the values themselves with ``sync=True``)."""
        options = scheduling_options(priority, retries, workers, allow_other_workers,
                                     resources, fifo_timeout, actors)
        single = not isinstance(collections, list | tuple)
        colls = [collections] if single else list(collections)
        dsk: dict = {}
        keys = []
        for c in colls:
            if not base.is_collection(c):
                graph, key = _dask_collection_graph(c, optimize_graph)
                dsk.update(graph)
                keys.append(key)
                continue
            graph, (ks,) = base.collections_to_graph([c], optimize_graph)
            finalize, extra = c.__shmdask_postcompute__()
            key = f"finalize-{tokenize(ks, uuid.uuid4().hex)}"
            dsk.update(graph)
            dsk[key] = (finalize, ks, *extra)
            keys.append(key)
        futures = self._submit_graph(dsk, keys, optimize=optimize_graph, options=options)
        if sync:
            return self.gather(futures[0] if single else futures)
        return futures[0] if single else futures

    def persist(self, collections: Any, optimize_graph: bool = True, workers: Any = None,
                allow_other_workers: bool | None = None, resources: dict | None = None,
                retries: int | None = None, priority: int = 0, fifo_timeout: Any = None,
                actors: Any = None, **kwargs: Any) -> Any:
        """Compute collections on the cluster and keep their data there."""
        options = scheduling_options(priority, retries, workers, bool(allow_other_workers),
                                     resources, fifo_timeout, actors)
        single = not isinstance(collections, list | tuple)
        colls = [collections] if single else list(collections)
        out = self.persist_collections(colls, optimize_graph, options)
        return out[0] if single else out

    def persist_collections(self, collections: list, optimize: bool,
                            options: dict | None = None) -> list:
        if not all(base.is_collection(c) for c in collections):  # dask collections too
            from shmdask.interop.dask_on_shmdask import persist_on_client

            return persist_on_client(self, collections, optimize)
        dsk, keys = base.collections_to_graph(collections, optimize)
        flat = list(dict.fromkeys(k for ks in keys for k in flatten(ks)))
        futures = dict(zip(flat, self._submit_graph(dsk, flat, optimize, options), strict=True))
        out = []
        for c, ks in zip(collections, keys, strict=True):
            rebuild, extra = c.__shmdask_postpersist__()
            out.append(rebuild({k: futures[k] for k in flatten(ks)}, *extra))
        return out

    def get(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Run a task graph here: dask's scheduler-function signature, so
        ``dask.compute(x, scheduler=client)`` and ``scheduler=client.get`` work."""
        return base.get(dsk, keys, scheduler=self, **kwargs)

    def gather(self, futures: Any, errors: str = "raise") -> Any:
        """Wait for Futures (in any nesting of lists/tuples/dicts) and fetch values.

        ``errors="skip"`` leaves failed and cancelled ones out of lists.
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors= must be 'raise' or 'skip', not {errors!r}")
        if self.asynchronous:
            return self._gather_async(futures, errors)
        for f in _iter_futures(futures):
            f._wait(None)
        return self._collect(futures, errors)

    async def _gather_async(self, futures: Any, errors: str) -> Any:
        await wait(list(_iter_futures(futures)))
        return await asyncio.get_running_loop().run_in_executor(
            None, self._collect, futures, errors)

    def _collect(self, futures: Any, errors: str) -> Any:
        """The values of finished futures, in the shape they were given."""
        wanted = []
        for f in _iter_futures(futures):
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
        return _replace_futures(futures, values, skip=errors == "skip")

    def scatter(self, data: Any, workers: Any = None, broadcast: bool = False,
                direct: bool | None = None, hash: bool = True, timeout: Any = None,
                asynchronous: bool | None = None) -> Any:
        """Put data into the cluster's store once; returns Future(s).

        numpy arrays go to shared memory, and every task on every worker then
        maps them zero-copy (read-only): ``workers=`` and ``broadcast=`` change
        nothing on one machine.
        """
        return self._maybe_async(self._scatter, data, hash)

    def _scatter(self, data: Any, hash: bool = True) -> Any:
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

    def cancel(self, futures: Any, asynchronous: bool | None = None, force: bool = False
               ) -> Any:
        """Stop computing (or drop) these keys; their Futures become cancelled."""
        return self._maybe_async(self._cancel, futures)

    def _cancel(self, futures: Any) -> None:
        cancelled = []
        with self._lock:
            for f in futures_of(futures):
                st = self._held.pop(f.key, None)
                self._forgotten.discard(f.key)
                if st is not None:
                    cancelled.append((f.key, st))
        for key, st in cancelled:
            st.cancel(f"future {key!r} was cancelled")
        if cancelled:  # one message for all of them
            self.connection.unwant([key for key, _ in cancelled])

    def retry(self, futures: Any, asynchronous: bool | None = None) -> Any:
        """Run the erred tasks behind these futures again."""
        return self._maybe_async(self._retry, futures)

    def _retry(self, futures: Any) -> None:
        self._check_alive()
        keys = [f.key for f in futures_of(futures) if f._status.reset()]
        if keys:
            self.connection.retry(list(dict.fromkeys(keys)), self._listener)

    def _fire_and_forget(self, future: Future) -> None:
        """Want ``future``'s key once more, until it finishes (see
        :func:`shmdask.futures.fire_and_forget`)."""
        self._check_alive()
        with self._lock:
            if future.key in self._forgotten:
                return
            self._forgotten.add(future.key)
        self.connection.submit({}, {}, [future.key], None, self._listener, None)

    def restart(self, timeout: Any = None, wait_for_workers: bool = True) -> Any:
        """Replace the workers and drop all data; existing Futures are cancelled."""
        return self._maybe_async(self._restart)

    def _restart(self) -> Client:
        for _key, st in self._let_go_all():  # their data is gone, finished or not
            st.cancel("the cluster was restarted")
        self.connection.restart()
        return self

    @classmethod
    def current(cls) -> Client:
        """The default client (see :func:`default_client`)."""
        return default_client()

    # -- closing -----------------------------------------------------------------------

    def close(self, timeout: Any = None) -> Any:
        """Let go of every key and close the cluster this client started."""
        return self._maybe_async(self._close)

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._default_set and config.get("scheduler") is self:
            config.set(scheduler=self._previous_default)
        undo_dask_default(self)
        held = self._let_go_all()
        for _key, st in held:
            st.finish("cancelled", CancelledError("the client was closed"))
        self._callbacks.close()
        if self._loop_thread is not None:
            self._loop_thread.close()
        if not self.started:
            return
        try:
            if held and self.connection.alive():  # the cluster may outlive this client
                self.connection.unwant([key for key, _ in held])
            self.connection.close()
        finally:
            if self._owns_cluster and self.cluster is not None:
                self.cluster.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

def _close_quietly(ref: weakref.ref) -> None:
    client = ref()
    if client is not None:
        client._close()


# -- helpers ------------------------------------------------------------------------


def _dask_collection_graph(c: Any, optimize_graph: bool) -> tuple[dict, Any]:
    """``(graph, key)`` of a dask collection's final value; TypeError for a non-collection."""
    from shmdask.interop import is_dask_collection

    if not is_dask_collection(c):
        raise TypeError(f"client.compute() needs collections, got {type(c).__name__}")
    from shmdask.interop.dask_on_shmdask import finalized_graph

    return finalized_graph(c, optimize_graph)


def _iter_futures(x: Any) -> list[Future]:
    """The Futures of a ``gather`` argument: nested lists, tuples, sets, dicts."""
    return futures_of(x if isinstance(x, Future | list | tuple | set | dict) else [])


def _replace_futures(x: Any, values: Mapping, skip: bool = False) -> Any:
    """``x`` with each Future replaced by its value; with ``skip``, Futures
    without a value (failed) are left out of lists and tuples."""
    if isinstance(x, Future):
        return values.get(x.key)
    if isinstance(x, list | tuple):
        items = (i for i in x if not (skip and isinstance(i, Future) and i.key not in values))
        return type(x)(_replace_futures(i, values, skip) for i in items)
    if isinstance(x, dict):
        return {k: _replace_futures(v, values, skip) for k, v in x.items()
                if not (skip and isinstance(v, Future) and v.key not in values)}
    return x


__all__ = ["Client", "Future", "wait", "as_completed", "CancelledError", "default_client",
           "fire_and_forget", "futures_of"]
