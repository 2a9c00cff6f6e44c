"""dask <-> shmdask: each side runs the other's collections (needs the ``dask`` extra).

Two directions, one module each:

- :mod:`~shmdask.interop.dask_on_shmdask`: dask.array, dask.dataframe,
  dask.bag, dask.delayed and xarray objects computed by shmdask's engine
  (``dask.compute(x, scheduler=client)``, ``client.compute(x)``,
  ``shmdask.compute(x)``).  The graphs run as dask builds them: the task-spec
  nodes are read natively by :mod:`shmdask.graph`.
- :mod:`~shmdask.interop.shmdask_on_dask`: shmdask's collections speak dask's
  collection protocol, and ``scheduler=`` accepts a dask.distributed Client or
  any dask-style ``get(dsk, keys)`` function, so a script that outgrows one
  machine runs unchanged on a dask.distributed cluster.

Neither dask nor pandas is a runtime dependency of shmdask: nothing here is
imported until a dask object (or a dask scheduler) shows up, and a call that
needs dask without it installed says which extra to install.
"""

from __future__ import annotations

import sys
from typing import Any

INSTALL_HINT = "pip install 'shmdask[dask]'"


def require(module: str = "dask") -> Any:
    """Import ``module`` (dask, distributed, xarray, ...) or explain how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this needs {module.split('.')[0]}, which is not installed: {INSTALL_HINT}"
        ) from exc


def is_dask_collection(x: Any) -> bool:
    """True for a dask collection that is not a shmdask one (dask.array, dask
    DataFrame, Bag, dask Delayed, an xarray object backed by dask, ...)."""
    if "dask" not in sys.modules:  # no dask object can exist yet
        return False
    if not isinstance(x, type) and hasattr(x, "__shmdask_graph__"):
        return False
    from dask import is_dask_collection as dask_says

    try:
        return dask_says(x)
    except Exception:  # a strange object answering __dask_graph__ badly: not ours to judge
        return False


def holds_dask_collection(x: Any) -> bool:
    """``x`` is a dask collection, or a list/tuple/set/dict holding one."""
    if "dask" not in sys.modules:
        return False
    if type(x) in (list, tuple, set, frozenset):
        return any(holds_dask_collection(i) for i in x)
    if type(x) is dict:
        return any(holds_dask_collection(v) for v in x.values())
    return is_dask_collection(x)


def make_dask_default(client: Any) -> None:
    """Make ``client`` (shmdask's default scheduler) dask's default too, as a
    dask.distributed Client is: ``x.compute()`` of a dask collection then runs
    on it.  Only once dask is imported (importing it costs a quarter of a
    second); entry points that meet dask objects call this again.  Undone by
    :func:`undo_dask_default` when the client closes."""
    if "dask.config" not in sys.modules or getattr(client, "_dask_undo", None) is not None:
        return
    if getattr(client, "closed", False):
        return
    from shmdask import config as shmdask_config

    if shmdask_config.get("scheduler") is not client:
        return
    import dask

    previous = dask.config.get("scheduler", None)
    if previous is not None and not _is_shmdask_client(previous):
        return  # the user chose dask's scheduler: leave it
    dask.config.set(scheduler=client)
    client._dask_undo = (previous,)


def undo_dask_default(client: Any) -> None:
    """Give dask back the scheduler it had before ``client`` became its default."""
    state = getattr(client, "_dask_undo", None)
    if state is None or "dask.config" not in sys.modules:
        return
    import dask

    client._dask_undo = None
    if dask.config.get("scheduler", None) is client:
        previous = state[0]
        dask.config.set(scheduler=None if _is_shmdask_client(previous) and previous.closed
                        else previous)


def _is_shmdask_client(x: Any) -> bool:
    return hasattr(x, "persist_collections") and hasattr(x, "run_graph")
