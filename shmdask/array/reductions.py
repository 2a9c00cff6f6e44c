"""Reductions (sum, mean, std, argmin, ...) as tree reductions.

In: an Array, ``axis`` (int, tuple or None), ``keepdims``, ``split_every``
(int, or dict axis -> fan-in).  Out: an Array with the reduced axes removed
(or kept with length 1).

Shape of the graph, and why:

1. one *chunk* step per block, a blockwise layer, so it absorbs the
   elementwise work that produced its input (``(sin(x) + 1).sum()`` is one
   task per block plus the tree);
2. *combine* steps, each taking up to ``split_every`` neighbouring
   intermediates along the reduced axes, until one block per output block
   remains -- a tree keeps every task's fan-in small and the task count at
   ``n / (split_every - 1)`` beyond the chunk step;
3. the last step also *aggregates* (e.g. total / count for a mean) and drops
   the reduced axes unless ``keepdims``.

Intermediates keep every reduced axis at length 1, so a combine step only
concatenates along one of them and reduces again.  Compound reductions carry
dicts of such arrays (``{"n", "total", "m2"}`` for variance), combined with
the parallel formulas so no precision is lost to naive sums of squares.
"""

from __future__ import annotations

import builtins
import math
import numbers
import warnings
from collections.abc import Callable
from functools import partial
from itertools import product
from typing import Any

import numpy as np

from shmdask.tokenize import tokenize

from .chunks import offsets
from .convert import asarray
from .core import Array, token_name
from .layers import BlockwiseLayer, MaterializedLayer

DEFAULT_SPLIT_EVERY = 32


def normalize_axis(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, numbers.Integral):
        axis = (int(axis),)
    axis = tuple(axis)
    out = []
    for a in axis:
        if not isinstance(a, numbers.Integral):
            raise TypeError(f"axis must be an int, tuple of ints or None, got {a!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of bounds for an array of {ndim} dims")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axis}")
    return tuple(sorted(out))


def _split_every(split_every: Any, axes: tuple[int, ...]) -> dict[int, int]:
    if split_every is None:
        split_every = DEFAULT_SPLIT_EVERY
    if isinstance(split_every, dict):
        n = {a: int(split_every.get(a, 2)) for a in axes}
    elif isinstance(split_every, numbers.Integral):
        per = builtins.max(2, int(round(split_every ** (1 / builtins.max(1, len(axes))), 9)))
        n = dict.fromkeys(axes, per)
    else:
        raise TypeError(f"split_every must be an int or a dict, got {split_every!r}")
    bad = {a: v for a, v in n.items() if v < 2}
    if bad:
        raise ValueError(f"split_every must be at least 2, got {bad}")
    return n


