"""shmdask collections and scripts on dask's schedulers, dask.distributed included.

Two pieces, both free of dask imports until dask is actually used:

- :class:`DaskCollection`, a mixin giving shmdask's ``Array`` and ``Delayed``
  dask's collection protocol (``__dask_graph__``, ``__dask_keys__``,
  ``__dask_postcompute__``, ``__dask_postpersist__``, ``__dask_tokenize__``,
  ``__dask_optimize__``, ``__dask_scheduler__``) on top of their
  ``__shmdask_*__`` one.  Graphs are the same dicts of classic tasks that
  shmdask runs; dask reads that spec too.  So ``dask.is_dask_collection`` is
  True for them, and ``dask.compute``, ``distributed.Client.compute``/
  ``persist`` run them; their default scheduler (``__dask_scheduler__``) is
  shmdask's, as dask.array's is dask's threads.
- :class:`DaskGetScheduler`: ``scheduler=`` given a dask.distributed Client
  or any dask-style ``get(dsk, keys)`` function becomes a shmdask scheduler
  object (``run_graph``), so ``x.compute(scheduler=dist_client)``,
  ``shmdask.compute(..., scheduler=dask.threaded.get)`` and
  ``shmdask.config.set(scheduler=dist_client)`` work; ``persist`` on a
  distributed Client keeps the data on that cluster.
- :func:`to_dask_array`: ``x.to_dask_array()``, for dask.array code that
  wants a real dask.array.Array.

Tasks then run in dask's workers: they import shmdask (the functions of
shmdask.array are referred to by name), so it must be installed there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from shmdask.graph import as_graph, cull, dependencies_of, flatten, fuse_linear


def _run_on_shmdask(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """``__dask_scheduler__``: shmdask's default scheduler, in dask's get signature."""
    from shmdask.base import get

    return get(dsk, keys, **kwargs)


def _optimize_for_dask(dsk: Any, keys: Any, **kwargs: Any) -> dict:
    """Cull and fuse linear chains, as shmdask does before running a graph
    (blockwise fusion already happened when the graph was built)."""
    flat = list(dict.fromkeys(flatten(keys))) if isinstance(keys, list) else [keys]
    graph = as_graph(dsk)
    # dask.distributed Futures of a persisted collection stay as they are
    graph, deps = cull(graph, flat, dependencies_of(graph))
    return fuse_linear(graph, flat, deps)[0]


def _rebuild_for_dask(dsk: Mapping, rebuild: Callable, extra: tuple, *,
                      rename: Mapping | None = None) -> Any:
    """dask's postpersist signature (``rename=`` may be passed) over ours."""
    if rename:
        raise NotImplementedError("shmdask collections cannot be renamed by "
                                  "dask.graph_manipulation")
    return rebuild(as_graph(dsk), *extra)


class DaskCollection:
    """dask's collection protocol over shmdask's (see the module docstring)."""

    __slots__ = ()

    def __dask_graph__(self) -> dict:
        return self.__shmdask_graph__()

    def __dask_keys__(self) -> list:
        return self.__shmdask_keys__()

    def __dask_postcompute__(self) -> tuple:
        return self.__shmdask_postcompute__()

    def __dask_postpersist__(self) -> tuple:
        rebuild, extra = self.__shmdask_postpersist__()
        return _rebuild_for_dask, (rebuild, extra)

    def __dask_tokenize__(self) -> Any:
        return self.__shmdask_tokenize__()

    __dask_optimize__ = staticmethod(_optimize_for_dask)
    __dask_scheduler__ = staticmethod(_run_on_shmdask)


class DaskGetScheduler:
    """A dask scheduler (a ``get`` function, or a dask.distributed Client) as a
    shmdask scheduler object."""

    #: a graph may name keys this scheduler holds (dask.distributed Futures)
    holds_external_data = True

    def __init__(self, get: Callable, client: Any = None):
        self.get = get
        self.client = client

    @classmethod
    def wrap(cls, scheduler: Any) -> DaskGetScheduler | None:
        """The wrapper for a dask.distributed Client or a get function; None for
        anything else.  An asynchronous Client is refused: compute would block."""
        if "Client" in type(scheduler).__name__ and callable(getattr(scheduler, "get", None)):
            if getattr(scheduler, "asynchronous", False):
                raise ValueError("an asynchronous dask Client cannot run shmdask.compute; "
                                 "use its compute() and gather() with await")
            return cls(scheduler.get, scheduler)
        if callable(scheduler) and not isinstance(scheduler, type):
            try:
                inspect.signature(scheduler).bind(None, None)
            except TypeError:
                raise TypeError(f"scheduler={scheduler!r} cannot be called as a dask "
                                "scheduler, get(dsk, keys)") from None
            except ValueError:  # no signature to read (a builtin): trust it
                pass
            return cls(scheduler)
        return None

    def run_graph(self, dsk: Mapping, dependencies: Mapping, keys: list,
                  priorities: Mapping) -> dict:
        values = self.get(dict(dsk), list(keys))
        return dict(zip(keys, values, strict=True))

    @property
    def persist_collections(self) -> Callable:
        """Only a Client keeps data: ``persist`` there gives collections whose
        graphs hold its Futures (a ``get`` function has nowhere to keep it)."""
        if self.client is None:
            raise AttributeError("persist_collections")
        return self._persist_on_client

    def _persist_on_client(self, collections: list, optimize: bool) -> list:
        return list(self.client.persist(list(collections), optimize_graph=optimize))

    def __repr__(self) -> str:
        target = self.client if self.client is not None else getattr(
            self.get, "__qualname__", self.get)
        return f"<dask scheduler {target}>"


def to_dask_array(x: Any) -> Any:
    """A dask.array.Array with the same graph, name, chunks and dtype as the
    shmdask Array ``x``: computing either gives the same blocks."""
    from shmdask.interop import require

    require("dask.array")
    import dask.array as da
    import numpy as np

    meta = np.empty((0,) * x.ndim, dtype=x.dtype)
    return da.Array(dict(x.__shmdask_graph__()), x.name, x.chunks, dtype=x.dtype, meta=meta)
