"""Small numpy routines on Arrays: hstack/vstack/dstack, take, broadcast_to, shape queries.

In: Arrays or array-likes.  Out: Arrays built from the primitive layers of
the other modules (concatenate, indexing, blockwise), so they inherit their
chunking and fusion behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from .core import Array, asarray, concatenate, token_name
from .layers import BlockwiseLayer
from .shape import atleast_1d, atleast_2d, expand_dims


def hstack(seq: Sequence[Any]) -> Array:
    seq = [atleast_1d(a) for a in seq]
    return concatenate(seq, axis=0 if seq[0].ndim == 1 else 1)


def vstack(seq: Sequence[Any]) -> Array:
    return concatenate([atleast_2d(a) for a in seq], axis=0)


def dstack(seq: Sequence[Any]) -> Array:
    out = []
    for a in seq:
        a = atleast_2d(a)
        out.append(a if a.ndim >= 3 else expand_dims(a, 2))
    return concatenate(out, axis=2)


def take(a: Any, indices: Any, axis: int | None = None) -> Array:
    from .shape import ravel
    from .slicing import take as _take
    a = asarray(a)
    if axis is None:
        return _take(ravel(a), np.asarray(indices).reshape(-1), 0)
    return _take(a, indices, axis % a.ndim)


def shape(a: Any) -> tuple:
    return tuple(a.shape)


def ndim(a: Any) -> int:
    return a.ndim


def size(a: Any, axis: int | None = None) -> int:
    return a.size if axis is None else a.shape[axis]


def copy(a: Any, order: str = "K", subok: bool = False) -> Array:
    return asarray(a)


def result_type(*arrays_and_dtypes: Any) -> np.dtype:
    return np.result_type(*[a.dtype if isinstance(a, Array) else a for a in arrays_and_dtypes])


def _broadcast_block(block: np.ndarray, shape: tuple) -> np.ndarray:
    return np.broadcast_to(block, shape)


def _shape_of(chunks: tuple, idx: tuple) -> tuple:
    return tuple(c[i] for c, i in zip(chunks, idx, strict=False))


def broadcast_to(x: Any, shape: Sequence[int], chunks: Any = None) -> Array:
    x = asarray(x)
    shape = tuple(int(s) for s in shape)
    try:
        np.broadcast_shapes(x.shape, shape)
    except ValueError:
        raise ValueError(f"cannot broadcast an array of shape {x.shape} to {shape}") from None
    if np.broadcast_shapes(x.shape, shape) != shape:
        raise ValueError(f"cannot broadcast an array of shape {x.shape} to {shape}")
    lead = len(shape) - x.ndim
    in_index, out_ind, chunks_out, numblocks = [], [], [], {}
    for d, n in enumerate(shape):
        if d < lead:
            s = f"new{d}"
            out_ind.append(s)
            numblocks[s] = 1
            chunks_out.append((n,))
            continue
        k = d - lead
        if x.shape[k] == n:
            s = f".{k}"
            in_index.append(s)
            out_ind.append(s)
            numblocks[s] = x.numblocks[k]
            chunks_out.append(x.chunks[k])
        else:
            s = f"new{d}"
            in_index.append(0)
            out_ind.append(s)
            numblocks[s] = 1
            chunks_out.append((n,))
    name = token_name("broadcast_to", x.name, shape)
    layers = dict(x._layers)
    chunks_t = tuple(chunks_out)
    layers[name] = BlockwiseLayer(name, _broadcast_block, tuple(out_ind), numblocks,
                                  [("array", x.name, tuple(in_index), x.numblocks),
                                   ("perblock", partial(_shape_of, chunks_t))])
    out = Array(layers, name, chunks_t, x.dtype)
    if chunks is not None:
        out = out.rechunk(chunks)
    return out
