"""Blockwise graph building: one task per output block, from aligned input blocks.

In: a function and ``(Array, index)`` pairs -- an index is a tuple of symbols
naming each axis, so equal symbols must share one blocking -- or the
user-level ``map_blocks(func, *arrays)`` and dask-style
``blockwise(func, "ij", x, "ij", ...)``.  Out: an Array whose new layer is one
``BlockwiseLayer`` (see ``layers.py``), so chains of such layers fuse into one
task per block when the graph is materialised.

Everything elementwise (``elementwise.py``), the gufuncs, linear algebra and
boolean-mask indexing go through ``unify_chunks`` and
``blockwise_layer_array`` here: one place decides how blocks line up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from .chunks import common_blocks, has_unknown
from .core import Array, token_name
from .layers import BlockwiseLayer, quote


def _sym(i: int) -> str:
    return f".{i}"


def blockwise_layer_array(func: Callable, name: str, out_ind: tuple, chunks_by_sym: dict,
                          args: list, dtype: Any, extra_layers: Sequence[dict] = ()) -> Array:
    """Build the Array for ``BlockwiseLayer(func, out_ind, args)``.

    ``args`` holds ``(Array, index)`` pairs for array inputs (already aligned:
    equal symbols have equal chunks or a single broadcast block) and
    ``("literal"|"perblock"|"key", value)`` specs for anything else.
    """
    numblocks = {s: len(c) for s, c in chunks_by_sym.items()}
    specs = []
    layers: dict = {}
    for a in args:
        if isinstance(a[0], Array):
            arr, ind = a
            layers.update(arr._layers)
            specs.append(("array", arr.name, tuple(ind), arr.numblocks))
            for s, nb in zip(ind, arr.numblocks, strict=False):
                if type(s) is str and s not in numblocks:
                    numblocks[s] = nb
        else:
            specs.append(a)
    for extra in extra_layers:
        layers.update(extra)
    layer = BlockwiseLayer(name, func, out_ind, numblocks, specs)
    layers[name] = layer
    chunks = tuple(chunks_by_sym[s] for s in out_ind)
    return Array(layers, name, chunks, dtype)


def _pick(i: int, values: tuple) -> Any:
    return values[i]


def pick_outputs(combined: Array, ind: tuple, chunks_by_sym: dict,
                 out_inds: Sequence[tuple], dtypes: Sequence) -> tuple[Array, ...]:
    """The outputs of a function with several results, from ``combined`` (index
    ``ind``), whose blocks are tuples: output ``i``'s block is item ``i``."""
    return tuple(
        blockwise_layer_array(partial(_pick, i), f"{combined.name}-{i}", out_ind,
                              chunks_by_sym, [(combined, ind)], dtype)
        for i, (out_ind, dtype) in enumerate(zip(out_inds, dtypes, strict=True)))


def unify_chunks(pairs: list) -> tuple[dict, list]:
    """Rechunk ``(Array, index)`` pairs so equal symbols share one blocking.

    A dimension of length 1 with one block broadcasts and is left alone.
    Returns ``(chunks per symbol, new pairs)``.
    """
    from .rechunk import rechunk
    by_sym: dict[str, list] = {}
    for arr, ind in pairs:
        for s, c, n in zip(ind, arr.chunks, arr.shape, strict=False):
            if type(s) is str:
                by_sym.setdefault(s, []).append((c, n))
    chunks_by_sym: dict = {}
    for s, entries in by_sym.items():
        full = [c for c, n in entries if not (n == 1 and len(c) == 1)]
        if not full:
            chunks_by_sym[s] = entries[0][0]
            continue
        lengths = {sum(c) for c in full if not has_unknown((c,))}
        if len(lengths) > 1:
            raise ValueError(f"shapes do not align: lengths {sorted(lengths)} meet on one axis")
        distinct = set(full)
        if len(distinct) == 1:
            chunks_by_sym[s] = full[0]
        elif any(has_unknown((c,)) for c in distinct):
            raise ValueError("cannot align arrays with unknown chunk sizes "
                             "(call .compute_chunk_sizes() first)")
        else:
            chunks_by_sym[s] = common_blocks(*distinct)
    new_pairs = []
    for arr, ind in pairs:
        target = []
        change = False
        for s, c, n in zip(ind, arr.chunks, arr.shape, strict=False):
            if type(s) is str and not (n == 1 and len(c) == 1) and c != chunks_by_sym[s]:
                target.append(chunks_by_sym[s])
                change = True
            else:
                target.append(c)
        new_pairs.append((rechunk(arr, tuple(target)) if change else arr, ind))
    return chunks_by_sym, new_pairs


