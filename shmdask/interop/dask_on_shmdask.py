"""dask collections on shmdask's engine.

In: dask collections (dask.array, dask.dataframe, dask.bag, dask.delayed,
xarray objects backed by dask arrays).  Out: their values, computed by a
shmdask scheduler (sync, threads, a LocalCluster or TCP Client), or new dask
collections whose graphs hold shmdask Futures (``client.persist``).

The graph is built the way dask's own ``compute``/``persist`` (and
dask.distributed's client) build it: the collections become one dask
expression, which is optimized and lowered by dask, and its
``__dask_graph__()`` is what runs.  That graph mixes classic tuples and
task-spec nodes; :mod:`shmdask.graph` reads both, so nothing is converted on
the way.  Keys are dask's, so shared parts of several collections run once.

``from_dask_array`` turns a dask.array.Array into a shmdask one over the same
graph, so shmdask.array operations continue from it.

dataframe shuffles are built as tasks (``shmdask.interop.SHUFFLE_METHOD``) unless
the user chose a method in dask's configuration.

Two ways in, same graph:

- dask calls us: ``dask.compute(x, scheduler=client)`` (or ``client.get``,
  ``shmdask.get``) lands in :func:`shmdask.base.get` with an expression;
- we call dask: ``shmdask.compute(x)``, ``client.compute(x)``,
  ``client.persist(x)`` use :func:`dask_graph` below.
"""

from __future__ import annotations

import functools
from typing import Any

from shmdask.graph import as_graph, flatten
from shmdask.interop import is_dask_collection, require


def dask_graph(collections: list, optimize_graph: bool = True,
               finalize: bool = False) -> tuple[dict, list]:
    """``(graph, keys per collection)`` of dask collections.

    ``finalize=True`` adds dask's finalize step (concatenating blocks or
    partitions into one value), so each collection has exactly one key; else
    the keys are the collections' own (nested lists of block keys).
    """
    require("dask")
    from dask._expr import FinalizeCompute
    from dask.base import collections_to_expr

    from shmdask.interop import shuffle_on_shmdask

    expr = collections_to_expr(list(collections), optimize_graph)
    if finalize:
        expr = FinalizeCompute(expr)
    with shuffle_on_shmdask():  # lowering picks the shuffle method
        expr = expr.optimize()
    keys = list(expr.__dask_keys__())
    if len(keys) != len(collections):  # dask's own contract; a mismatch is a dask change
        raise RuntimeError(f"dask gave {len(keys)} key groups for {len(collections)} "
                           "collections")
    return as_graph(expr), keys


def finalized_graph(collection: Any, optimize_graph: bool = True) -> tuple[dict, Any]:
    """``(graph, key)``: the graph computing ``collection``'s final value under ``key``."""
    graph, (keys,) = dask_graph([collection], optimize_graph, finalize=True)
    (key,) = list(flatten(keys))
    return graph, key


def scheduler_get(scheduler: Any) -> Any:
    """A dask-style ``get(dsk, keys)`` running on a shmdask scheduler."""
    from shmdask import base

    return functools.partial(base.get, scheduler=base.get_scheduler(scheduler))


def compute(*args: Any, scheduler: Any = None, optimize_graph: bool = True,
            traverse: bool = True) -> tuple:
    """``shmdask.compute`` of arguments holding dask collections: dask gathers
    them and repacks the results, shmdask runs the graph."""
    dask = require("dask")
    from shmdask.interop import shuffle_on_shmdask

    with shuffle_on_shmdask():
        return dask.compute(*args, scheduler=scheduler_get(scheduler),
                            optimize_graph=optimize_graph, traverse=traverse)


def persist(*args: Any, scheduler: Any = None, optimize_graph: bool = True) -> tuple:
    """``shmdask.persist`` of dask collections: on a Client their data stays on
    the cluster (graphs of Futures); on the local schedulers the graphs hold
    the values."""
    from shmdask import base

    sched = base.get_scheduler(scheduler)
    if hasattr(sched, "persist_collections"):
        def persists(a: Any) -> bool:
            return base.is_collection(a) or is_dask_collection(a)

        persisted = iter(sched.persist_collections([a for a in args if persists(a)],
                                                   optimize_graph))
        return tuple(next(persisted) if persists(a) else a for a in args)
    dask = require("dask")
    from shmdask.interop import shuffle_on_shmdask

    with shuffle_on_shmdask():
        return dask.persist(*args, scheduler=functools.partial(base.get, scheduler=sched),
                            optimize_graph=optimize_graph)


def persist_on_client(client: Any, collections: list, optimize_graph: bool = True) -> list:
    """``client.persist`` of a list mixing dask and shmdask collections: each
    dask one comes back as a dask collection whose graph holds shmdask Futures,
    as dask.distributed's ``Client.persist`` gives one holding its Futures."""
    from shmdask import base
    from shmdask.interop import make_dask_default

    make_dask_default(client)  # so that x.compute() of what we return runs here
    ours = [c for c in collections if base.is_collection(c)]
    theirs = [c for c in collections if not base.is_collection(c)]
    done_ours = iter(client.persist_collections(ours, optimize_graph) if ours else ())
    done_theirs = iter(())
    if theirs:
        graph, keys = dask_graph(theirs, optimize_graph)
        flat = list(dict.fromkeys(flatten(keys)))
        futures = dict(zip(flat, client._submit_graph(graph, flat, optimize_graph),
                           strict=True))
        rebuilt = []
        for c, ks in zip(theirs, keys, strict=True):
            rebuild, extra = c.__dask_postpersist__()
            rebuilt.append(rebuild({k: futures[k] for k in flatten(ks)}, *extra))
        done_theirs = iter(rebuilt)
    return [next(done_ours) if base.is_collection(c) else next(done_theirs)
            for c in collections]


def from_dask_array(d: Any) -> Any:
    """The shmdask Array computing what the dask.array.Array ``d`` computes:
    same graph (task-spec nodes run natively), name, chunks and dtype."""
    from shmdask.array.core import Array
    from shmdask.array.layers import MaterializedLayer

    if not hasattr(d, "chunks") or not hasattr(d, "__dask_graph__") or not hasattr(d, "name"):
        raise TypeError(f"from_dask_array() needs a dask.array.Array, not {type(d).__name__}")
    graph = as_graph(d.__dask_graph__())
    return Array({d.name: MaterializedLayer(d.name, graph)}, d.name, d.chunks, d.dtype)
