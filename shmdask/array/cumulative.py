"""Cumulative reductions along an axis: cumsum, cumprod, nancumsum, nancumprod.

In: an Array and an axis (None means the raveled array).  Out: an Array with
the same chunks.  Each block is first scanned on its own (a blockwise layer,
so it fuses with the work that produced the block); then, walking along the
axis, a running *carry* -- the combined last slices of all earlier blocks --
is folded into every later block.  That walk is a chain of small tasks (one
carry per block along the axis), while the big per-block scans run in
parallel.
"""

from __future__ import annotations

from functools import partial
from itertools import product
from typing import Any

import numpy as np

from .convert import asarray
from .core import Array, token_name
from .layers import BlockwiseLayer, MaterializedLayer
from .reductions import normalize_axis


def _scan(func: Any, x: np.ndarray, axis: int, dtype: Any) -> np.ndarray:
    return func(x, axis=axis, dtype=dtype)


def _last(x: np.ndarray, axis: int) -> np.ndarray:
    return np.take(x, [-1], axis=axis) if x.shape[axis] else None


def _fold(op: Any, carry: Any, last: Any) -> Any:
    if carry is None:
        return last
    if last is None:
        return carry
    return op(carry, last)


def _apply(op: Any, block: np.ndarray, carry: Any) -> np.ndarray:
    return block if carry is None else op(block, carry)


def _cumulative(name: str, func: Any, op: Any, x: Any, axis: Any, dtype: Any) -> Array:
    x = asarray(x)
    if axis is None:
        from .shape import ravel
        x, axis = ravel(x), 0
    (axis,) = normalize_axis(axis, x.ndim)
    if dtype is None:
        dtype = func(np.ones((1,), dtype=x.dtype)).dtype
    dtype = np.dtype(dtype)
    token = token_name(name, x.name, axis, str(dtype)).split("-", 1)[1]
    syms = tuple(f".{d}" for d in range(x.ndim))
    scan_name = f"{name}-scan-{token}"
    layers = dict(x._layers)
    layers[scan_name] = BlockwiseLayer(
        scan_name, partial(_scan, func, axis=axis, dtype=dtype), syms,
        dict(zip(syms, x.numblocks, strict=True)),
        [("array", x.name, syms, x.numblocks)])
    out_name = f"{name}-{token}"
    last_name, carry_name = f"{name}-last-{token}", f"{name}-carry-{token}"
    dsk: dict = {}
    others = [range(n) if d != axis else [0] for d, n in enumerate(x.numblocks)]
    for rest in product(*others):
        for k in range(x.numblocks[axis]):
            idx = tuple(k if d == axis else r for d, r in enumerate(rest))
            if k == 0:
                dsk[(out_name,) + idx] = (_apply, op, (scan_name,) + idx, None)
                continue
            prev = tuple(k - 1 if d == axis else r for d, r in enumerate(rest))
            dsk[(last_name,) + prev] = (_last, (scan_name,) + prev, axis)
            carry_prev = (carry_name,) + tuple(k - 2 if d == axis else r
                                                for d, r in enumerate(rest)) if k > 1 else None
            dsk[(carry_name,) + prev] = (partial(_fold, op), carry_prev, (last_name,) + prev)
            dsk[(out_name,) + idx] = (_apply, op, (scan_name,) + idx, (carry_name,) + prev)
    layers[out_name] = MaterializedLayer(out_name, dsk, (scan_name,))
    return Array(layers, out_name, x.chunks, dtype)


def cumsum(x: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Array:
    _no_out(out, "cumsum")
    return _cumulative("cumsum", np.cumsum, np.add, x, axis, dtype)


def cumprod(x: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Array:
    _no_out(out, "cumprod")
    return _cumulative("cumprod", np.cumprod, np.multiply, x, axis, dtype)


def nancumsum(x: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Array:
    _no_out(out, "nancumsum")
    return _cumulative("nancumsum", np.nancumsum, np.add, x, axis, dtype)


def nancumprod(x: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Array:
    _no_out(out, "nancumprod")
    return _cumulative("nancumprod", np.nancumprod, np.multiply, x, axis, dtype)


def _no_out(out: Any, name: str) -> None:
    if out is not None:
        raise NotImplementedError(f"shmdask.array.{name}(out=...) is not supported")
