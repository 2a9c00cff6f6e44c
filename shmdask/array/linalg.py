"""Linear algebra: tensordot, dot, matmul (``@``), vdot, outer.

In: two Arrays (or array-likes).  Out: an Array.  ``tensordot`` is one
blockwise layer: the contracted axes of both operands get the same index
symbols, so their chunks are unified, and each output block is one task that
sums ``numpy.tensordot`` over the matching pairs of input blocks.  ``dot``
and ``matmul`` map numpy's rules for 1-d/2-d/N-d operands onto it.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .blockwise import blockwise_layer_array, unify_chunks
from .convert import asarray
from .core import Array, token_name
from .elementwise import elemwise


def _tensordot_sum(a_blocks: list, b_blocks: list, axes: tuple) -> np.ndarray:
    out = None
    for x, y in zip(a_blocks, b_blocks, strict=False):
        part = np.tensordot(x, y, axes=axes)
        out = part if out is None else out + part
    return out


def _normalize_axes(axes: Any, a_ndim: int, b_ndim: int) -> tuple[tuple, tuple]:
    if isinstance(axes, numbers.Integral):
        n = int(axes)
        if n < 0 or n > min(a_ndim, b_ndim):
            raise ValueError(f"tensordot: axes={n} is out of range for operands of "
                             f"{a_ndim} and {b_ndim} dims")
        return tuple(range(a_ndim - n, a_ndim)), tuple(range(n))
    try:
        a_axes, b_axes = axes
    except (TypeError, ValueError):
        raise ValueError("tensordot: axes must be an int or a pair of axis lists") from None
    a_axes = (a_axes,) if isinstance(a_axes, numbers.Integral) else tuple(a_axes)
    b_axes = (b_axes,) if isinstance(b_axes, numbers.Integral) else tuple(b_axes)
    if len(a_axes) != len(b_axes):
        raise ValueError("tensordot: shape-mismatch for sum (different numbers of axes)")
    for ax, nd in ((a_axes, a_ndim), (b_axes, b_ndim)):
        if any(not -nd <= x < nd for x in ax):
            raise ValueError(f"tensordot: axes {ax} out of range for {nd} dims")
    return tuple(x % a_ndim for x in a_axes), tuple(x % b_ndim for x in b_axes)


def tensordot(a: Any, b: Any, axes: Any = 2) -> Array:
    a, b = asarray(a), asarray(b)
    a_axes, b_axes = _normalize_axes(axes, a.ndim, b.ndim)
    for x, y in zip(a_axes, b_axes, strict=False):
        if a.shape[x] != b.shape[y]:
            raise ValueError(f"tensordot: shape-mismatch for sum: axis {x} of a has length "
                             f"{a.shape[x]}, axis {y} of b has {b.shape[y]}")
    a_ind = [f"a{d}" for d in range(a.ndim)]
    b_ind = [f"b{d}" for d in range(b.ndim)]
    for k, (x, y) in enumerate(zip(a_axes, b_axes, strict=False)):
        a_ind[x] = b_ind[y] = f"c{k:03d}"
    out_ind = tuple(s for s in a_ind if not s.startswith("c")) + tuple(
        s for s in b_ind if not s.startswith("c"))
    chunks_by_sym, pairs = unify_chunks([(a, tuple(a_ind)), (b, tuple(b_ind))])
    dtype = np.result_type(a.dtype, b.dtype)
    from functools import partial
    func = partial(_tensordot_sum, axes=(a_axes, b_axes))
    name = token_name("tensordot", a.name, b.name, a_axes, b_axes)
    out = blockwise_layer_array(func, name, out_ind, chunks_by_sym, pairs, dtype)
    return out


def dot(a: Any, b: Any) -> Array:
    if np.ndim(a) == 0 or np.ndim(b) == 0:
        return elemwise(np.multiply, a, b)
    a, b = asarray(a), asarray(b)
    if b.ndim == 1:
        return tensordot(a, b, axes=((a.ndim - 1,), (0,)))
    return tensordot(a, b, axes=((a.ndim - 1,), (b.ndim - 2,)))


def matmul(a: Any, b: Any) -> Array:
    a, b = asarray(a), asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: input operand does not have enough dimensions")
    if a.ndim > 2 or b.ndim > 2:
        raise NotImplementedError("shmdask.array: matmul of stacks of matrices (ndim > 2) "
                                  "is not supported; use tensordot")
    if a.shape[-1] != b.shape[0 if b.ndim == 1 else -2]:
        raise ValueError(f"matmul: mismatch in core dimension: {a.shape} @ {b.shape}")
    return dot(a, b)


def vdot(a: Any, b: Any) -> Array:
    from .shape import ravel
    a, b = asarray(a), asarray(b)
    return dot(ravel(a).conj(), ravel(b))


def outer(a: Any, b: Any) -> Array:
    from .shape import ravel
    a, b = ravel(asarray(a)), ravel(asarray(b))
    return elemwise(np.multiply, a[:, None], b[None, :])
