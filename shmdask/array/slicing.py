"""Indexing: ``x[index]`` with numpy's meaning, one task per output block.

In: an Array and an index made of ints, slices (any step, negative too),
``None``, ``Ellipsis``, plus at most one integer or boolean *array* (a list, a
numpy array, or a boolean shmdask Array of ``x``'s shape or of its first
axis).  Out: an Array.

Basic indexing never moves data between blocks: along each axis the slice
is cut at the input's block boundaries, each output block is one input block
sliced (``getitem`` with a local index), and blocks holding no selected
element disappear.  Integer arrays gather from the blocks they touch and put
the elements back in the requested order; a numpy boolean mask is turned
into the integer positions it selects, so the output chunks stay known.  A
boolean shmdask Array selects block by block, giving chunks of unknown
(nan) length that compute fine and can be made known with
``compute_chunk_sizes()``.  Anything else (several arrays at once, i.e.
numpy's "vectorised" indexing) raises NotImplementedError.
"""

from __future__ import annotations

import math
import numbers
import operator
from itertools import product
from typing import Any

import numpy as np

from .blockwise import unify_chunks
from .chunks import has_unknown, offsets
from .core import Array, token_name
from .layers import BlockwiseLayer, MaterializedLayer


def _is_array_index(i: Any) -> bool:
    return isinstance(i, list | np.ndarray | Array)


def _expand(index: Any, ndim: int) -> tuple:
    if not isinstance(index, tuple):
        index = (index,)
    n_ellipsis = sum(1 for i in index if i is Ellipsis)
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = 0
    for i in index:
        if i is None or i is Ellipsis:
            continue
        if isinstance(i, np.ndarray | Array) and i.dtype == bool:
            used += max(1, i.ndim)
        else:
            used += 1
    if used > ndim:
        raise IndexError(f"too many indices for array: array is {ndim}-dimensional, "
                         f"but {used} were indexed")
    out: list = []
    for i in index:
        if i is Ellipsis:
            out.extend([slice(None)] * (ndim - used))
        else:
            out.append(i)
    if not n_ellipsis:
        out.extend([slice(None)] * (ndim - used))
    return tuple(out)


