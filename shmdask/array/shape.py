"""Shape changes: transpose, swapaxes, moveaxis, reshape, ravel, squeeze, expand_dims.

In: an Array and the new axis order or shape.  Out: an Array whose blocks are
the old blocks transformed one by one -- every function here is a blockwise
layer, so it fuses with the elementwise work around it (``(x + x.T)`` reads
each transposed block straight from ``x``'s block, with no task of its own).

Reshape keeps that property by first rechunking so that each output block is
exactly one input block reshaped (C order): axes are matched in groups whose
sizes multiply to the same number; in a group that merges axes every axis but
the first becomes one block, in a group that splits one axis its blocks are
rounded to whole multiples of the trailing output axes, and any other group
(e.g. (6, 4) -> (4, 6)) is taken as a single block.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from .chunks import has_unknown
from .convert import asarray
from .core import Array, token_name
from .layers import BlockwiseLayer
from .reductions import normalize_axis


def _syms(n: int) -> tuple[str, ...]:
    return tuple(f".{d}" for d in range(n))


def _blockwise_unary(x: Array, func: Any, name: str, in_index: tuple, out_ind: tuple,
                     numblocks: dict, chunks: tuple, dtype: Any = None,
                     perblock: Any = None) -> Array:
    layers = dict(x._layers)
    args = [("array", x.name, in_index, x.numblocks)]
    if perblock is not None:
        args.append(("perblock", perblock))
    layers[name] = BlockwiseLayer(name, func, out_ind, numblocks, args)
    return Array(layers, name, chunks, dtype if dtype is not None else x.dtype)


def transpose(x: Any, axes: Sequence[int] | None = None) -> Array:
    x = asarray(x)
    if axes is None:
        axes = tuple(range(x.ndim))[::-1]
    axes = tuple(int(a) % x.ndim if -x.ndim <= a < x.ndim else -1 for a in axes) \
        if x.ndim else tuple(axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"axes {axes} don't match an array of {x.ndim} dims")
    if axes == tuple(range(x.ndim)):
        return x
    syms = _syms(x.ndim)
    out_ind = tuple(syms[a] for a in axes)
    name = token_name("transpose", x.name, axes)
    return _blockwise_unary(x, partial(np.transpose, axes=axes), name, syms, out_ind,
                            dict(zip(syms, x.numblocks, strict=False)),
                            tuple(x.chunks[a] for a in axes))


def swapaxes(x: Any, axis1: int, axis2: int) -> Array:
    x = asarray(x)
    a1, a2 = normalize_axis(axis1, x.ndim)[0], normalize_axis(axis2, x.ndim)[0]
    order = list(range(x.ndim))
    order[a1], order[a2] = order[a2], order[a1]
    return transpose(x, order)


def moveaxis(x: Any, source: Any, destination: Any) -> Array:
    x = asarray(x)
    src = [normalize_axis(int(s), x.ndim)[0] for s in np.atleast_1d(source)]
    dst = [normalize_axis(int(d), x.ndim)[0] for d in np.atleast_1d(destination)]
    if len(src) != len(dst):
        raise ValueError("moveaxis: source and destination need the same number of axes")
    order = [a for a in range(x.ndim) if a not in src]
    for d, s in sorted(zip(dst, src, strict=False)):
        order.insert(d, s)
    return transpose(x, order)


def squeeze(x: Any, axis: Any = None) -> Array:
    x = asarray(x)
    if axis is None:
        axes = tuple(d for d, n in enumerate(x.shape) if n == 1)
    else:
        axes = normalize_axis(axis, x.ndim)
        bad = [a for a in axes if x.shape[a] != 1]
        if bad:
            raise ValueError(f"cannot select an axis to squeeze out which has size not equal "
                             f"to one (axes {bad}, shape {x.shape})")
    if not axes:
        return x
    syms = _syms(x.ndim)
    in_index = tuple(0 if d in axes else s for d, s in enumerate(syms))
    out_ind = tuple(s for d, s in enumerate(syms) if d not in axes)
    name = token_name("squeeze", x.name, axes)
    return _blockwise_unary(x, partial(np.squeeze, axis=axes), name, in_index, out_ind,
                            dict(zip(syms, x.numblocks, strict=False)),
                            tuple(c for d, c in enumerate(x.chunks) if d not in axes))


def expand_dims(x: Any, axis: Any) -> Array:
    x = asarray(x)
    if isinstance(axis, numbers.Integral):
        axis = (axis,)
    ndim = x.ndim + len(axis)
    axes = normalize_axis(tuple(axis), ndim)
    syms = _syms(x.ndim)
    it = iter(syms)
    chunk_it = iter(x.chunks)
    out_ind, chunks = [], []
    numblocks = dict(zip(syms, x.numblocks, strict=False))
    for d in range(ndim):
        if d in axes:
            out_ind.append(f"new{d}")
            numblocks[f"new{d}"] = 1
            chunks.append((1,))
        else:
            out_ind.append(next(it))
            chunks.append(next(chunk_it))
    name = token_name("expand_dims", x.name, axes)
    return _blockwise_unary(x, partial(np.expand_dims, axis=axes), name, syms, tuple(out_ind),
                            numblocks, tuple(chunks))


def atleast_1d(x: Any) -> Array:
    x = asarray(x)
    return x if x.ndim >= 1 else expand_dims(x, 0)


def atleast_2d(x: Any) -> Array:
    x = atleast_1d(x)
    return x if x.ndim >= 2 else expand_dims(x, 0)


# --------------------------------------------------------------------------- reshape

def _normalize_shape(shape: Any, size: int) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    unknown = [d for d, s in enumerate(shape) if s == -1]
    if len(unknown) > 1:
        raise ValueError("can only specify one unknown dimension (-1)")
    if any(s < -1 for s in shape):
        raise ValueError(f"negative dimensions not allowed in shape {shape}")
    if unknown:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape array of size {size} into shape {shape}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    if math.prod(shape) != size:
        raise ValueError(f"cannot reshape array of size {size} into shape {shape}")
    return shape


def _groups(old: tuple, new: tuple) -> list[tuple[list[int], list[int]]]:
    """Match axes of ``old`` and ``new`` in runs of equal product (C order)."""
    groups = []
    i = j = 0
    while i < len(old) or j < len(new):
        if i < len(old) and j < len(new) and old[i] == 1 and new[j] == 1:
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        if i < len(old) and old[i] == 1:
            groups.append(([i], []))
            i += 1
            continue
        if j < len(new) and new[j] == 1:
            groups.append(([], [j]))
            j += 1
            continue
        ins, outs = [i], [j]
        p_in, p_out = old[i], new[j]
        i, j = i + 1, j + 1
        while p_in != p_out:
            if p_in < p_out:
                ins.append(i)
                p_in *= old[i]
                i += 1
            else:
                outs.append(j)
                p_out *= new[j]
                j += 1
        groups.append((ins, outs))
    return groups


def _reshape_block(x: np.ndarray, shape: tuple) -> np.ndarray:
    return x.reshape(shape)


def reshape(x: Any, shape: Any, merge_chunks: bool = True, limit: Any = None) -> Array:
    from .rechunk import rechunk
    x = asarray(x)
    if has_unknown(x.chunks):
        raise ValueError("cannot reshape an array with unknown chunk sizes "
                         "(call .compute_chunk_sizes() first)")
    shape = _normalize_shape(shape, x.size)
    if shape == x.shape:
        return x
    if x.size == 0 or x.npartitions == 1:
        groups = [(list(range(x.ndim)), list(range(len(shape))))]
        in_chunks = tuple((n,) for n in x.shape)
        x = rechunk(x, in_chunks)
    else:
        groups = _groups(x.shape, shape)
    in_chunks = list(x.chunks)
    out_chunks: list = [None] * len(shape)
    for ins, outs in groups:
        if not outs:
            continue
        if not ins:
            for b in outs:
                out_chunks[b] = (shape[b],)
            continue
        if len(ins) == 1 and len(outs) == 1:
            out_chunks[outs[0]] = in_chunks[ins[0]]
        elif len(outs) == 1:  # merge: trailing input axes whole
            for a in ins[1:]:
                in_chunks[a] = (x.shape[a],)
            rest = math.prod(x.shape[a] for a in ins[1:])
            out_chunks[outs[0]] = tuple(c * rest for c in in_chunks[ins[0]])
        elif len(ins) == 1:  # split: input blocks in whole multiples of the trailing outputs
            rest = math.prod(shape[b] for b in outs[1:])
            blocks = in_chunks[ins[0]]
            if any(c % rest for c in blocks):
                per = max(1, round(max(blocks) / rest)) * rest
                n = x.shape[ins[0]]
                blocks = (per,) * (n // per) + ((n % per,) if n % per else ())
                in_chunks[ins[0]] = blocks
            out_chunks[outs[0]] = tuple(c // rest for c in blocks)
            for b in outs[1:]:
                out_chunks[b] = (shape[b],)
        else:
            for a in ins:
                in_chunks[a] = (x.shape[a],)
            out_chunks[outs[0]] = (shape[outs[0]],)
        for b in outs[1:]:
            out_chunks[b] = (shape[b],)
    x = rechunk(x, tuple(in_chunks))
    syms = _syms(x.ndim)
    in_index: list = [0] * x.ndim
    out_ind: list = [None] * len(shape)
    numblocks = dict(zip(syms, x.numblocks, strict=False))
    for _g, (ins, outs) in enumerate(groups):
        if ins and outs:
            in_index[ins[0]] = syms[ins[0]]
            out_ind[outs[0]] = syms[ins[0]]
            rest_outs = outs[1:]
        else:
            rest_outs = outs
        for b in rest_outs:
            out_ind[b] = f"new{b}"
            numblocks[f"new{b}"] = 1
    out_chunks_t = tuple(out_chunks)
    name = token_name("reshape", x.name, shape, out_chunks_t)
    return _blockwise_unary(x, _reshape_block, name, tuple(in_index), tuple(out_ind), numblocks,
                            out_chunks_t, perblock=partial(_block_shape_of, out_chunks_t))


def _block_shape_of(chunks: tuple, idx: tuple) -> tuple:
    return tuple(c[i] for c, i in zip(chunks, idx, strict=False))


def ravel(x: Any) -> Array:
    x = asarray(x)
    return reshape(x, (-1,)) if x.ndim != 1 else x