def _meta(x: Any) -> Any:
    """A one-element stand-in with the dtype of ``x`` (scalars stay scalars)."""
    if isinstance(x, Array):
        return np.ones((1,) * x.ndim, dtype=x.dtype)
    if isinstance(x, np.ndarray):
        return np.ones((1,) * x.ndim, dtype=x.dtype)
    return x


def infer_dtype(func: Callable, args: Sequence, kwargs: dict | None = None) -> np.dtype | None:
    try:
        with np.errstate(all="ignore"):
            out = func(*[_meta(a) for a in args], **(kwargs or {}))
        return np.asarray(out).dtype
    except Exception:
        return None


# --------------------------------------------------------------------------- map_blocks

def _call_with_block_id(func: Callable, block_id: tuple, *args: Any, **kwargs: Any) -> Any:
    return func(*args, block_id=block_id, **kwargs)


def map_blocks(func: Callable, *args: Any, dtype: Any = None, chunks: Any = None,
               drop_axis: Any = (), new_axis: Any = None, name: str | None = None,
               **kwargs: Any) -> Array:
    """Run ``func`` on each block (blocks of several arrays are aligned as in
    elementwise operations).  ``chunks=`` gives the output blocks when they differ
    from the inputs'; ``drop_axis``/``new_axis`` remove or add axes."""
    import inspect

    if not callable(func):
        raise TypeError(f"map_blocks needs a callable first, got {type(func).__name__}")
    dtype = _dtype_from_meta(dtype, kwargs)
    arrays = [a for a in args if isinstance(a, Array)]
    if not arrays:
        raise ValueError("map_blocks needs at least one shmdask Array argument")
    if isinstance(drop_axis, int):
        drop_axis = (drop_axis,)
    if isinstance(new_axis, int):
        new_axis = (new_axis,)
    new_axis = tuple(new_axis or ())
    ndim_in = max(a.ndim for a in arrays)
    in_ind = tuple(_sym(i) for i in range(ndim_in))
    drop = {d % ndim_in for d in drop_axis} if ndim_in else set()
    kept = [s for d, s in enumerate(in_ind) if d not in drop]
    ndim_out = len(kept) + len(new_axis)
    out_ind: list = [None] * ndim_out
    new_pos = {d % ndim_out for d in new_axis} if ndim_out else set()
    it = iter(kept)
    for d in range(ndim_out):
        out_ind[d] = f"new{d}" if d in new_pos else next(it)
    pairs = [(a, in_ind[ndim_in - a.ndim:]) for a in arrays]
    chunks_by_sym, pairs = unify_chunks(pairs)
    if drop:
        for d in drop:  # a dropped axis must be a single block (func sees it whole)
            if len(chunks_by_sym[in_ind[d]]) > 1:
                from .rechunk import rechunk
                pairs = [(rechunk(a, {k: -1 for k, s in enumerate(ind) if s == in_ind[d]}), ind)
                         for a, ind in pairs]
                chunks_by_sym[in_ind[d]] = (sum(chunks_by_sym[in_ind[d]]),)
        dropped = {in_ind[d] for d in drop}
        pairs = [(a, tuple(0 if s in dropped else s for s in ind)) for a, ind in pairs]
    it_pairs = iter(pairs)
    specs = [next(it_pairs) if isinstance(a, Array) else ("literal", quote(a)) for a in args]
    out_ind = tuple(out_ind)
    for s in out_ind:
        if s.startswith("new"):
            chunks_by_sym[s] = (1,)
    if chunks is not None:
        if isinstance(chunks, tuple) and len(chunks) == ndim_out and all(
                isinstance(c, tuple) for c in chunks):
            out_chunks = chunks
        else:
            if isinstance(chunks, int):
                chunks = (chunks,) * ndim_out
            if len(chunks) != ndim_out:
                raise ValueError(f"map_blocks: chunks={chunks} has {len(chunks)} axes but the "
                                 f"output has {ndim_out}")
            out_chunks = tuple(c if isinstance(c, tuple) else (c,) * len(chunks_by_sym[s])
                               for c, s in zip(chunks, out_ind, strict=False))
        for s, c in zip(out_ind, out_chunks, strict=False):
            if s in chunks_by_sym and len(chunks_by_sym[s]) != len(c) and not s.startswith("new"):
                raise ValueError(f"map_blocks: chunks {out_chunks} do not match the "
                                 f"input blocks {tuple(chunks_by_sym[t] for t in out_ind)}")
        out_sym = {s: c for s, c in zip(out_ind, out_chunks, strict=False)}
    else:
        out_sym = {s: chunks_by_sym[s] for s in out_ind}
    if dtype is None:
        dtype = infer_dtype(func, args, kwargs) if chunks is None and not new_axis and not drop \
            else None
        if dtype is None:
            dtype = arrays[0].dtype
    try:
        wants_block_id = "block_id" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        wants_block_id = False
    call = func
    if kwargs:
        call = partial(func, **kwargs)
    if wants_block_id:
        call = partial(_call_with_block_id, call)
        specs = [("perblock", _idx_literal)] + specs
    if name is None:
        name = token_name(getattr(func, "__name__", "map_blocks"), func, kwargs,
                          *[s[0].name if isinstance(s[0], Array) else s for s in specs],
                          out_ind, dtype)
    sym_chunks = dict(chunks_by_sym)
    sym_chunks.update(out_sym)
    arr = blockwise_layer_array(call, name, out_ind, sym_chunks, specs, dtype)
    # output chunks are what the caller said; the block grid is the input's
    arr._chunks = tuple(out_sym[s] for s in out_ind)
    return arr


