"""Joining Arrays: ``concatenate``, ``stack``, ``hstack``/``vstack``/``dstack``, ``block``.

In: sequences (or nested lists, for ``block``) of Arrays or array-likes.
Out: an Array whose blocks are the inputs' blocks, renumbered along the
joined axis; no data is copied except for a dtype cast.  Every other joiner
reduces to ``concatenate``, which first aligns the blocks of the other axes
(``unify_chunks``) so each output block comes from exactly one input block.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np

from .blockwise import _sym, unify_chunks
from .convert import asarray
from .core import Array, token_name
from .layers import MaterializedLayer
from .shape import atleast_1d, atleast_2d, expand_dims


def _identity(x: Any) -> Any:
    return x


def concatenate(seq: Sequence[Any], axis: int = 0, allow_unknown_chunksizes: bool = False) -> Array:
    seq = [asarray(a) for a in seq]
    if not seq:
        raise ValueError("need at least one array to concatenate")
    ndim = seq[0].ndim
    if ndim == 0:
        raise ValueError("zero-dimensional arrays cannot be concatenated")
    if any(a.ndim != ndim for a in seq):
        raise ValueError("all the input arrays must have the same number of dimensions, "
                         f"got {[a.ndim for a in seq]}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of bounds for arrays of {ndim} dims")
    axis %= ndim
    for d in range(ndim):
        if d != axis and len({a.shape[d] for a in seq}) > 1:
            raise ValueError(f"concatenate: sizes along axis {d} differ: "
                             f"{[a.shape[d] for a in seq]}")
    dtype = np.result_type(*[a.dtype for a in seq])
    if len(seq) == 1:
        return seq[0]
    ind = tuple(_sym(i) if i != axis else f"cat{i}" for i in range(ndim))
    pairs = [(a, tuple(s if d != axis else f"cat{k}" for d, s in enumerate(ind)))
             for k, a in enumerate(seq)]
    _, pairs = unify_chunks(pairs)
    seq = [p[0] for p in pairs]
    name = token_name("concatenate", axis, *[a.name for a in seq])
    dsk = {}
    layers: dict = {}
    base = 0
    for a in seq:
        layers.update(a._layers)
        for idx in product(*(range(n) for n in a.numblocks)):
            out = list(idx)
            out[axis] += base
            src = (a.name,) + idx
            dsk[(name,) + tuple(out)] = (_cast, src, dtype) if a.dtype != dtype else \
                (_identity, src)
        base += a.numblocks[axis]
    chunks = list(seq[0].chunks)
    chunks[axis] = tuple(b for a in seq for b in a.chunks[axis])
    layers[name] = MaterializedLayer(name, dsk, [a.name for a in seq])
    return Array(layers, name, tuple(chunks), dtype)


def _cast(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return x.astype(dtype)


def stack(seq: Sequence[Any], axis: int = 0) -> Array:
    seq = [asarray(a) for a in seq]
    if not seq:
        raise ValueError("need at least one array to stack")
    shapes = {a.shape for a in seq}
    if len(shapes) > 1:
        raise ValueError(f"all input arrays must have the same shape, got {sorted(shapes)}")
    ndim = seq[0].ndim + 1
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of bounds for the stacked array of {ndim} dims")
    return concatenate([expand_dims(a, axis) for a in seq], axis=axis % ndim)


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


def block(arrays: Any) -> Array:
    """numpy.block for nested lists of Arrays (depth = number of concatenations)."""
    def depth(item: Any) -> int:
        return 1 + depth(item[0]) if isinstance(item, list) else 0

    d = depth(arrays)
    if d == 0:
        return asarray(arrays)

    def glue(item: Any, level: int) -> Array:
        if not isinstance(item, list):
            a = asarray(item)
            while a.ndim < d:
                a = expand_dims(a, 0)
            return a
        parts = [glue(i, level + 1) for i in item]
        return concatenate(parts, axis=level - d)

    return glue(arrays, 0)
