"""Chunk specifications: what users write in ``chunks=`` -> tuple of tuples.

In: an int (the same block length on every axis), a tuple with one entry per
axis (each an int, -1/None for the whole axis, "auto", a byte size such as
"64 MB", or an explicit tuple of block lengths), a dict ``{axis: spec}``
(missing axes get the whole axis), a full tuple of tuples, "auto" (blocks of
about the ``array.chunk-size`` setting, 128 MiB by default, as in dask) or a
byte size for the whole block ("100 MiB").  Axes given as "auto" or a byte
size share one block budget: the given size, else the setting.
Out: ``((b00, b01, ...), (b10, ...), ...)`` with one tuple per axis whose sum is
the axis length. Every later step (graph building, slicing, repr) relies on
this one normal form, so every bad spec is rejected here with a ValueError
that says which axis is wrong.
"""

from __future__ import annotations

import math
from itertools import accumulate
from typing import Any

import numpy as np

from shmdask import config
from shmdask.units import parse_bytes

Chunks = tuple[tuple[int, ...], ...]


def _blocks_of(length: int, size: int) -> tuple[int, ...]:
    """Split ``length`` into blocks of ``size`` (the last one shorter)."""
    if length == 0:
        return (0,)
    size = max(1, min(size, length))
    n_full, rest = divmod(length, size)
    return (size,) * n_full + ((rest,) if rest else ())


def _auto_sizes(shape: tuple[int, ...], fixed: dict[int, int], itemsize: int,
                limit: int) -> dict[int, int]:
    """Block lengths for the "auto" axes so that a block holds about ``limit`` bytes.

    Axes given explicitly (``fixed``) keep their length; the auto axes share the
    remaining budget evenly, and any auto axis shorter than its share is taken
    whole and its slack handed to the others.
    """
    auto_axes = [a for a in range(len(shape)) if a not in fixed]
    budget = max(1.0, limit / max(1, itemsize))
    for size in fixed.values():
        budget /= max(1, size)
    out: dict[int, int] = {}
    remaining = sorted(auto_axes, key=lambda a: shape[a])
    while remaining:
        share = max(1.0, budget) ** (1.0 / len(remaining))
        a = remaining[0]
        if shape[a] <= share:
            out[a] = max(1, shape[a])
            budget /= max(1, shape[a])
            remaining.pop(0)
            continue
        for a in remaining:
            out[a] = max(1, int(share))
        break
    return out


def normalize_chunks(chunks: Any, shape: tuple[int, ...], dtype: Any = float,
                     previous: Chunks | None = None) -> Chunks:
    """Turn any accepted chunk spec into the normal tuple-of-tuples form."""
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    itemsize = np.dtype(dtype).itemsize if dtype is not None else 8
    if isinstance(chunks, np.ndarray):
        chunks = tuple(chunks.tolist())
    if isinstance(chunks, list):
        chunks = tuple(chunks)
    if chunks is None or (isinstance(chunks, int | np.integer) and chunks == -1):
        chunks = (-1,) * ndim
    elif isinstance(chunks, str):
        chunks = (chunks,) * ndim  # "auto" or a byte size: one budget for the block
    elif isinstance(chunks, int | np.integer):
        if chunks <= 0:
            raise ValueError(f"chunks={chunks} must be a positive block length (or -1)")
        chunks = (int(chunks),) * ndim
    elif isinstance(chunks, dict):
        bad = [a for a in chunks if not isinstance(a, int | np.integer) or not -ndim <= a < ndim]
        if bad:
            raise ValueError(f"chunks dict has axes {bad} outside an array of {ndim} dims")
        norm = {int(a) % ndim: v for a, v in chunks.items()}
        chunks = tuple(norm.get(a, previous[a] if previous is not None else -1)
                       for a in range(ndim))
    if not isinstance(chunks, tuple):
        raise ValueError(f"chunks={chunks!r} not understood")
    if len(chunks) != ndim:
        raise ValueError(f"chunks {chunks!r} give {len(chunks)} axes but the array "
                         f"has {ndim} (shape {shape})")
    fixed: dict[int, int] = {}
    for a, c in enumerate(chunks):
        if isinstance(c, int | np.integer) and c > 0:
            fixed[a] = int(c)
        elif c is None or (isinstance(c, int | np.integer) and c == -1):
            fixed[a] = shape[a]
        elif isinstance(c, tuple | list):
            fixed[a] = max(c) if len(c) else 0
    limit = _block_budget(chunks)
    auto = _auto_sizes(shape, fixed, itemsize, limit) if limit else {}
    out = []
    for a, c in enumerate(chunks):
        length = shape[a]
        if isinstance(c, str):
            out.append(_blocks_of(length, auto[a]))
        elif c is None or (isinstance(c, int | np.integer) and c == -1):
            out.append(_blocks_of(length, length))
        elif isinstance(c, int | np.integer):
            if c <= 0 and not (c == 0 and length == 0):
                raise ValueError(f"chunks[{a}]={c} must be a positive block length")
            out.append(_blocks_of(length, int(c)))
        elif isinstance(c, tuple | list):
            blocks = tuple(int(b) if not _isnan(b) else math.nan for b in c)
            if any(not _isnan(b) and b < 0 for b in blocks):
                raise ValueError(f"chunks[{a}]={c!r} has a negative block length")
            if not any(_isnan(b) for b in blocks) and sum(blocks) != length:
                raise ValueError(f"chunks along axis {a} sum to {sum(blocks)} "
                                 f"but the axis has length {length}")
            if not blocks:
                raise ValueError(f"chunks along axis {a} are empty")
            out.append(blocks)
        else:
            raise ValueError(f"chunks[{a}]={c!r} not understood")
    return tuple(out)


def _block_budget(chunks: tuple) -> int | None:
    """Bytes per block for the "auto"/byte-size axes (None when there are none)."""
    sizes = set()
    auto = False
    for a, c in enumerate(chunks):
        if not isinstance(c, str):
            continue
        if c == "auto":
            auto = True
            continue
        try:
            sizes.add(parse_bytes(c))
        except ValueError:
            raise ValueError(f"chunks[{a}]={c!r} not understood: neither 'auto' nor a byte "
                             "size such as '64 MB' or '100 MiB'") from None
    if len(sizes) > 1:
        raise ValueError(f"chunks give different block sizes {sorted(sizes)}: one byte "
                         "size (or 'auto') for the whole block")
    if sizes:
        return max(1, sizes.pop())
    return config.get("array_chunk_size") if auto else None


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def offsets(blocks: tuple[int, ...]) -> tuple[int, ...]:
    """Start of each block along one axis: (3, 3, 2) -> (0, 3, 6)."""
    return (0,) + tuple(accumulate(blocks))[:-1]


def has_unknown(chunks: Chunks) -> bool:
    return any(_isnan(b) for c in chunks for b in c)


def shape_of(chunks: Chunks) -> tuple:
    return tuple(math.nan if any(_isnan(b) for b in c) else int(sum(c)) for c in chunks)


def common_blocks(*axes_blocks: tuple[int, ...]) -> tuple[int, ...]:
    """The coarsest blocking finer than every one given (union of boundaries)."""
    bounds: set[int] = set()
    for blocks in axes_blocks:
        bounds.update(accumulate(blocks))
    edges = sorted(bounds)
    out, last = [], 0
    for e in edges:
        if e > last:
            out.append(e - last)
            last = e
    return tuple(out) or (0,)
