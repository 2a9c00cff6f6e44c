"""Arrays made from nothing: ones, zeros, full, empty, *_like, arange, linspace, eye.

In: a shape (or range parameters), ``chunks`` and ``dtype``.  Out: an Array
whose every block is built by a small task from its own shape and offset, as
a blockwise layer -- nothing is allocated until a block is needed, and a
block that only feeds one computation is built inside that computation's
task.  Values match numpy's element for element (``arange`` and
``linspace`` compute ``start + i * step`` from the global position ``i``).
"""

from __future__ import annotations

import math
import numbers
from functools import partial
from typing import Any

import numpy as np

from .chunks import normalize_chunks, offsets
from .convert import asarray
from .core import Array, token_name
from .layers import BlockwiseLayer


def normalize_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """An int or a sequence of ints as a shape tuple; negative sizes are refused."""
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimensions are not allowed: {name}={shape}")
    return shape


def _block_geometry(chunks: tuple, idx: tuple) -> tuple:
    """(offsets, shape) of block ``idx``."""
    return (tuple(offsets(c)[i] for c, i in zip(chunks, idx, strict=False)),
            tuple(c[i] for c, i in zip(chunks, idx, strict=False)))


def _from_geometry(prefix: str, func: Any, chunks: tuple, dtype: Any, token: Any) -> Array:
    name = token_name(prefix, token, chunks, str(np.dtype(dtype)))
    syms = tuple(f".{d}" for d in range(len(chunks)))
    numblocks = tuple(len(c) for c in chunks)
    starts = tuple(offsets(c) for c in chunks)
    layer = BlockwiseLayer(name, func, syms, dict(zip(syms, numblocks, strict=False)),
                           [("perblock", partial(_geometry_of, starts, chunks))],
                           fresh=True)
    return Array({name: layer}, name, chunks, dtype)


def _geometry_of(starts: tuple, chunks: tuple, idx: tuple) -> tuple:
    if len(idx) == 1:  # written once per block of a million-block array: kept cheap
        i = idx[0]
        return (starts[0][i],), (chunks[0][i],)
    return (tuple(s[i] for s, i in zip(starts, idx, strict=False)),
            tuple(c[i] for c, i in zip(chunks, idx, strict=False)))


def _full_block(fill_value: Any, dtype: np.dtype, geometry: tuple) -> np.ndarray:
    return np.full(geometry[1], fill_value, dtype=dtype)


def full(shape: Any, fill_value: Any, dtype: Any = None, chunks: Any = "auto",
         **kwargs: Any) -> Array:
    if np.ndim(fill_value) != 0:
        raise ValueError("fill_value must be a scalar")
    shape = normalize_shape(shape)
    dtype = np.dtype(dtype) if dtype is not None else np.asarray(fill_value).dtype
    chunks = normalize_chunks(chunks, shape, dtype)
    return _from_geometry("full", partial(_full_block, fill_value, dtype), chunks, dtype,
                          (fill_value,))


def ones(shape: Any, dtype: Any = float, chunks: Any = "auto", **kwargs: Any) -> Array:
    shape = normalize_shape(shape)
    dtype = np.dtype(dtype)
    chunks = normalize_chunks(chunks, shape, dtype)
    return _from_geometry("ones", partial(_full_block, 1, dtype), chunks, dtype, ())


def zeros(shape: Any, dtype: Any = float, chunks: Any = "auto", **kwargs: Any) -> Array:
    shape = normalize_shape(shape)
    dtype = np.dtype(dtype)
    chunks = normalize_chunks(chunks, shape, dtype)
    return _from_geometry("zeros", partial(_full_block, 0, dtype), chunks, dtype, ())


def empty(shape: Any, dtype: Any = float, chunks: Any = "auto", **kwargs: Any) -> Array:
    """Like ``zeros``: blocks are cheap to fill, and deterministic contents are safer."""
    shape = normalize_shape(shape)
    dtype = np.dtype(dtype)
    chunks = normalize_chunks(chunks, shape, dtype)
    return _from_geometry("empty", partial(_full_block, 0, dtype), chunks, dtype, ())


def _like(a: Any, dtype: Any, chunks: Any, shape: Any) -> tuple:
    if shape is None:
        shape = a.shape
        if chunks is None:
            chunks = a.chunks if isinstance(a, Array) else "auto"
    if chunks is None:
        chunks = "auto"
    dtype = np.dtype(dtype) if dtype is not None else np.dtype(a.dtype)
    return normalize_shape(shape), dtype, chunks


def ones_like(a: Any, dtype: Any = None, chunks: Any = None, shape: Any = None) -> Array:
    a = a if hasattr(a, "dtype") else np.asarray(a)
    shape, dtype, chunks = _like(a, dtype, chunks, shape)
    return ones(shape, dtype=dtype, chunks=chunks)


