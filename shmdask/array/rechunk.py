"""Rechunking: the same array cut into different blocks.

In: an Array and a chunk spec (anything ``normalize_chunks`` accepts; a dict
changes only the axes it names).  Out: an Array whose every new block is one
task that slices the old blocks it overlaps and glues the pieces.  Per axis
the overlaps are found with one merge-walk over the two sets of block
boundaries, so the cost is linear in the number of blocks; a new block that
lies inside one old block becomes a plain slice of it.
"""

from __future__ import annotations

import math
import operator
from itertools import product
from typing import Any

import numpy as np

from .chunks import has_unknown, normalize_chunks
from .core import Array, token_name
from .layers import MaterializedLayer


def _overlaps(old: tuple[int, ...], new: tuple[int, ...]) -> list[list[tuple[int, slice]]]:
    """For each new block along one axis: [(old block index, slice inside it), ...]."""
    out: list[list[tuple[int, slice]]] = []
    i, used = 0, 0  # current old block and how much of it is consumed
    for size in new:
        pieces = []
        need = size
        if size == 0:
            j = min(i, len(old) - 1)
            pieces.append((j, slice(0, 0)))
        while need > 0:
            avail = old[i] - used
            take = min(avail, need)
            pieces.append((i, slice(used, used + take)))
            need -= take
            used += take
            if used == old[i]:
                i += 1
                used = 0
        out.append(pieces)
    return out


def _assemble(grid: tuple[int, ...], slices: list, *blocks: np.ndarray) -> np.ndarray:
    """Slice the overlapping old blocks (listed in C order over ``grid``) and glue them."""
    parts = [b[s] for b, s in zip(blocks, slices, strict=False)]

    def glue(start: int, depth: int) -> np.ndarray:
        if depth == len(grid):
            return parts[start]
        stride = math.prod(grid[depth + 1:])
        subs = [glue(start + k * stride, depth + 1) for k in range(grid[depth])]
        return subs[0] if len(subs) == 1 else np.concatenate(subs, axis=depth)

    return glue(0, 0)


def rechunk(x: Array, chunks: Any = "auto", threshold: Any = None,
            block_size_limit: Any = None, **kwargs: Any) -> Array:
    """A view of ``x`` with new block boundaries (same values, same dtype)."""
    if has_unknown(x.chunks):
        raise ValueError("cannot rechunk an array with unknown chunk sizes "
                         "(call .compute_chunk_sizes() first)")
    new = normalize_chunks(chunks, x.shape, x.dtype, previous=x.chunks)
    if new == x.chunks:
        return x
    name = token_name("rechunk", x.name, new)
    per_axis = [_overlaps(o, n) for o, n in zip(x.chunks, new, strict=False)]
    dsk = {}
    src = x.name
    for idx in product(*(range(len(c)) for c in new)):
        pieces = [per_axis[d][i] for d, i in enumerate(idx)]
        if all(len(p) == 1 for p in pieces):
            old_idx = tuple(p[0][0] for p in pieces)
            sl = tuple(p[0][1] for p in pieces)
            old_shape = tuple(x.chunks[d][j] for d, j in enumerate(old_idx))
            if all(s.start == 0 and s.stop == n for s, n in zip(sl, old_shape, strict=False)):
                dsk[(name,) + idx] = (_same, (src,) + old_idx)
            else:
                dsk[(name,) + idx] = (operator.getitem, (src,) + old_idx, sl)
            continue
        grid = tuple(len(p) for p in pieces)
        keys, slices = [], []
        for combo in product(*pieces):
            keys.append((src,) + tuple(c[0] for c in combo))
            slices.append(tuple(c[1] for c in combo))
        dsk[(name,) + idx] = (_assemble, grid, slices, *keys)
    layers = dict(x._layers)
    layers[name] = MaterializedLayer(name, dsk, (src,))
    return Array(layers, name, new, x.dtype)


def _same(x: Any) -> Any:
    return x
