"""Small numpy routines on Arrays: take, broadcast_to, flip, unique, shape queries.

In: Arrays or array-likes.  Out: Arrays built from the primitive layers of
the other modules (indexing, blockwise, reductions), so they inherit their
chunking and fusion behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from .convert import asarray
from .core import Array, token_name
from .layers import BlockwiseLayer
from .reductions import combine_tree


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


def flip(x: Any, axis: Any = None) -> Array:
    from .reductions import normalize_axis
    x = asarray(x)
    axes = normalize_axis(axis, x.ndim)
    return x[tuple(slice(None, None, -1) if d in axes else slice(None) for d in range(x.ndim))]


def flipud(x: Any) -> Array:
    return flip(x, 0)


def fliplr(x: Any) -> Array:
    return flip(x, 1)


def count_nonzero(x: Any, axis: Any = None, keepdims: bool = False) -> Array:
    from .reductions import sum as sum_
    x = asarray(x)
    return sum_(x != 0, axis=axis, keepdims=keepdims, dtype=np.intp)


def isin(element: Any, test_elements: Any, assume_unique: bool = False,
         invert: bool = False) -> Array:
    from .elementwise import elemwise
    test = np.asarray(test_elements)
    return elemwise(partial(np.isin, test_elements=test, assume_unique=assume_unique,
                            invert=invert), asarray(element), dtype=bool)


def _unique_block(x: np.ndarray) -> np.ndarray:
    return np.unique(x)


def _unique_combine(parts: list) -> np.ndarray:
    return np.unique(np.concatenate(parts))


def unique(x: Any, split_every: int = 32) -> Array:
    """Sorted distinct values; the result's length is unknown until computed."""
    import math

    from .layers import MaterializedLayer
    x = asarray(x)
    name = token_name("unique", x.name)
    keys = [(x.name,) + idx for idx in np.ndindex(*x.numblocks)]
    dsk: dict = {}
    level = [(f"{name}-chunk", i) for i in range(len(keys))]
    for k, key in zip(level, keys, strict=True):
        dsk[k] = (_unique_block, key)
    combine_tree(dsk, level, name, _unique_combine, split_every)
    layers = dict(x._layers)
    layers[name] = MaterializedLayer(name, dsk, (x.name,))
    return Array(layers, name, ((math.nan,),), x.dtype)


def array_equal(a1: Any, a2: Any, equal_nan: bool = False) -> Any:
    """Lazy ``numpy.array_equal``: a 0-d bool Array (``bool()`` computes it)."""
    from .reductions import all as all_
    x, y = asarray(a1), asarray(a2)
    if x.shape != y.shape:
        return False
    if equal_nan:
        return all_((x == y) | (isnan_(x) & isnan_(y)))
    return all_(x == y)


def isnan_(x: Array) -> Array:
    import numpy as _np

    from .elementwise import elemwise
    return elemwise(_np.isnan, x)


class BlockView:
    """``x.blocks[i, j]``: an Array made of the selected blocks of ``x``."""

    def __init__(self, array: Array):
        self._array = array

    @property
    def shape(self) -> tuple:
        return self._array.numblocks

    def __getitem__(self, index: Any) -> Array:
        import numbers as _numbers

        from .layers import MaterializedLayer
        x = self._array
        if not isinstance(index, tuple):
            index = (index,)
        if any(i is None or i is Ellipsis for i in index) and Ellipsis not in index:
            raise IndexError("blocks[...] takes ints, slices and lists of block numbers")
        if Ellipsis in index:
            k = index.index(Ellipsis)
            index = index[:k] + (slice(None),) * (x.ndim - len(index) + 1) + index[k + 1:]
        if len(index) > x.ndim:
            raise IndexError(f"too many block indices for an array of {x.ndim} dims")
        index = index + (slice(None),) * (x.ndim - len(index))
        picks = []
        for d, i in enumerate(index):
            n = x.numblocks[d]
            if isinstance(i, _numbers.Integral):
                if not -n <= i < n:
                    raise IndexError(f"block index {i} out of range for {n} blocks "
                                     f"along axis {d}")
                picks.append([int(i) % n])
            elif isinstance(i, slice):
                picks.append(list(range(n))[i])
            else:
                picks.append([int(v) % n for v in np.atleast_1d(i)])
        name = token_name("blocks", x.name, repr(picks))
        dsk = {}
        for out_idx in np.ndindex(*[len(p) for p in picks]):
            src = tuple(p[k] for p, k in zip(picks, out_idx, strict=True))
            dsk[(name,) + out_idx] = (_same_block, (x.name,) + src)
        chunks = tuple(tuple(x.chunks[d][b] for b in p) for d, p in enumerate(picks))
        layers = dict(x._layers)
        layers[name] = MaterializedLayer(name, dsk, (x.name,))
        return Array(layers, name, chunks, x.dtype)


def _same_block(x: Any) -> Any:
    return x


def to_hdf5(filename: str, *args: Any, **kwargs: Any) -> None:
    """Write Arrays into an HDF5 file (needs ``h5py``).

    ``to_hdf5(fn, "/x", x)`` or ``to_hdf5(fn, {"/x": x, "/y": y})``; extra
    keyword arguments go to ``h5py.File.require_dataset`` (e.g. compression).
    Blocks are computed, then written from this process (HDF5 handles are not
    safe to share between threads or processes).
    """
    try:
        import h5py
    except ImportError:
        raise ImportError("to_hdf5 needs the h5py package (pip install h5py)") from None
    from .convert import store
    if len(args) == 1 and isinstance(args[0], dict):
        data = dict(args[0])
    elif len(args) == 2 and isinstance(args[0], str):
        data = {args[0]: args[1]}
    else:
        raise ValueError("use to_hdf5(filename, '/path', array) or "
                         "to_hdf5(filename, {'/path': array, ...})")
    with h5py.File(filename, mode="a") as f:
        targets = [f.require_dataset(path, shape=x.shape, dtype=x.dtype, **kwargs)
                   for path, x in data.items()]
        store([asarray(x) for x in data.values()], targets)
