"""Elementwise operations: ``elemwise`` (the operators and ufuncs), ``clip``, ``where``.

In: a function of blocks and its arguments -- Arrays, numpy arrays, scalars.
Out: an Array of one blockwise layer (``blockwise.py``) with numpy
broadcasting between the arguments.

The layer also records whether its function can write into a private input
block (``inplace``: the ufunc behind a Python operator) and whether it always
allocates its result (``fresh``), so fused chains of elementwise steps reuse
one buffer per block instead of allocating one per step (see ``layers.py``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from .blockwise import _sym, blockwise_layer_array, infer_dtype, unify_chunks
from .chunks import has_unknown
from .convert import asarray, from_array
from .core import Array, token_name
from .layers import quote


def elemwise(op: Callable, *args: Any, dtype: Any = None, name: str | None = None) -> Array:
    """Apply ``op`` block by block with numpy broadcasting between the arguments.

    Arrays are aligned from the trailing axis (numpy's rule); numpy arrays
    become Arrays chunked like their Array partners; scalars are literals.
    """
    if dtype is None:
        dtype = infer_dtype(op, args)
        if dtype is None:
            raise TypeError(f"{getattr(op, '__name__', op)} does not accept arguments of "
                            f"types {[type(a).__name__ for a in args]}")
    shapes = []
    for a in args:
        if isinstance(a, Array):
            shapes.append(a.shape)
        elif isinstance(a, np.ndarray) and a.ndim > 0:
            shapes.append(a.shape)
    if any(isinstance(n, float) for s in shapes for n in s):
        out_shape = _broadcast_unknown(shapes)
    else:
        try:
            out_shape = np.broadcast_shapes(*shapes)
        except ValueError:
            raise ValueError(f"operands could not be broadcast together with shapes "
                             f"{' '.join(map(str, shapes))}") from None
    ndim = len(out_shape)
    out_ind = tuple(_sym(i) for i in range(ndim))
    array_pairs = [(a, out_ind[ndim - a.ndim:]) for a in args if isinstance(a, Array)]
    chunks_by_sym, array_pairs = unify_chunks(array_pairs)
    for d, s in enumerate(out_ind):
        known = not isinstance(out_shape[d], float)
        if s not in chunks_by_sym or (known and not has_unknown((chunks_by_sym[s],))
                                      and sum(chunks_by_sym[s]) != out_shape[d]):
            # no Array spans this axis (only numpy operands, or Arrays broadcasting
            # a length-1 axis): one block along it
            chunks_by_sym[s] = (out_shape[d],)
    aligned = iter(array_pairs)
    specs: list = []
    for a in args:
        if isinstance(a, Array):
            specs.append(next(aligned))
        elif isinstance(a, np.ndarray) and a.ndim > 0:
            ind = out_ind[ndim - a.ndim:]
            ch = tuple(chunks_by_sym[s] if n != 1 or out_shape[ndim - a.ndim + k] == 1
                       else (1,) for k, (s, n) in enumerate(zip(ind, a.shape, strict=False)))
            specs.append((from_array(a, chunks=ch), ind))
        else:
            specs.append(("literal", quote(a[()] if isinstance(a, np.ndarray) else a)))
    if name is None:
        fname = getattr(op, "__name__", None) or getattr(getattr(op, "func", None),
                                                         "__name__", "elemwise")
        name = token_name(fname, op, *[s[0].name if isinstance(s[0], Array) else s
                                       for s in specs])
    out = blockwise_layer_array(op, name, out_ind, chunks_by_sym, specs, dtype)
    layer = out._layers[name]
    inplace = _INPLACE.get(op) if not isinstance(op, np.ufunc) else (
        op if op.nout == 1 and op.signature is None else None)
    layer.inplace = inplace
    layer.out_dtype = np.dtype(dtype)
    layer.fresh = inplace is not None or _allocates(op)
    return out


# Python operators and the numpy ufuncs that compute the same thing on arrays,
# for writing into a private argument (``out=``) instead of allocating.
_INPLACE = {
    operator.add: np.add, operator.sub: np.subtract, operator.mul: np.multiply,
    operator.truediv: np.true_divide, operator.floordiv: np.floor_divide,
    operator.mod: np.remainder, operator.pow: np.power, operator.and_: np.bitwise_and,
    operator.or_: np.bitwise_or, operator.xor: np.bitwise_xor, operator.lshift: np.left_shift,
    operator.rshift: np.right_shift, operator.neg: np.negative, operator.pos: np.positive,
    operator.abs: np.absolute, operator.invert: np.invert, operator.lt: np.less,
    operator.le: np.less_equal, operator.gt: np.greater, operator.ge: np.greater_equal,
    operator.eq: np.equal, operator.ne: np.not_equal,
}


def _astype(x: np.ndarray, dtype: np.dtype, **kwargs: Any) -> np.ndarray:
    return x.astype(dtype, **kwargs)


def _allocates(op: Callable) -> bool:
    """Does ``op`` always return a new array (never a view of an input)?"""
    base = op.func if isinstance(op, partial) else op
    if isinstance(base, np.ufunc):
        return True
    if base is _astype:
        return not (isinstance(op, partial) and op.keywords.get("copy") is False)
    return base in (np.where, np.clip, np.round, np.isclose, np.nan_to_num)


def _broadcast_unknown(shapes: list) -> tuple:
    ndim = max(len(s) for s in shapes)
    out = []
    for d in range(ndim):
        sizes = [s[len(s) - ndim + d] for s in shapes if len(s) - ndim + d >= 0]
        known = [n for n in sizes if not isinstance(n, float) and n != 1]
        unknown = [n for n in sizes if isinstance(n, float)]
        out.append(unknown[0] if unknown else (known[0] if known else 1))
    return tuple(out)


def clip(x: Any, min: Any = None, max: Any = None) -> Array:
    return elemwise(partial(np.clip, a_min=min, a_max=max), asarray(x))


def where(condition: Any, x: Any = None, y: Any = None) -> Array:
    if x is None and y is None:
        raise NotImplementedError("shmdask.array.where(condition) with one argument "
                                  "(use nonzero on a computed array)")
    if x is None or y is None:
        raise ValueError("where() needs both x and y, or neither")
    return elemwise(np.where, asarray(condition) if not isinstance(condition, Array)
                    and np.ndim(condition) else condition, x, y)