def _dtype_from_meta(dtype: Any, kwargs: dict) -> Any:
    """dask's ``meta=``/``token=`` keywords describe the output; never pass them on."""
    meta = kwargs.pop("meta", None)
    kwargs.pop("token", None)
    if dtype is None and meta is not None:
        dtype = np.asarray(meta).dtype
    return dtype


def _idx_literal(idx: tuple) -> tuple:
    return idx


def blockwise(func: Callable, out_ind: Sequence, *args: Any, dtype: Any = None,
              name: str | None = None, new_axes: dict | None = None,
              concatenate: bool = False, adjust_chunks: dict | None = None,
              **kwargs: Any) -> Array:
    """dask-style ``blockwise(func, 'ij', x, 'ij', y, 'ji', ...)``.

    Arguments come in pairs ``(value, index)``; an index of ``None`` marks a
    literal.  Symbols missing from ``out_ind`` are contracted: the function
    receives a list of blocks along them (or, with ``concatenate=True``, those
    blocks glued into one array).
    """
    from .convert import asarray  # convert builds from_array on this module

    if len(args) % 2:
        raise ValueError("blockwise arguments must come in (value, index) pairs")
    dtype = _dtype_from_meta(dtype, kwargs)
    kwargs.pop("align_arrays", None)
    out_ind = tuple(out_ind)
    pairs = []
    specs: list = []
    for value, ind in zip(args[::2], args[1::2], strict=False):
        if ind is None:
            specs.append(("literal", quote(value)))
            continue
        value = asarray(value)
        ind = tuple(ind)
        if len(ind) != value.ndim:
            raise ValueError(f"index {ind!r} has {len(ind)} symbols for an array of "
                             f"{value.ndim} dims")
        pairs.append((value, ind))
        specs.append(None)
    chunks_by_sym, pairs = unify_chunks(pairs)
    it = iter(pairs)
    specs = [next(it) if s is None else s for s in specs]
    for s, n in (new_axes or {}).items():
        chunks_by_sym[s] = n if isinstance(n, tuple) else (n,)
    missing = [s for s in out_ind if s not in chunks_by_sym]
    if missing:
        raise ValueError(f"output symbols {missing} appear in no input (give new_axes=)")
    contracted = {s for a, ind in pairs for s in ind if s not in out_ind}
    call = partial(func, **kwargs) if kwargs else func
    if concatenate and contracted:
        call = partial(_concat_call, func, kwargs, tuple(
            tuple(d for d, s in enumerate(sp[1]) if s in contracted)
            if isinstance(sp[0], Array) else () for sp in specs))
    if dtype is None:
        dtype = pairs[0][0].dtype if pairs else np.float64
    if name is None:
        name = token_name(getattr(func, "__name__", "blockwise"), func, out_ind, kwargs,
                          *[(s[0].name, s[1]) if isinstance(s[0], Array) else s for s in specs])
    out_chunks = {s: chunks_by_sym[s] for s in chunks_by_sym}
    if adjust_chunks:
        for s, adj in adjust_chunks.items():
            c = out_chunks[s]
            if callable(adj):
                out_chunks[s] = tuple(adj(b) for b in c)
            elif isinstance(adj, int):
                out_chunks[s] = (adj,) * len(c)
            else:
                out_chunks[s] = tuple(adj)
    arr = blockwise_layer_array(call, name, out_ind, chunks_by_sym, specs, dtype)
    arr._chunks = tuple(out_chunks[s] for s in out_ind)
    return arr


def _concat_call(func: Callable, kwargs: dict, contracted_axes: tuple, *args: Any) -> Any:
    glued = []
    for axes, value in zip(contracted_axes, args, strict=False):
        if axes:
            value = _glue(value, axes)
        glued.append(value)
    return func(*glued, **kwargs)


def _glue(blocks: list, axes: tuple) -> np.ndarray:
    """Blocks listed over the product of contracted axes -> one array."""
    if len(axes) == 1:
        return np.concatenate(blocks, axis=axes[0]) if len(blocks) > 1 else blocks[0]
    raise NotImplementedError("blockwise(concatenate=True) over several contracted axes")

