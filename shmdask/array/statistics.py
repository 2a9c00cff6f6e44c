"""Order statistics and friends: median, percentile, quantile, diff, histogram, average.

In: an Array (and axis / bins / weights).  Out: an Array.

Medians and percentiles need every value along the reduced axes at once, so
those axes are first rechunked into one block (the other axes keep their
blocks and their parallelism) and numpy's own function runs per block: exact
results, at the cost of whole-axis blocks.  ``axis=None`` therefore gathers
the whole array into one task.  ``histogram`` needs its bin edges up front
(``bins`` as edges, or a count with ``range=``); per-block counts are summed
in a tree.  ``diff`` is a difference of two shifted slices; ``average`` is
two sums.
"""

from __future__ import annotations

import math
import numbers
from functools import partial
from typing import Any

import numpy as np

from .blockwise import map_blocks
from .convert import asarray
from .core import Array, token_name
from .layers import MaterializedLayer
from .reductions import combine_tree, normalize_axis


def _reduce_whole_axes(func: Any, x: Any, axis: Any, keepdims: bool, dtype: Any,
                       **kwargs: Any) -> Array:
    x = asarray(x)
    if axis is None:
        from .shape import ravel
        x, axes, flat = ravel(x), (0,), True
    else:
        axes, flat = normalize_axis(axis, x.ndim), False
    x = x.rechunk({a: -1 for a in axes})
    out = map_blocks(partial(_apply_keepdims, func, axes, kwargs), x, dtype=dtype,
                     chunks=tuple((1,) * len(c) if d in axes else c
                                  for d, c in enumerate(x.chunks)))
    if flat or keepdims:  # flat: ``_finish`` gives it numpy's shape
        return out
    from .shape import squeeze
    return squeeze(out, axes)


def _apply_keepdims(func: Any, axes: tuple, kwargs: dict, block: np.ndarray) -> np.ndarray:
    return np.asarray(func(block, axis=axes, keepdims=True, **kwargs))


def _float_dtype(x: Array) -> np.dtype:
    return np.result_type(x.dtype, np.float64) if x.dtype.kind in "biu" else x.dtype


def median(a: Any, axis: Any = None, keepdims: bool = False, out: Any = None) -> Array:
    _no_out(out, "median")
    x = asarray(a)
    return _finish(_reduce_whole_axes(np.median, x, axis, keepdims, _float_dtype(x)), x,
                   axis, keepdims)


def nanmedian(a: Any, axis: Any = None, keepdims: bool = False, out: Any = None) -> Array:
    _no_out(out, "nanmedian")
    x = asarray(a)
    return _finish(_reduce_whole_axes(np.nanmedian, x, axis, keepdims, _float_dtype(x)), x,
                   axis, keepdims)


def percentile(a: Any, q: Any, axis: Any = None, method: str = "linear",
               keepdims: bool = False) -> Array:
    return _quantile(np.percentile, a, q, axis, method, keepdims)


def quantile(a: Any, q: Any, axis: Any = None, method: str = "linear",
             keepdims: bool = False) -> Array:
    return _quantile(np.quantile, a, q, axis, method, keepdims)


def _quantile(func: Any, a: Any, q: Any, axis: Any, method: str, keepdims: bool) -> Array:
    x = asarray(a)
    if np.ndim(q) != 0:
        raise NotImplementedError(f"shmdask.array.{func.__name__} with several q at once "
                                  "(call it once per q)")
    return _finish(_reduce_whole_axes(func, x, axis, keepdims, _float_dtype(x), q=q,
                                      method=method), x, axis, keepdims)


def _finish(out: Array, x: Array, axis: Any, keepdims: bool) -> Array:
    """axis=None: a 0-d result (or all-ones shape with keepdims), like numpy."""
    if axis is not None:
        return out
    from .shape import reshape
    return reshape(out, (1,) * x.ndim if keepdims else ())