def zeros_like(a: Any, dtype: Any = None, chunks: Any = None, shape: Any = None) -> Array:
    a = a if hasattr(a, "dtype") else np.asarray(a)
    shape, dtype, chunks = _like(a, dtype, chunks, shape)
    return zeros(shape, dtype=dtype, chunks=chunks)


def empty_like(a: Any, dtype: Any = None, chunks: Any = None, shape: Any = None) -> Array:
    a = a if hasattr(a, "dtype") else np.asarray(a)
    shape, dtype, chunks = _like(a, dtype, chunks, shape)
    return empty(shape, dtype=dtype, chunks=chunks)


def full_like(a: Any, fill_value: Any, dtype: Any = None, chunks: Any = None,
              shape: Any = None) -> Array:
    a = a if hasattr(a, "dtype") else np.asarray(a)
    shape, dtype, chunks = _like(a, dtype, chunks, shape)
    return full(shape, fill_value, dtype=dtype, chunks=chunks)


def _arange_block(start: Any, step: Any, dtype: np.dtype, geometry: tuple) -> np.ndarray:
    (offset,), (n,) = geometry
    if dtype.kind in "iu":
        return np.arange(start + offset * step, start + (offset + n) * step, step,
                         dtype=dtype)[:n]
    return (start + np.arange(offset, offset + n, dtype=np.float64) * step).astype(dtype)


def arange(*args: Any, chunks: Any = "auto", dtype: Any = None, **kwargs: Any) -> Array:
    if "start" in kwargs or "stop" in kwargs or "step" in kwargs:
        args = (kwargs.pop("start", 0), kwargs.pop("stop"), kwargs.pop("step", 1))
    if kwargs:
        raise TypeError(f"arange got unexpected arguments {sorted(kwargs)}")
    if len(args) == 1:
        start, stop, step = 0, args[0], 1
    elif len(args) == 2:
        (start, stop), step = args, 1
    elif len(args) == 3:
        start, stop, step = args
    else:
        raise TypeError(f"arange takes 1 to 3 positional arguments, got {len(args)}")
    if step == 0:
        raise ValueError("arange: step cannot be zero")
    n = max(0, math.ceil((stop - start) / step))
    dtype = np.dtype(dtype) if dtype is not None else np.arange(start, stop, step)[:0].dtype \
        if n else np.asarray(start + step).dtype
    chunks = normalize_chunks(chunks, (n,), dtype)
    return _from_geometry("arange", partial(_arange_block, start, step, dtype), chunks, dtype,
                          (start, stop, step))


def _linspace_block(start: float, step: float, last: Any, n_total: int, dtype: np.dtype,
                    geometry: tuple) -> np.ndarray:
    (offset,), (n,) = geometry
    out = np.arange(offset, offset + n, dtype=np.float64) * step + start
    if last is not None and offset + n == n_total and n:
        out[-1] = last
    return out.astype(dtype)


def linspace(start: float, stop: float, num: int = 50, endpoint: bool = True,
             retstep: bool = False, chunks: Any = "auto", dtype: Any = None) -> Any:
    num = int(num)
    if num < 0:
        raise ValueError(f"number of samples, {num}, must be non-negative")
    div = (num - 1) if endpoint else num
    step = (stop - start) / div if div > 0 else float("nan")
    dtype = np.dtype(dtype) if dtype is not None else np.result_type(start, stop, float(num))
    chunks = normalize_chunks(chunks, (num,), dtype)
    last = stop if endpoint and num > 1 else None
    arr = _from_geometry("linspace", partial(_linspace_block, start,
                                             step if div > 0 else 0.0, last, num, dtype),
                         chunks, dtype, (start, stop, num, endpoint))
    return (arr, step) if retstep else arr


def _eye_block(k: int, dtype: np.dtype, geometry: tuple) -> np.ndarray:
    (r0, c0), (nr, nc) = geometry
    return np.eye(nr, nc, k=k - c0 + r0, dtype=dtype)


def eye(N: int, chunks: Any = "auto", M: int | None = None, k: int = 0,
        dtype: Any = float) -> Array:
    M = N if M is None else M
    dtype = np.dtype(dtype)
    chunks = normalize_chunks(chunks, (N, M), dtype)
    return _from_geometry("eye", partial(_eye_block, k, dtype), chunks, dtype, (N, M, k))


def identity(n: int, dtype: Any = float, chunks: Any = "auto") -> Array:
    return eye(n, chunks=chunks, dtype=dtype)


__all__ = ["full", "ones", "zeros", "empty", "ones_like", "zeros_like", "empty_like",
           "full_like", "arange", "linspace", "eye", "identity", "asarray", "_block_geometry"]
