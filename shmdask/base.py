"""compute, persist, get, visualize: from collections to results.

Flow of ``compute(*args)``::

    args ──collections_to_graph──▶ (graph, keys per collection)
         ──prepare: check, cull, fuse_linear, order──▶ (graph, dependencies, priorities)
         ──scheduler: run_graph(...)──▶ {key: value}
         ──each collection's postcompute──▶ results, non-collections passed through

A huge graph (``STREAM_MIN_TASKS`` or more) skips the whole-graph preparation:
:func:`order_pieces` walks it from the outputs and the scheduler gets it in
run-order pieces (``run_graph_pieces``), the first while the rest is still
being walked.  A single huge collection is not even merged into a dict first:
its ``__shmdask_lazy_graph__`` (an Array's layers, a Delayed's inputs) writes
each task out as the walk reads it, so the first task starts at once.

The scheduler is chosen per call (``scheduler=``), else from
``shmdask.config`` (``config.set(scheduler=...)`` or an open Client), else a
default dask.distributed Client if one is open (as dask does), else
``threads``.  Every scheduler is an object with one method,
``run_graph(dsk, dependencies, keys, priorities) -> {key: value}``; the
local ones are built here, a Client is one too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shmdask import config
from shmdask.graph import (
    as_graph,
    check_keys,
    cull,
    dependencies_of,
    flatten,
    fuse_linear,
    is_held_elsewhere,
    order,
    order_pieces,
    toposort,
)
from shmdask.interop import holds_dask_collection
from shmdask.scheduler.gc_pause import gc_paused


class Literal:
    """A task with no arguments that returns a value as is.

    Persisted results and wrapped values sit in graphs as ``(Literal(v),)``
    so that a value which happens to look like a task or a key is never
    evaluated.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __call__(self) -> Any:
        return self.value

    def __repr__(self) -> str:
        return f"Literal({type(self.value).__name__})"

    def __reduce__(self) -> tuple:
        return (Literal, (self.value,))


def is_collection(x: Any) -> bool:
    return not isinstance(x, type) and hasattr(x, "__shmdask_graph__")


def is_future(x: Any) -> bool:
    return getattr(type(x), "_shmdask_future", False)


# -- schedulers ---------------------------------------------------------------


class LocalScheduler:
    """The sync and threads backends as a scheduler object."""

    def __init__(self, sync: bool):
        self.sync = sync

    def run_graph(self, dsk: Mapping, dependencies: Mapping, keys: list,
                  priorities: Mapping) -> dict:
        from shmdask.diagnostics.progress import make_progress_bar
        from shmdask.scheduler.local import get_local

        dsk, dependencies = _resolve_futures(dsk, dependencies)
        return get_local(dsk, dependencies, keys, priorities,
                         num_workers=config.get("num_workers"), sync=self.sync,
                         progress=make_progress_bar())

    def run_graph_pieces(self, pieces: Any, keys: list) -> dict:
        """``run_graph`` for a huge graph in run-order pieces (``order_pieces``)."""
        from shmdask.diagnostics.progress import make_progress_bar
        from shmdask.scheduler.local import get_local

        pieces = (_resolve_futures(graph, deps) + (prio,) for graph, deps, prio in pieces)
        return get_local({}, {}, keys, None, num_workers=config.get("num_workers"),
                         sync=self.sync, progress=make_progress_bar(), pieces=pieces)

    def __repr__(self) -> str:
        return "<scheduler sync>" if self.sync else "<scheduler threads>"


SYNC = LocalScheduler(sync=True)
THREADS = LocalScheduler(sync=False)
_NAMES = {
    "sync": SYNC,
    "synchronous": SYNC,
    "single-threaded": SYNC,
    "threads": THREADS,
    "threading": THREADS,
}
_PROCESS_NAMES = {"processes", "multiprocessing", "distributed"}