def combine_tree(dsk: dict, level: list, name: str, combine: Callable,
                 split_every: int) -> tuple:
    """Combine the values of keys ``level`` in a tree, ``split_every`` at a time,
    into one key ``(name, 0)`` of ``dsk``; for reductions over a flat list of
    blocks (histograms, unique values) rather than along array axes."""
    depth = 0
    while len(level) > split_every:
        depth += 1
        level = [_combine_key(dsk, (f"{name}-partial{depth}", i // split_every), combine,
                              level[i:i + split_every])
                 for i in range(0, len(level), split_every)]
    return _combine_key(dsk, (name, 0), combine, level)


def _combine_key(dsk: dict, key: tuple, combine: Callable, parts: list) -> tuple:
    dsk[key] = (combine, parts)
    return key


def _squeeze_final(out: Any, axis: tuple, keepdims: bool) -> Any:
    if not keepdims and isinstance(out, np.ndarray):
        out = out.reshape([n for d, n in enumerate(out.shape) if d not in axis])
        if out.ndim == 0:
            return out[()]
    return out


def _chunk_aggregate(chunk: Callable, aggregate: Callable, axis: tuple, keepdims: bool,
                     *args: Any) -> Any:
    return _squeeze_final(aggregate(chunk(*args), axis), axis, keepdims)


def _combine_aggregate(combine: Callable, aggregate: Callable, axis: tuple, keepdims: bool,
                       parts: list) -> Any:
    return _squeeze_final(aggregate(combine(parts, axis), axis), axis, keepdims)


def reduction(x: Any, chunk: Callable, combine: Callable, aggregate: Callable, axis: Any,
              keepdims: bool, dtype: Any, split_every: Any, prefix: str,
              perblock: Callable | None = None, token_extra: Any = ()) -> Array:
    """Build the chunk / combine / aggregate graph described in the module docstring.

    ``chunk(block, [perblock(idx)])`` -> intermediate (reduced axes kept, length 1);
    ``combine(list_of_intermediates, axis)`` -> intermediate;
    ``aggregate(intermediate, axis)`` -> result with the reduced axes still length 1.
    """
    x = asarray(x)
    axes = normalize_axis(axis, x.ndim)
    split = _split_every(split_every, axes)
    token = tokenize(x.name, prefix, axes, keepdims, str(dtype), split, token_extra)
    nb = x.numblocks
    syms = tuple(f".{d}" for d in range(x.ndim))
    layers = dict(x._layers)
    out_chunks = tuple((1,) if d in axes else c for d, c in enumerate(x.chunks)
                       if keepdims or d not in axes)
    if builtins.all(nb[a] == 1 for a in axes):
        name = f"{prefix}-{token}"
        in_index = tuple(0 if d in axes else s for d, s in enumerate(syms))
        out_ind = tuple((f"k{d}" if d in axes else s) for d, s in enumerate(syms)
                        if keepdims or d not in axes)
        numblocks = {s: n for s, n in zip(syms, nb, strict=False)}
        numblocks.update({f"k{d}": 1 for d in axes})
        args = [("array", x.name, in_index, nb)]
        if perblock is not None:
            args.append(("perblock", partial(_full_index, in_index, syms, out_ind, perblock)))
        func = partial(_chunk_aggregate, chunk, aggregate, axes, keepdims)
        layers[name] = BlockwiseLayer(name, func, out_ind, numblocks, args)
        return Array(layers, name, out_chunks, dtype)

    chunk_name = f"{prefix}-chunk-{token}"
    args = [("array", x.name, syms, nb)]
    if perblock is not None:
        args.append(("perblock", perblock))
    layers[chunk_name] = BlockwiseLayer(chunk_name, chunk, syms,
                                        dict(zip(syms, nb, strict=False)), args)

    current, cur_nb, level = chunk_name, list(nb), 0
    while True:
        new_nb = [-(-n // split[d]) if d in axes else n for d, n in enumerate(cur_nb)]
        final = builtins.all(new_nb[a] == 1 for a in axes)
        if final:
            name = f"{prefix}-aggregate-{token}"
            func = partial(_combine_aggregate, combine, aggregate, axes, keepdims)
        else:
            name = f"{prefix}-partial-{tokenize(token, level)}"
            func = partial(combine, axis=axes)
        dsk = {}
        for idx in product(*(range(n) for n in new_nb)):
            groups = [range(i * split[d], builtins.min((i + 1) * split[d], cur_nb[d]))
                      if d in axes else (i,) for d, i in enumerate(idx)]
            parts = [(current,) + combo for combo in product(*groups)]
            out_idx = idx if (keepdims or not final) else tuple(
                i for d, i in enumerate(idx) if d not in axes)
            dsk[(name,) + out_idx] = (func, parts)
        layers[name] = MaterializedLayer(name, dsk, (current,))
        if final:
            return Array(layers, name, out_chunks, dtype)
        current, cur_nb, level = name, new_nb, level + 1


def _full_index(in_index: tuple, syms: tuple, out_ind: tuple, perblock: Callable,
                out_idx: tuple) -> Any:
    """Per-block info for the single-step case: map the output index back to the input's."""
    env = dict(zip(out_ind, out_idx, strict=False))
    return perblock(tuple(0 if type(c) is int else env[c] for c in in_index))


# --------------------------------------------------------------------------- simple reductions

def _simple_chunk(func: Callable, x: np.ndarray, axis: tuple, dtype: Any = None,
                  quiet: bool = False) -> np.ndarray:
    kw = {"dtype": dtype} if dtype is not None else {}
    if quiet:  # nan-reductions warn on all-NaN slices; numpy's answer (nan) is what we want
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(func(x, axis=axis, keepdims=True, **kw))
    return func(x, axis=axis, keepdims=True, **kw)


def _simple_combine(func: Callable, parts: list, axis: tuple, dtype: Any = None,
                    quiet: bool = False) -> np.ndarray:
    joined = np.concatenate(parts, axis=axis[0]) if len(parts) > 1 else parts[0]
    return _simple_chunk(func, joined, axis, dtype, quiet)


def _identity_aggregate(x: Any, axis: tuple) -> Any:
    return x


def _simple(func: Callable, name: str, x: Any, axis: Any, dtype: Any, keepdims: bool,
            split_every: Any, combine_func: Callable | None = None) -> Array:
    x = asarray(x)
    meta = np.ones((1,) * x.ndim, dtype=x.dtype)
    kw = {"dtype": dtype} if dtype is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out_dtype = np.asarray(func(meta, **kw)).dtype
    chunk_dtype = dtype
    combine_func = combine_func or func
    quiet = name.startswith("nan")
    chunk = partial(_simple_chunk, func, axis=normalize_axis(axis, x.ndim), dtype=chunk_dtype,
                    quiet=quiet)
    combine = partial(_simple_combine, combine_func, dtype=chunk_dtype, quiet=quiet)
    return reduction(x, chunk, combine, _identity_aggregate, axis, keepdims, out_dtype,
                     split_every, name)


def sum(a: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False,
        split_every: Any = None, out: Any = None) -> Array:
    _no_out(out, "sum")
    return _simple(np.sum, "sum", a, axis, dtype, keepdims, split_every)


def prod(a: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False,
         split_every: Any = None, out: Any = None) -> Array:
    _no_out(out, "prod")
    return _simple(np.prod, "prod", a, axis, dtype, keepdims, split_every)


def min(a: Any, axis: Any = None, keepdims: bool = False, split_every: Any = None,
        out: Any = None) -> Array:
    _no_out(out, "min")
    _check_nonempty(a, "min")
    return _simple(np.min, "min", a, axis, None, keepdims, split_every)


def max(a: Any, axis: Any = None, keepdims: bool = False, split_every: Any = None,
        out: Any = None) -> Array:
    _no_out(out, "max")
    _check_nonempty(a, "max")
    return _simple(np.max, "max", a, axis, None, keepdims, split_every)


amin, amax = min, max


def any(a: Any, axis: Any = None, keepdims: bool = False, split_every: Any = None,
        out: Any = None) -> Array:
    _no_out(out, "any")
    return _simple(np.any, "any", a, axis, None, keepdims, split_every)


def all(a: Any, axis: Any = None, keepdims: bool = False, split_every: Any = None,
        out: Any = None) -> Array:
    _no_out(out, "all")
    return _simple(np.all, "all", a, axis, None, keepdims, split_every)


def nansum(a: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False,
           split_every: Any = None, out: Any = None) -> Array:
    _no_out(out, "nansum")
    return _simple(np.nansum, "nansum", a, axis, dtype, keepdims, split_every,
                   combine_func=np.sum)


def nanprod(a: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False,
            split_every: Any = None, out: Any = None) -> Array:
    _no_out(out, "nanprod")
    return _simple(np.nanprod, "nanprod", a, axis, dtype, keepdims, split_every,
                   combine_func=np.prod)


def nanmin(a: Any, axis: Any = None, keepdims: bool = False, split_every: Any = None,
           out: Any = None) -> Array:
    _no_out(out, "nanmin")
    _check_nonempty(a, "nanmin")
    return _simple(np.nanmin, "nanmin", a, axis, None, keepdims, split_every)


def nanmax(a: Any, axis: Any = None, keepdims: bool = False, split_every: Any = None,
           out: Any = None) -> Array:
    _no_out(out, "nanmax")
    _check_nonempty(a, "nanmax")
    return _simple(np.nanmax, "nanmax", a, axis, None, keepdims, split_every)


def _no_out(out: Any, name: str) -> None:
    if out is not None:
        raise NotImplementedError(f"shmdask.array.{name}(out=...) is not supported")


def _check_nonempty(a: Any, name: str) -> None:
    if getattr(a, "size", 1) == 0:
        raise ValueError(f"zero-size array to reduction operation {name} which has no identity")


# --------------------------------------------------------------------------- mean / var / std

def _count(x: np.ndarray, axis: tuple, nan: bool) -> np.ndarray:
    if nan:
        return np.sum(~np.isnan(x), axis=axis, keepdims=True, dtype=np.int64)
    shape = tuple(1 if d in axis else n for d, n in enumerate(x.shape))
    return np.full(shape, math.prod(x.shape[d] for d in axis), dtype=np.int64)


def _moment_chunk(x: np.ndarray, axis: tuple, dtype: Any, nan: bool, order: int) -> dict:
    summ = np.nansum if nan else np.sum
    n = _count(x, axis, nan)
    total = summ(x, axis=axis, keepdims=True, dtype=dtype)
    out = {"n": n, "total": np.asarray(total)}
    if order == 2:
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = total / n
            dev = x - mu
            if np.iscomplexobj(dev):
                sq = (dev * np.conj(dev)).real
            else:
                sq = dev * dev
            out["m2"] = np.asarray(summ(sq, axis=axis, keepdims=True, dtype=None))
    return out


def _moment_combine(parts: list, axis: tuple, order: int) -> dict:
    cat = partial(np.concatenate, axis=axis[0])
    ns = cat([p["n"] for p in parts])
    totals = cat([p["total"] for p in parts])
    n = np.sum(ns, axis=axis, keepdims=True)
    total = np.sum(totals, axis=axis, keepdims=True)
    out = {"n": n, "total": total}
    if order == 2:
        m2s = cat([p["m2"] for p in parts])
        with np.errstate(invalid="ignore", divide="ignore"):
            mu_i = totals / ns
            mu = total / n
            dev = np.where(ns > 0, mu_i - mu, 0)
            if np.iscomplexobj(dev):
                dev2 = (dev * np.conj(dev)).real
            else:
                dev2 = dev * dev
            out["m2"] = np.sum(m2s, axis=axis, keepdims=True) + np.sum(ns * dev2, axis=axis,
                                                                          keepdims=True)
    return out


def _mean_aggregate(inter: dict, axis: tuple, dtype: Any) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = inter["total"] / inter["n"]
    return out.astype(dtype, copy=False)


def _var_aggregate(inter: dict, axis: tuple, ddof: int, dtype: Any, root: bool) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = inter["m2"] / np.maximum(inter["n"] - ddof, 0)
    if root:
        out = np.sqrt(out)
    return out.astype(dtype, copy=False)


def _moment_dtype(x: Array, dtype: Any, func: Callable) -> np.dtype:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kw = {"dtype": dtype} if dtype is not None else {}
        return np.asarray(func(np.ones((2,), dtype=x.dtype), **kw)).dtype


def _mean(name: str, a: Any, axis: Any, dtype: Any, keepdims: bool, split_every: Any,
          nan: bool) -> Array:
    x = asarray(a)
    out_dtype = _moment_dtype(x, dtype, np.nanmean if nan else np.mean)
    acc = dtype if dtype is not None else (np.float64 if x.dtype.kind in "biu" else None)
    axes = normalize_axis(axis, x.ndim)
    chunk = partial(_moment_chunk, axis=axes, dtype=acc, nan=nan, order=1)
    combine = partial(_moment_combine, order=1)
    aggregate = partial(_mean_aggregate, dtype=out_dtype)
    return reduction(x, chunk, combine, aggregate, axis, keepdims, out_dtype, split_every, name)


def mean(a: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False,
         split_every: Any = None, out: Any = None) -> Array:
    _no_out(out, "mean")
    return _mean("mean", a, axis, dtype, keepdims, split_every, nan=False)


def nanmean(a: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False,
            split_every: Any = None, out: Any = None) -> Array:
    _no_out(out, "nanmean")
    return _mean("nanmean", a, axis, dtype, keepdims, split_every, nan=True)


def _var(name: str, a: Any, axis: Any, dtype: Any, keepdims: bool, ddof: int, split_every: Any,
         nan: bool, root: bool) -> Array:
    x = asarray(a)
    ref = {(False, False): np.var, (False, True): np.std,
           (True, False): np.nanvar, (True, True): np.nanstd}[(nan, root)]
    out_dtype = _moment_dtype(x, dtype, ref)
    acc = dtype if dtype is not None else (np.float64 if x.dtype.kind in "biu" else None)
    axes = normalize_axis(axis, x.ndim)
    chunk = partial(_moment_chunk, axis=axes, dtype=acc, nan=nan, order=2)
    combine = partial(_moment_combine, order=2)
    aggregate = partial(_var_aggregate, ddof=ddof, dtype=out_dtype, root=root)
    return reduction(x, chunk, combine, aggregate, axis, keepdims, out_dtype, split_every, name,
                     token_extra=ddof)


def var(a: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False, ddof: int = 0,
        split_every: Any = None, out: Any = None) -> Array:
    _no_out(out, "var")
    return _var("var", a, axis, dtype, keepdims, ddof, split_every, nan=False, root=False)


def std(a: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False, ddof: int = 0,
        split_every: Any = None, out: Any = None) -> Array:
    _no_out(out, "std")
    return _var("std", a, axis, dtype, keepdims, ddof, split_every, nan=False, root=True)


def nanvar(a: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False, ddof: int = 0,
           split_every: Any = None, out: Any = None) -> Array:
    _no_out(out, "nanvar")
    return _var("nanvar", a, axis, dtype, keepdims, ddof, split_every, nan=True, root=False)


def nanstd(a: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False, ddof: int = 0,
           split_every: Any = None, out: Any = None) -> Array:
    _no_out(out, "nanstd")
    return _var("nanstd", a, axis, dtype, keepdims, ddof, split_every, nan=True, root=True)


# --------------------------------------------------------------------------- argmin / argmax

def _arg_chunk(x: np.ndarray, info: tuple, axis: tuple, pick: Callable, arg: Callable,
               flat: bool) -> dict:
    """Best value and its global index for one block.

    ``info`` is ``(block offsets, full shape)``; with ``flat`` the index is into
    the raveled array (axis=None), else along the single reduced axis.
    """
    starts, full_shape = info
    if flat:
        local = int(arg(x))
        value = x.reshape(-1)[local]
        where = np.unravel_index(local, x.shape)
        index = np.ravel_multi_index(tuple(int(w) + s for w, s in zip(where, starts, strict=False)),
                                     full_shape)
        shape = (1,) * x.ndim
        return {"v": np.full(shape, value, dtype=x.dtype), "i": np.full(shape, index, np.int64)}
    (a,) = axis
    local = arg(x, axis=a, keepdims=True)
    value = np.take_along_axis(x, local, axis=a)
    return {"v": value, "i": local.astype(np.int64) + starts[a]}


def _arg_combine(parts: list, axis: tuple, arg: Callable, flat: bool) -> dict:
    a = axis[0]
    values = np.concatenate([p["v"] for p in parts], axis=a)
    index = np.concatenate([p["i"] for p in parts], axis=a)
    if flat:
        k = int(arg(values))
        shape = (1,) * values.ndim
        return {"v": np.full(shape, values.reshape(-1)[k], dtype=values.dtype),
                "i": np.full(shape, index.reshape(-1)[k], dtype=np.int64)}
    k = arg(values, axis=a, keepdims=True)
    return {"v": np.take_along_axis(values, k, axis=a), "i": np.take_along_axis(index, k, axis=a)}


def _arg_aggregate(inter: dict, axis: tuple) -> np.ndarray:
    return inter["i"]


def _arg_info(chunks: tuple, shape: tuple, idx: tuple) -> tuple:
    return (tuple(offsets(c)[i] for c, i in zip(chunks, idx, strict=False)), shape)


def _arg_reduction(name: str, a: Any, axis: Any, keepdims: bool, split_every: Any,
                   pick: Callable, arg: Callable) -> Array:
    x = asarray(a)
    if x.size == 0:
        raise ValueError(f"attempt to get {name} of an empty sequence")
    if axis is not None and not isinstance(axis, numbers.Integral):
        raise ValueError(f"{name}: axis must be an int or None, got {axis!r}")
    flat = axis is None
    axes = normalize_axis(axis, x.ndim)
    info = partial(_arg_info, x.chunks, x.shape)
    chunk = partial(_arg_chunk, axis=axes, pick=pick, arg=arg, flat=flat)
    combine = partial(_arg_combine, arg=arg, flat=flat)
    return reduction(x, chunk, combine, _arg_aggregate, axis, keepdims, np.dtype(np.intp),
                     split_every, name, perblock=info)


def argmin(a: Any, axis: Any = None, keepdims: bool = False, split_every: Any = None,
           out: Any = None) -> Array:
    _no_out(out, "argmin")
    return _arg_reduction("argmin", a, axis, keepdims, split_every, np.min, np.argmin)


def argmax(a: Any, axis: Any = None, keepdims: bool = False, split_every: Any = None,
           out: Any = None) -> Array:
    _no_out(out, "argmax")
    return _arg_reduction("argmax", a, axis, keepdims, split_every, np.max, np.argmax)


def nanargmin(a: Any, axis: Any = None, keepdims: bool = False, split_every: Any = None,
              out: Any = None) -> Array:
    _no_out(out, "nanargmin")
    return _arg_reduction("nanargmin", a, axis, keepdims, split_every, np.nanmin, np.nanargmin)


def nanargmax(a: Any, axis: Any = None, keepdims: bool = False, split_every: Any = None,
              out: Any = None) -> Array:
    _no_out(out, "nanargmax")
    return _arg_reduction("nanargmax", a, axis, keepdims, split_every, np.nanmax, np.nanargmax)


__all__ = ["sum", "prod", "min", "max", "amin", "amax", "any", "all", "nansum", "nanprod",
           "nanmin", "nanmax", "mean", "nanmean", "var", "std", "nanvar", "nanstd", "argmin",
           "argmax", "nanargmin", "nanargmax", "reduction", "normalize_axis", "token_name"]
