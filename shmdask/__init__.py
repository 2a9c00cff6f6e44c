"""shmdask: dask's programming model on a single-node engine.

Public names only.  How the parts fit: the docstrings of :mod:`shmdask.scheduler.engine`
(one scheduler loop), :mod:`shmdask.cluster` (processes, shared memory, TCP) and
:mod:`shmdask.client` (the dask.distributed API).
"""

from __future__ import annotations

from typing import Any

import shmdask.visualize  # noqa: F401 - first, so the function below keeps the name
from shmdask import config
from shmdask.base import compute, get, persist, visualize
from shmdask.delayed import Delayed, delayed
from shmdask.tokenize import tokenize

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Delayed",
    "LocalCluster",
    "compute",
    "config",
    "delayed",
    "futures_of",
    "get",
    "persist",
    "tokenize",
    "visualize",
]


def __getattr__(name: str) -> Any:
    # The cluster layer pulls in more machinery; load it on first use.
    if name in ("Client", "LocalCluster", "futures_of"):
        from shmdask import distributed

        return getattr(distributed, name)
    raise AttributeError(f"module 'shmdask' has no attribute {name!r}")