def get_scheduler(scheduler: Any = None) -> Any:
    """The scheduler object for a ``scheduler=`` argument or the configuration."""
    if scheduler is None:
        scheduler = config.get("scheduler")
    if scheduler is None:
        # as in dask: a default dask.distributed Client, if one is open, else threads
        return _default_distributed_client() or THREADS
    if isinstance(scheduler, str):
        name = scheduler.lower()
        if name in _NAMES:
            return _NAMES[name]
        if name in _PROCESS_NAMES:
            from shmdask.client_defaults import default_process_client

            return default_process_client()
        raise ValueError(
            f"unknown scheduler {scheduler!r}; expected one of "
            f"{sorted(set(_NAMES) | _PROCESS_NAMES)} or a Client"
        )
    if hasattr(scheduler, "run_graph"):
        return scheduler
    from shmdask.interop.shmdask_on_dask import DaskGetScheduler

    wrapped = DaskGetScheduler.wrap(scheduler)
    if wrapped is not None:
        return wrapped
    raise TypeError(
        f"scheduler= must be a name ({', '.join(sorted(set(_NAMES) | _PROCESS_NAMES))}), a "
        f"shmdask or dask.distributed Client, or a dask-style get(dsk, keys) function, "
        f"not {type(scheduler).__name__}"
    )


def _default_distributed_client() -> Any:
    """The default dask.distributed Client of this process, wrapped, or None:
    a script that swaps ``shmdask.distributed.Client`` for dask.distributed's
    runs its ``.compute()`` calls there unchanged."""
    import sys

    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        client = distributed.default_client()
    except (ValueError, AttributeError):  # none open
        return None
    from shmdask.interop.shmdask_on_dask import DaskGetScheduler

    return DaskGetScheduler.wrap(client)


def _external_data(scheduler: Any) -> bool:
    """Whether ``scheduler`` holds data that graphs refer to by key only."""
    return getattr(scheduler, "holds_external_data", False)


def check_scheduler(scheduler: Any) -> None:
    """Refuse a ``scheduler=`` value that no compute could use, when it is set.

    Names are checked without starting anything ("processes" makes its
    cluster on first use)."""
    if scheduler is None:
        return
    if isinstance(scheduler, str):
        if scheduler.lower() not in _NAMES and scheduler.lower() not in _PROCESS_NAMES:
            raise ValueError(
                f"unknown scheduler {scheduler!r}; expected one of "
                f"{sorted(set(_NAMES) | _PROCESS_NAMES)}, a Client or a get function"
            )
        return
    get_scheduler(scheduler)


def _resolve_futures(dsk: Mapping, dependencies: Mapping) -> tuple[Mapping, Mapping]:
    """For local schedulers: Futures in a graph become their values."""
    if not any(is_future(v) for v in dsk.values()):
        return dsk, dependencies
    out = {k: ((Literal(v.result()),) if is_future(v) else v) for k, v in dsk.items()}
    return out, dependencies


def _held_futures(keys: list) -> dict:
    """Futures of open Clients for keys a graph refers to without holding them
    (dask drops a persisted Future from its graphs and keeps only references
    to its key, as it does for dask.distributed's)."""
    import sys

    clients = sys.modules.get("shmdask.client_defaults")
    found = clients.held_futures(keys) if clients is not None else {}
    lost = [k for k in keys if k not in found]
    if lost:
        shown = ", ".join(map(repr, lost[:5]))
        raise KeyError(f"the task graph refers to key(s) {shown} that it does not hold, "
                       "and no open Client holds them either")
    return found


def _add_held_futures(dsk: dict, deps: dict, missing: list) -> None:
    """Complete a culled graph (or piece) for a scheduler that holds no data of
    its own: refuse data another scheduler holds, and add the Futures of open
    Clients for the ``missing`` keys it names by reference only."""
    foreign = [k for k, v in dsk.items() if is_held_elsewhere(k, v)]
    if foreign:
        raise TypeError(
            f"the task graph holds a {type(dsk[foreign[0]]).__name__} for key "
            f"{foreign[0]!r}: its data lives on another scheduler (a dask.distributed "
            "cluster?); compute this collection with that scheduler's Client")
    if missing:  # keys named by reference only: data held by Futures
        held = _held_futures(missing)
        dsk.update(held)
        deps.update((k, set()) for k in held)


# -- graph preparation --------------------------------------------------------