def diff(a: Any, n: int = 1, axis: int = -1) -> Array:
    x = asarray(a)
    if n < 0:
        raise ValueError(f"order must be non-negative but got {n}")
    (axis,) = normalize_axis(axis, x.ndim)
    for _ in range(n):
        hi = tuple(slice(1, None) if d == axis else slice(None) for d in range(x.ndim))
        lo = tuple(slice(None, -1) if d == axis else slice(None) for d in range(x.ndim))
        x = x[hi] - x[lo]
    return x


def _hist_block(bins: np.ndarray, block: np.ndarray, weights: Any = None) -> np.ndarray:
    return np.histogram(block, bins=bins, weights=weights)[0]


def _hist_sum(parts: list) -> np.ndarray:
    return np.sum(parts, axis=0)


def histogram(a: Any, bins: Any = 10, range: Any = None, weights: Any = None,
              density: bool = False, split_every: int = 32) -> tuple[Array, np.ndarray]:
    """Counts per bin (an Array) and the bin edges (numpy), like ``numpy.histogram``."""
    x = asarray(a)
    if isinstance(bins, numbers.Integral):
        if range is None:
            raise ValueError("histogram(bins=<int>) needs range=(low, high): the edges must be "
                             "known before computing (or pass the edges as bins)")
        edges = np.linspace(range[0], range[1], int(bins) + 1)
    else:
        edges = np.asarray(bins)
        if edges.ndim != 1 or edges.size < 2:
            raise ValueError("bins must be an int or a 1-d sequence of at least two edges")
    if weights is not None:
        w = asarray(weights)
        if w.shape != x.shape:
            raise ValueError(f"weights shape {w.shape} differs from the array's {x.shape}")
        w = w.rechunk(x.chunks)
    name = token_name("histogram", x.name, edges, None if weights is None else w.name)
    dsk: dict = {}
    level = []
    for n, idx in enumerate(np.ndindex(*x.numblocks)):
        key = (f"{name}-block", n)
        if weights is None:
            dsk[key] = (_hist_block, edges, (x.name,) + idx)
        else:
            dsk[key] = (_hist_block, edges, (x.name,) + idx, (w.name,) + idx)
        level.append(key)
    combine_tree(dsk, level, name, _hist_sum, split_every)
    layers = dict(x._layers)
    deps = [x.name]
    if weights is not None:
        layers.update(w._layers)
        deps.append(w.name)
    layers[name] = MaterializedLayer(name, dsk, deps)
    dtype = np.result_type(np.intp if weights is None else w.dtype)
    counts = Array(layers, name, ((len(edges) - 1,),), dtype)
    if density:
        widths = np.diff(edges)
        counts = counts / (counts.sum() * widths)
    return counts, edges



def average(a: Any, axis: Any = None, weights: Any = None, returned: bool = False,
            keepdims: bool = False) -> Any:
    from .reductions import mean
    from .reductions import sum as sum_
    x = asarray(a)
    if weights is None:
        avg = mean(x, axis=axis, keepdims=keepdims)
        if returned:
            count = x.size if axis is None else math.prod(
                x.shape[d] for d in normalize_axis(axis, x.ndim))
            return avg, count
        return avg
    w = asarray(weights)
    if w.shape != x.shape:
        if axis is None or w.ndim != 1 or x.shape[normalize_axis(axis, x.ndim)[0]] != w.shape[0]:
            raise ValueError("weights must have the array's shape, or be 1-d along one axis")
        (ax,) = normalize_axis(axis, x.ndim)
        w = w.reshape((-1,) + (1,) * (x.ndim - ax - 1))
    total = sum_(w * x, axis=axis, keepdims=keepdims)
    scale = sum_(w + x * 0, axis=axis, keepdims=keepdims)
    avg = total / scale
    return (avg, scale) if returned else avg


def _no_out(out: Any, name: str) -> None:
    if out is not None:
        raise NotImplementedError(f"shmdask.array.{name}(out=...) is not supported")
