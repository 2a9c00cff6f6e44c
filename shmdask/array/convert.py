"""Arrays from and to other things: numpy and array-likes, Delayed values,
dask arrays, and writable targets.

In: ``from_array``/``asarray`` (numpy arrays, h5py/zarr datasets, memmaps,
lists), ``from_delayed`` (one block from a Delayed), ``from_dask_array``.
Out: ``to_delayed`` (one Delayed per block) and ``store`` (blocks written
into anything supporting ``target[slices] = block``).

A numpy array is cut into blocks here, once, and each block is a view held
in the graph; any other array-like is kept whole under one key and each task
slices its block from it, so an h5py dataset is read block by block in the
tasks rather than all at once while the graph is built.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Sequence
from functools import partial
from itertools import product
from typing import Any

import numpy as np

from shmdask.graph import flatten

from .blockwise import _sym, blockwise_layer_array
from .chunks import normalize_chunks, offsets
from .core import Array, optimize, token_name
from .layers import MaterializedLayer, quote


def _getter(source: Any, index: tuple) -> np.ndarray:
    return np.asarray(source[index])


def _block_slices(starts: tuple, chunks: tuple, idx: tuple) -> tuple:
    return tuple(slice(s[i], s[i] + c[i]) for s, c, i in zip(starts, chunks, idx, strict=True))


def from_array(x: Any, chunks: Any = "auto", name: str | None = None,
               asarray: bool | None = None, inline_array: bool = False,
               **kwargs: Any) -> Array:
    """A chunked view of a numpy array, or of anything with ``shape``, ``dtype``
    and numpy-style slicing (h5py/zarr datasets, memmaps...)."""
    if isinstance(x, Array):
        from .rechunk import rechunk
        return x if chunks == "auto" else rechunk(x, chunks)
    if not (hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__getitem__")):
        x = np.asarray(x)
    shape = tuple(int(s) for s in x.shape)
    dtype = np.dtype(x.dtype)
    chunks = normalize_chunks(chunks, shape, dtype)
    if isinstance(x, np.ndarray) and type(x) is np.ndarray:
        if name is None:
            name = token_name("array", x, chunks)
        if x.ndim == 0:
            return Array({name: MaterializedLayer(name, {(name,): x})}, name, (), dtype)
        starts = [offsets(c) for c in chunks]
        dsk = {}
        for idx in product(*(range(len(c)) for c in chunks)):
            sl = tuple(slice(starts[d][i], starts[d][i] + chunks[d][i]) for d, i in enumerate(idx))
            dsk[(name,) + idx] = x[sl]
        return Array({name: MaterializedLayer(name, dsk)}, name, chunks, dtype)
    if name is None:
        name = f"array-{uuid.uuid4().hex}"
    original = f"array-original-{name.split('-', 1)[-1]}"
    source = {original: quote(x) if isinstance(x, str | tuple) else x}
    slices = partial(_block_slices, tuple(offsets(c) for c in chunks), chunks)
    out_ind = tuple(_sym(i) for i in range(len(shape)))
    arr = blockwise_layer_array(
        _getter, name, out_ind, dict(zip(out_ind, chunks, strict=False)),
        [("key", original), ("perblock", slices)], dtype,
        extra_layers=[{original: MaterializedLayer(original, source)}])
    return arr


def asarray(x: Any, dtype: Any = None, chunks: Any = "auto", **kwargs: Any) -> Array:
    if isinstance(x, Array):
        return x if dtype is None else x.astype(dtype)
    if isinstance(x, list | tuple) and any(isinstance(v, Array) for v in x):
        from .joining import stack  # joining builds on asarray
        return stack([asarray(v) for v in x])
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        x = np.asarray(x, dtype=dtype)
    elif dtype is not None:
        x = np.asarray(x, dtype=dtype)
    return from_array(x, chunks=chunks)


array = asarray
asanyarray = asarray


def _check_block(value: Any, shape: tuple, dtype: np.dtype) -> np.ndarray:
    value = np.asarray(value)
    if value.shape != shape:
        raise ValueError(f"from_delayed: the value has shape {value.shape}, "
                         f"the array was declared with {shape}")
    return value


def from_delayed(value: Any, shape: Sequence[int], dtype: Any = None,
                 name: str | None = None, meta: Any = None) -> Array:
    """One-block Array whose block is the result of a Delayed."""
    if dtype is None:
        if meta is None:
            raise ValueError("from_delayed needs dtype=")
        dtype = np.asarray(meta).dtype
    shape = tuple(int(s) for s in shape)
    key = value.key
    name = name or token_name("from-value", key, shape, dtype)
    graph = dict(value.dask) if not isinstance(value.dask, dict) else value.dask
    upstream = f"delayed-{name}"
    block_key = (name,) + (0,) * len(shape)
    dsk = {block_key: (_check_block, key, shape, np.dtype(dtype))}
    layers = {upstream: MaterializedLayer(upstream, graph),
              name: MaterializedLayer(name, dsk, (upstream,))}
    return Array(layers, name, tuple((s,) for s in shape), dtype)


def from_dask_array(d: Any) -> Array:
    """A shmdask Array over the graph of the dask.array.Array ``d``."""
    from shmdask.interop.dask_on_shmdask import from_dask_array as convert
    return convert(d)


def to_delayed(x: Array, optimize_graph: bool = True) -> np.ndarray:
    """An object ndarray (shape = numblocks) of Delayed, one per block."""
    from shmdask.delayed import Delayed
    dsk = x.__shmdask_graph__()
    keys = x.__shmdask_keys__()
    if optimize_graph:
        dsk = optimize(dsk, keys, cull_and_fuse=True)
    out = np.empty(x.numblocks, dtype=object)
    for key in flatten(keys):
        out[key[1:]] = Delayed(key, dsk)
    return out


# --------------------------------------------------------------------------- store

# One lock per process for the writes of store(compute=False, lock=True).
_STORE_LOCK = threading.Lock()


def _store_block(block: np.ndarray, target: Any, index: tuple, lock: bool) -> None:
    with _STORE_LOCK if lock else contextlib.nullcontext():
        target[index] = block


def _store_done(*_: Any) -> None:
    return None


def store(sources: Any, targets: Any, lock: bool = True, compute: bool = True,
          return_stored: bool = False, **kwargs: Any) -> Any:
    """Write arrays into array-likes supporting ``target[slices] = block``.

    With ``compute=True`` blocks are computed and written in this process
    (correct for every scheduler, including worker processes that cannot see
    the target); with ``compute=False`` a Delayed is returned whose tasks write
    from wherever they run (suitable for in-process schedulers or targets that
    are shared between processes, such as ``np.memmap``).
    """
    single = isinstance(sources, Array)
    if single:
        sources, targets = [sources], [targets]
    sources = list(sources)
    targets = list(targets)
    if len(sources) != len(targets):
        raise ValueError(f"store: {len(sources)} sources but {len(targets)} targets")
    for s, t in zip(sources, targets, strict=False):
        if tuple(getattr(t, "shape", s.shape)) != s.shape:
            raise ValueError(f"store: source shape {s.shape} != target shape {t.shape}")
    if compute:
        from shmdask.base import compute as _compute
        results = _compute(*sources)
        for t, value in zip(targets, results, strict=False):
            t[...] = value
        if return_stored:
            return sources if not single else sources[0]
        return None
    from shmdask.delayed import Delayed
    name = f"store-{uuid.uuid4().hex}"
    dsk: dict = {}
    deps = []
    for k, (s, t) in enumerate(zip(sources, targets, strict=False)):
        dsk.update(s.__shmdask_graph__())
        starts = [offsets(c) for c in s.chunks]
        for idx in product(*(range(n) for n in s.numblocks)):
            sl = tuple(slice(starts[d][i], starts[d][i] + s.chunks[d][i])
                       for d, i in enumerate(idx))
            key = (f"{name}-{k}",) + idx
            dsk[key] = (_store_block, (s.name,) + idx, t, sl, bool(lock))
            deps.append(key)
    dsk[name] = (_store_done, deps)
    return Delayed(name, dsk)