def prepare_graph(dsk: Mapping, keys: list, optimize: bool = True,
                  external_data: bool = False) -> tuple[dict, dict, dict]:
    """Check, cull, fuse and order a graph for ``keys`` (a flat list).

    Keys the graph only refers to (dask drops persisted Futures from the graphs
    it builds, keeping references) are looked up among the Futures of open
    Clients, unless ``external_data``: a dask scheduler that holds such data
    itself gets the references as they are.
    """
    check_keys(dsk, keys)
    missing: list = []
    dsk, deps = cull(dsk, keys, missing=missing)
    if not external_data:
        _add_held_futures(dsk, deps, missing)
    topo = toposort(dsk, deps)  # one pass finds cycles and serves the rest
    if optimize:
        dsk, deps = fuse_linear(dsk, keys, deps, topo)
        topo = [k for k in topo if k in dsk]
    return dsk, deps, order(dsk, deps, topo)


def collections_to_graph(collections: list, optimize: bool = True,
                         lazy: bool = False) -> tuple[Mapping, list]:
    """Merge the graphs of collections; returns ``(graph, [keys of each])``.

    With ``lazy``, when one of the collections has a graph of
    ``STREAM_MIN_TASKS`` tasks or more that it can give as a read-only Mapping
    writing its tasks out as they are read (``__shmdask_lazy_graph__``: an
    Array's layers, a Delayed's inputs), the graph is that Mapping (joined
    with the others' graphs by a :class:`GraphUnion`), so streaming it
    (:func:`order_pieces`) starts the first tasks before the rest exists;
    otherwise the graph is a dict."""
    if lazy:
        found = _lazy_graph(collections, optimize)
        if found is not None:
            return found
    dsk: dict = {}
    keys = []
    groups: dict = {}
    for c in collections:
        ks = c.__shmdask_keys__()
        keys.append(ks)
        opt = getattr(type(c), "__shmdask_optimize__", None) if optimize else None
        groups.setdefault(opt, []).append((c, ks))
    for opt, members in groups.items():
        graph: dict = {}
        for c, _ in members:
            with gc_paused():  # materializing may make a million tasks
                graph.update(c.__shmdask_graph__())
        if opt is not None:
            graph = opt(graph, [k for _, ks in members for k in flatten(ks)])
        dsk.update(graph)
    return dsk, keys


def _lazy_graph(collections: list, optimize: bool) -> tuple[Mapping, list] | None:
    """``collections_to_graph(lazy=True)`` when a collection's graph is huge and
    lazily read; None when none is (or one needs a whole-graph optimization).

    Every collection is asked for its lazy graph before any keys or graphs are
    made: when none is huge (nearly every compute) the dict path makes them,
    once."""
    lazy: list = []
    for c in collections:
        make = getattr(c, "__shmdask_lazy_graph__", None)
        if make is not None:
            lazy.append(make(STREAM_MIN_TASKS))
        elif optimize and getattr(type(c), "__shmdask_optimize__", None) is not None:
            return None  # it may need the graph whole: the dict path serves
        else:
            lazy.append(None)
    if all(graph is None for graph in lazy):
        return None
    graphs: list = []
    keys: list = []
    for c, graph in zip(collections, lazy, strict=True):
        ks = c.__shmdask_keys__()
        keys.append(ks)
        if graph is None:  # small: as a dict
            graph = c.__shmdask_graph__()
        opt = getattr(type(c), "__shmdask_optimize__", None) if optimize else None
        # the keys as the collection gave them (an optimizer that reads them
        # flattens them, as Array's does): flattening a million keys here
        # cost ~0.35 s before the first task, for Array's pass-through
        graphs.append(opt(graph, ks) if opt is not None else graph)
    return (graphs[0] if len(graphs) == 1 else GraphUnion(graphs)), keys


class GraphUnion(Mapping):
    """Graphs read as one, without merging them: a key is taken from the last
    graph that has it, as merging them in order into one dict would keep it.

    ``len()`` and iteration walk every graph (a lazily read one may merge
    itself whole for that); lookups, all a walk from the outputs needs, don't."""

    def __init__(self, graphs: list):
        self.graphs = graphs[::-1]  # the last one first

    def __getitem__(self, key: Any) -> Any:
        # one membership test per graph (not a whole ``key in self`` first):
        # every task of a huge graph is read here while it is walked
        for graph in self.graphs:
            try:
                found = key in graph
            except TypeError:  # an unhashable value: not a key
                break
            if found:
                return graph[key]
        raise KeyError(key)

    def __contains__(self, key: Any) -> bool:
        try:
            return any(key in graph for graph in self.graphs)
        except TypeError:  # an unhashable value: not a key
            return False

    def __iter__(self) -> Any:
        seen: set = set()
        for graph in self.graphs:
            for key in graph:
                if key not in seen:
                    seen.add(key)
                    yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)


