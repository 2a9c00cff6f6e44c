"""Arrays born where a task's result will be kept.

A worker process keeps a result of at least its ``threshold`` bytes in shared
memory, and normally copies it there once the task returns: about a
millisecond per 8 MB block, on every such result.  A task that knows the
shape and dtype of the array it is about to fill can ask :func:`empty` for
it instead.  In a worker process the array then lies in a block of the
worker's shared memory, and when the task returns it, the worker keeps that
block as the result without a copy (``cluster/born_blocks.py``).  Anywhere
else -- the threads backend, a small array, /dev/shm full -- it is
``numpy.empty``.

In: a shape and a dtype; the worker installs its maker on each of its task
threads (:func:`install`).  Out: a writeable, C-ordered ndarray.  The values
a task computes never depend on where the array lies.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

_local = threading.local()


def install(maker: Callable[[tuple, np.dtype], Any] | None) -> None:
    """On this thread, :func:`empty` asks ``maker(shape, dtype)`` first; a
    maker answers None for an array it does not place."""
    _local.maker = maker


def empty(shape: tuple, dtype: Any = float) -> np.ndarray:
    """An uninitialised array for a task to fill with its result."""
    maker = getattr(_local, "maker", None)
    if maker is not None:
        array = maker(tuple(shape), np.dtype(dtype))
        if array is not None:
            return array
    return np.empty(shape, dtype)