def _slice_axis(blocks: tuple[int, ...], sl: slice) -> list[tuple[int, slice, int]]:
    """(input block, local slice, length) for each output block along one axis."""
    n = sum(blocks)
    start, stop, step = sl.indices(n)
    out = []
    starts = offsets(blocks)
    if step > 0:
        for b, (lo, size) in enumerate(zip(starts, blocks, strict=False)):
            hi = min(lo + size, stop)
            first = start if start >= lo else start + -(-(lo - start) // step) * step
            if first >= hi:
                continue
            out.append((b, slice(first - lo, hi - lo, step), len(range(first, hi, step))))
    else:
        astep = -step
        for b in range(len(blocks) - 1, -1, -1):
            lo, hi = starts[b], starts[b] + blocks[b]
            top = min(start, hi - 1)
            if top < lo:
                continue
            first = start - -(-(start - top) // astep) * astep
            low = max(stop, lo - 1)
            if first < lo or first <= low:
                continue
            local_stop = low - lo
            out.append((b, slice(first - lo, None if local_stop < 0 else local_stop, step),
                        len(range(first, low, step))))
    if not out:
        out.append((0, slice(0, 0), 0))
    return out


def _int_axis(blocks: tuple[int, ...], i: int, axis: int) -> tuple[int, int]:
    n = sum(blocks)
    if not -n <= i < n:
        raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
    i %= n
    starts = offsets(blocks)
    b = int(np.searchsorted(starts, i, side="right")) - 1
    while blocks[b] == 0:  # skip empty blocks (only possible at the boundary)
        b += 1
    return b, i - starts[b]


def basic_getitem(x: Array, index: tuple) -> Array:
    """``index`` already expanded: one entry (int, slice, None) per axis plus Nones."""
    if all(type(i) is slice and i == slice(None) for i in index) and len(index) == x.ndim:
        return x
    if has_unknown(x.chunks):
        raise ValueError("cannot slice an array with unknown chunk sizes "
                         "(call .compute_chunk_sizes() first)")
    name = token_name("getitem", x.name, repr(index))
    per_axis: list = []
    d = 0
    for i in index:
        if i is None:
            per_axis.append(("new",))
            continue
        if isinstance(i, numbers.Integral):
            per_axis.append(("int",) + _int_axis(x.chunks[d], int(i), d))
        elif type(i) is slice:
            for v in (i.start, i.stop, i.step):
                if v is not None and not isinstance(v, numbers.Integral):
                    raise IndexError(f"slice indices must be integers or None, got {v!r}")
            if i.step == 0:
                raise ValueError("slice step cannot be zero")
            per_axis.append(("slice", _slice_axis(x.chunks[d], i)))
        else:
            raise IndexError(f"only integers, slices, None, Ellipsis and one integer or "
                             f"boolean array are valid indices, got {type(i).__name__}")
        d += 1
    choices = []
    out_chunks = []
    for entry in per_axis:
        if entry[0] == "new":
            choices.append([(None, None, None)])
            out_chunks.append((1,))
        elif entry[0] == "int":
            choices.append([(entry[1], entry[2], "int")])
        else:
            choices.append([(b, sl, "slice") for b, sl, _ in entry[1]])
            out_chunks.append(tuple(n for _, _, n in entry[1]))
    dsk = {}
    src = x.name
    for combo in product(*(range(len(c)) for c in choices)):
        in_idx, local, out_idx = [], [], []
        for axis_choices, k in zip(choices, combo, strict=False):
            b, loc, kind = axis_choices[k]
            if b is None:
                local.append(None)
                out_idx.append(0)
                continue
            in_idx.append(b)
            local.append(loc)
            if kind == "slice":
                out_idx.append(k)
        dsk[(name,) + tuple(out_idx)] = (operator.getitem, (src,) + tuple(in_idx), tuple(local))
    layers = dict(x._layers)
    layers[name] = MaterializedLayer(name, dsk, (src,))
    return Array(layers, name, tuple(out_chunks), x.dtype)


def _take(axis: int, locals_: list, inverse: np.ndarray, *blocks: np.ndarray) -> np.ndarray:
    parts = [np.take(b, loc, axis=axis) for b, loc in zip(blocks, locals_, strict=False)]
    joined = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)
    return np.take(joined, inverse, axis=axis)


def take(x: Array, indices: Any, axis: int) -> Array:
    """``x`` with the elements at integer ``indices`` along ``axis``, in that order."""
    if has_unknown(x.chunks):
        raise ValueError("cannot index an array with unknown chunk sizes "
                         "(call .compute_chunk_sizes() first)")
    idx = np.asarray(indices)
    if idx.ndim != 1:
        raise NotImplementedError("shmdask.array: indexing with a multi-dimensional integer "
                                  "array is not supported")
    if idx.size and idx.dtype.kind not in "iu":
        raise IndexError(f"arrays used as indices must be of integer or boolean type, "
                         f"got {idx.dtype}")
    n = x.shape[axis]
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        bad = idx[(idx < -n) | (idx >= n)][0]
        raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {n}")
    idx = np.where(idx < 0, idx + n, idx)
    blocks = x.chunks[axis]
    starts = np.asarray(offsets(blocks))
    piece = max(1, max(blocks))
    pieces = [idx[i:i + piece] for i in range(0, len(idx), piece)] or [idx[:0]]
    name = token_name("take", x.name, axis, idx)
    dsk = {}
    other = [range(nb) if d != axis else [None] for d, nb in enumerate(x.numblocks)]
    for p, sel in enumerate(pieces):
        owner = np.searchsorted(starts, sel, side="right") - 1
        needed = [int(b) for b in np.unique(owner)] or [0]
        locals_, positions = [], []
        for b in needed:
            mask = owner == b
            locals_.append(sel[mask] - starts[b])
            positions.append(np.nonzero(mask)[0])
        inverse = np.argsort(np.concatenate(positions), kind="stable")
        for rest in product(*other):
            keys = []
            for b in needed:
                in_idx = tuple(b if d == axis else r for d, r in enumerate(rest))
                keys.append((x.name,) + in_idx)
            out_idx = tuple(p if d == axis else r for d, r in enumerate(rest))
            dsk[(name,) + out_idx] = (_take, axis, locals_, inverse, *keys)
    chunks = list(x.chunks)
    chunks[axis] = tuple(len(s) for s in pieces)
    layers = dict(x._layers)
    layers[name] = MaterializedLayer(name, dsk, (x.name,))
    return Array(layers, name, tuple(chunks), x.dtype)


def _mask_select(block: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return block[mask]


def _bool_array_getitem(x: Array, mask: Array) -> Array:
    if mask.ndim == x.ndim and mask.shape == x.shape:
        if x.ndim > 1:
            from .shape import ravel
            x, mask = ravel(x), ravel(mask)
    elif not (mask.ndim == 1 and x.ndim >= 1 and mask.shape[0] == x.shape[0]):
        raise IndexError(f"boolean index of shape {mask.shape} does not match the array's "
                         f"shape {x.shape} (or its first axis)")
    syms = tuple(f".{d}" for d in range(x.ndim))
    chunks_by_sym, pairs = unify_chunks([(x, syms), (mask, syms[:1] if mask.ndim == 1 and
                                                     x.ndim > 1 else syms)])
    (x, x_ind), (mask, m_ind) = pairs
    name = token_name("getitem-mask", x.name, mask.name)
    layers = dict(x._layers)
    layers.update(mask._layers)
    numblocks = {s: len(c) for s, c in chunks_by_sym.items()}
    layers[name] = BlockwiseLayer(name, _mask_select, syms, numblocks,
                                  [("array", x.name, x_ind, x.numblocks),
                                   ("array", mask.name, m_ind, mask.numblocks)])
    chunks = ((math.nan,) * len(chunks_by_sym[syms[0]]),) + tuple(
        chunks_by_sym[s] for s in syms[1:])
    return Array(layers, name, chunks, x.dtype)


def getitem(x: Array, index: Any) -> Array:
    if isinstance(index, Array) and index.dtype == bool:
        return _bool_array_getitem(x, index)
    if isinstance(index, Array):
        raise NotImplementedError("shmdask.array: indexing with an integer shmdask Array "
                                  "is not supported (compute the indices first)")
    if isinstance(index, tuple) and any(isinstance(i, Array) for i in index):
        raise NotImplementedError("shmdask.array: a shmdask Array inside an index tuple is "
                                  "not supported (use x[mask] with a full-shape mask)")
    expanded = _expand(index, x.ndim)
    array_positions = [k for k, i in enumerate(expanded) if _is_array_index(i)]
    if not array_positions:
        return basic_getitem(x, expanded)
    if len(array_positions) > 1:
        raise NotImplementedError("shmdask.array: indexing with more than one array at once "
                                  "(numpy's vectorised indexing) is not supported")
    (k,) = array_positions
    arr = np.asarray(expanded[k])
    if arr.dtype == bool:
        if arr.ndim > 1:
            if arr.shape != x.shape or len(expanded) != 1:
                raise NotImplementedError("shmdask.array: a multi-dimensional boolean mask "
                                          "must have the array's full shape")
            from .shape import ravel
            return take(ravel(x), np.flatnonzero(arr), 0)
        axis = sum(1 for i in expanded[:k] if i is not None)
        if arr.shape[0] != x.shape[axis]:
            raise IndexError(f"boolean index did not match indexed array along axis {axis}; "
                             f"size of axis is {x.shape[axis]} but size of corresponding "
                             f"boolean axis is {arr.shape[0]}")
        arr = np.flatnonzero(arr)
    elif arr.size == 0:
        arr = arr.astype(np.int64)
    basic = list(expanded)
    basic[k] = slice(None)
    y = basic_getitem(x, tuple(basic))
    # the axis of y where the array index acts: ints before it vanish, Nones add one
    axis = sum(1 for i in expanded[:k] if not isinstance(i, numbers.Integral))
    if arr.ndim == 0:
        raise IndexError("a 0-d array index must be an integer")
    return take(y, arr, axis)