#: Graphs of at least this many tasks go to a scheduler that takes pieces
#: (``run_graph_pieces``) one piece at a time, in run order: the first tasks
#: start while the rest is still being walked (:func:`order_pieces`).
#: Smaller graphs are prepared whole, with linear fusion and a finer order.
STREAM_MIN_TASKS = 100_000


def run_graph(sched: Any, dsk: Mapping, keys: list, optimize: bool = True,
              finalize: Callable[[dict], Any] | None = None) -> Any:
    """Prepare ``dsk`` for ``keys`` (a flat list) and run it on ``sched``.

    With ``finalize`` (a finisher that copies what it keeps), a scheduler that
    can (``finalizes_views``) calls it on read-only views of its data before
    letting go of it; the finisher's result comes back instead of the values."""
    on_views = {"finalize": finalize} if finalize is not None else {}
    if finalize is not None and not getattr(sched, "finalizes_views", False):
        return finalize(run_graph(sched, dsk, keys, optimize))
    external = _external_data(sched)
    # a graph that is not a dict is read lazily: made so for huge graphs only
    # (collections_to_graph), and its len() may cost a whole merge (DelayedGraph)
    huge = not isinstance(dsk, dict) or len(dsk) >= STREAM_MIN_TASKS
    if huge and hasattr(sched, "run_graph_pieces") and not external:
        check_keys(dsk, keys)
        return sched.run_graph_pieces(_streamed_pieces(dsk, keys), keys, **on_views)
    with gc_paused(STREAM_MIN_TASKS if huge else len(dsk)):
        prepared, deps, prio = prepare_graph(dsk, keys, optimize, external)
    return sched.run_graph(prepared, deps, keys, prio, **on_views)


def _streamed_pieces(dsk: Mapping, keys: list) -> Any:
    """:func:`order_pieces`, each piece made with the garbage collector paused
    (see ``gc_pause``) and completed as ``prepare_graph`` completes a whole
    graph: the persisted data it names by reference comes in as Futures."""
    missing: list = []
    pieces = order_pieces(dsk, keys, missing=missing)
    while True:
        with gc_paused():
            piece = next(pieces, None)
        if piece is None:
            return
        graph, deps, prio = piece
        _add_held_futures(graph, deps, missing)
        for k in missing:
            prio[k] = -1  # data: before the piece's first task
        missing.clear()
        yield piece


def _run(collections: list, scheduler: Any, optimize: bool,
         finish_on_views: Callable | None = None) -> tuple[Any, list]:
    """Run the collections' graph -> ``({key: value}, [keys of each])``.

    With ``finish_on_views(results, keys)`` -- a finisher that copies what it
    keeps -- a scheduler that can (``finalizes_views``) calls it on read-only
    views of its data before letting go of it, and its result comes back
    instead of the values: one copy of the data rather than two."""
    dsk, keys = collections_to_graph(collections, optimize, lazy=True)
    flat = list(dict.fromkeys(k for ks in keys for k in flatten(ks)))
    finalize = None
    if finish_on_views is not None:
        def finalize(results: dict) -> Any:
            return finish_on_views(results, keys)
    results = run_graph(get_scheduler(scheduler), dsk, flat, optimize, finalize)
    return results, keys


def _pack(ks: Any, results: dict, container: type = list) -> Any:
    if type(ks) is list:
        return container(_pack(k, results, container) for k in ks)
    return results[ks]


def _unpack_args(args: tuple) -> tuple[list, list]:
    """Split args into collections to compute; containers holding collections
    are wrapped as one Delayed each (so ``compute([d1, d2])`` works)."""
    from shmdask.delayed import delayed

    out = []
    for a in args:
        if is_collection(a):
            out.append(a)
        elif type(a) in (list, tuple, dict, set) and _holds_collection(a):
            out.append(delayed(a))
        else:
            out.append(None)
    return out, [a for a in out if a is not None]


def _holds_collection(x: Any) -> bool:
    if is_collection(x) or is_future(x):
        return True
    if type(x) in (list, tuple, set, frozenset):
        return any(_holds_collection(i) for i in x)
    if type(x) is dict:
        return any(_holds_collection(v) for v in x.values())
    return False


def compute(*args: Any, scheduler: Any = None, optimize_graph: bool = True,
            traverse: bool = True, **kwargs: Any) -> tuple:
    """Compute collections together; shared parts run once.  Returns a tuple.

    dask collections (dask.array, DataFrame, Bag, ...) among the arguments
    run on the same scheduler, through dask's own graph building.
    """
    if any(map(holds_dask_collection, args)):
        from shmdask.interop.dask_on_shmdask import compute as compute_dask

        return compute_dask(*args, scheduler=scheduler, optimize_graph=optimize_graph,
                            traverse=traverse)
    if traverse:
        wrapped, collections = _unpack_args(args)
    else:
        wrapped = [a if is_collection(a) else None for a in args]
        collections = [a for a in wrapped if a is not None]
    if not collections:
        return tuple(args)
    finalizers = [c.__shmdask_postcompute__() for c in collections]

    def finish(results: dict, keys: list) -> list:
        return [finalize(_pack(ks, results), *extra)
                for (finalize, extra), ks in zip(finalizers, keys, strict=True)]

    if all(getattr(finalize, "copies_views", False) for finalize, _ in finalizers):
        finished, _ = _run(collections, scheduler, optimize_graph, finish)
    else:  # some finalizer may keep a value as it is: it gets private copies
        results, keys = _run(collections, scheduler, optimize_graph)
        finished = finish(results, keys)
    computed = iter(finished)
    return tuple(next(computed) if w is not None else a for w, a in zip(wrapped, args,
                                                                        strict=True))


def persist(*args: Any, scheduler: Any = None, optimize_graph: bool = True,
            **kwargs: Any) -> tuple:
    """Compute collections and return new ones whose graphs hold the results.

    On a Client the results stay on the cluster (the new collections hold
    Futures); on the local schedulers they are embedded in the graph.
    """
    if any(map(holds_dask_collection, args)):
        from shmdask.interop.dask_on_shmdask import persist as persist_dask

        return persist_dask(*args, scheduler=scheduler, optimize_graph=optimize_graph)
    collections = [a for a in args if is_collection(a)]
    if not collections:
        return tuple(args)
    sched = get_scheduler(scheduler)
    if hasattr(sched, "persist_collections"):
        persisted = iter(sched.persist_collections(collections, optimize_graph))
    else:
        results, keys = _run(collections, sched, optimize_graph)
        persisted = iter(_rebuild(c, ks, results) for c, ks in zip(collections, keys,
                                                                    strict=True))
    return tuple(next(persisted) if is_collection(a) else a for a in args)


def _rebuild(collection: Any, keys: Any, results: Mapping) -> Any:
    rebuild, extra = collection.__shmdask_postpersist__()
    graph = {k: (Literal(results[k]),) for k in flatten(keys)}
    return rebuild(graph, *extra)


def get(dsk: Any, keys: Any, scheduler: Any = None, optimize_graph: bool = True,
        **kwargs: Any) -> Any:
    """Run a raw task graph; ``keys`` is a key or nested lists of keys.

    ``dsk`` is a mapping in dask's spec (classic tuples, task-spec nodes or
    both), a HighLevelGraph, or what dask passes a scheduler function (an
    expression with ``__dask_graph__``), so ``dask.compute(x,
    scheduler=shmdask.get)`` works.  Other keyword arguments dask's schedulers
    take are accepted and ignored.
    """
    dsk = as_graph(dsk)
    flat = list(dict.fromkeys(flatten(keys))) if type(keys) is list else [keys]
    results = run_graph(get_scheduler(scheduler), dsk, flat, optimize_graph)
    # Like dask.get: lists of keys give tuples of values.
    return _pack(keys, results, tuple) if type(keys) is list else results[keys]


def visualize(*args: Any, filename: str | None = None, rankdir: str = "TB",
              optimize_graph: bool = False, **kwargs: Any) -> Any:
    """Draw the task graph of collections (matplotlib); see shmdask.visualize."""
    from shmdask.visualize import visualize_graph

    _, collections = _unpack_args(args)
    dsk, _ = collections_to_graph(collections, optimize=optimize_graph)
    return visualize_graph(dsk, filename=filename, rankdir=rankdir, **kwargs)


__all__ = ["compute", "persist", "get", "visualize", "is_collection", "dependencies_of"]
