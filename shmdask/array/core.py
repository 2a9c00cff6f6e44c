"""The Array collection: a chunked ndarray described by layers of tasks.

In: layers (see ``layers.py``), the name of the output layer, the chunks
(normal tuple-of-tuples form, see ``chunks.py``) and the dtype.  Out: the
collection protocol of ``shmdask.base`` (``__shmdask_graph__``,
``__shmdask_keys__`` as nested lists of ``(name, i, j, ...)`` keys, and the
finalisers that glue computed blocks back into one numpy array), numpy's
dispatch protocols, and the numpy-like methods users call.

Every operation returns a new Array whose layers are its inputs' layers plus
one new layer, named ``<op>-<token>`` where the token is computed once per
layer from the operation and its inputs' names, never per block: building
the graph of an array with 10,000 chunks is a Python loop of ~10,000 tuple
constructions and nothing more.

Everything placed in a task is a module-level function, a numpy ufunc or a
``functools.partial`` of those, so graphs pickle with cloudpickle for worker
processes.  Task inputs may be read-only views of shared memory: no function
here writes into an input block.
"""

from __future__ import annotations

import math
import numbers
import operator
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from itertools import product
from typing import Any

import numpy as np

from shmdask.tokenize import tokenize

from .chunks import Chunks, common_blocks, has_unknown, normalize_chunks, offsets, shape_of
from .layers import BlockwiseLayer, MaterializedLayer, materialize, quote


def token_name(prefix: str, *args: Any, **kwargs: Any) -> str:
    return f"{prefix}-{tokenize(*args, **kwargs)}"


# --------------------------------------------------------------------------- finalisers

def concatenate_nested(blocks: Any, axis: int = 0) -> Any:
    """Glue nested lists of blocks (depth = ndim) into one array."""
    if type(blocks) is not list:
        return blocks
    parts = [concatenate_nested(b, axis + 1) for b in blocks]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts, axis=axis)


def finalize(results: Any, ndim: int) -> Any:
    if ndim == 0:
        while type(results) is list:
            results = results[0]
        out = results
    else:
        out = concatenate_nested(results)
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        out = out.copy()
    return out


# The output never aliases its inputs (concatenated, or copied if read-only),
# so a Client may hand finalize read-only views of shared memory (base._run).
finalize.copies_views = True


def rebuild(dsk: dict, name: str, chunks: Chunks, dtype: np.dtype) -> Array:
    return Array({name: MaterializedLayer(name, dict(dsk))}, name, chunks, dtype)


def _getter(source: Any, index: tuple) -> np.ndarray:
    return np.asarray(source[index])


def _identity(x: Any) -> Any:
    return x


def _block_slices(starts: tuple, chunks: tuple, idx: tuple) -> tuple:
    return tuple(slice(s[i], s[i] + c[i]) for s, c, i in zip(starts, chunks, idx, strict=True))


class NotImplementedName(NotImplementedError, AttributeError):
    """A numpy function or method shmdask.array does not provide.

    Also an AttributeError, so ``hasattr()`` and ``getattr(..., default)`` keep
    working for code that probes for features.
    """


# --------------------------------------------------------------------------- the class

class Array:
    """A lazy, chunked n-dimensional array (numpy semantics, one task per block)."""

    __slots__ = ("_layers", "name", "_chunks", "dtype", "_dsk", "__weakref__")
    __array_priority__ = 11

    def __init__(self, layers: dict, name: str, chunks: Chunks, dtype: Any):
        self._layers = layers
        self.name = name
        self._chunks = tuple(tuple(c) for c in chunks)
        self.dtype = np.dtype(dtype)
        self._dsk = None

    # ---------------------------------------------------------------- metadata
    @property
    def chunks(self) -> Chunks:
        return self._chunks

    @property
    def shape(self) -> tuple:
        return shape_of(self._chunks)

    @property
    def ndim(self) -> int:
        return len(self._chunks)

    @property
    def size(self) -> int | float:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int | float:
        return self.size * self.dtype.itemsize

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def numblocks(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self._chunks)

    @property
    def npartitions(self) -> int:
        return math.prod(self.numblocks)

    @property
    def chunksize(self) -> tuple:
        return tuple(max(c) if c else 0 for c in self._chunks)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        n = self.shape[0]
        if isinstance(n, float):
            raise ValueError("len() of an array with unknown chunk sizes")
        return n

    # ---------------------------------------------------------------- protocol
    def __shmdask_graph__(self) -> dict:
        if self._dsk is None:
            self._dsk = materialize(self._layers, {self.name})
        return self._dsk

    @property
    def dask(self) -> dict:
        return self.__shmdask_graph__()

    def __shmdask_keys__(self) -> list:
        name = self.name
        if self.ndim == 0:
            return [(name,)]

        def keys(prefix: tuple, dims: tuple) -> list:
            if len(dims) == 1:
                return [(name,) + prefix + (i,) for i in range(dims[0])]
            return [keys(prefix + (i,), dims[1:]) for i in range(dims[0])]

        return keys((), self.numblocks)

    def __shmdask_postcompute__(self) -> tuple:
        return finalize, (self.ndim,)

    def __shmdask_postpersist__(self) -> tuple:
        return rebuild, (self.name, self._chunks, self.dtype)

    @staticmethod
    def __shmdask_optimize__(dsk: dict, keys: Any) -> dict:
        return optimize(dsk, keys)

    def __shmdask_tokenize__(self) -> str:
        return self.name

    def __dask_tokenize__(self) -> str:  # so dask's tokenize also names us stably
        return self.name

    def compute(self, **kwargs: Any) -> Any:
        return compute(self, **kwargs)[0]

    def persist(self, **kwargs: Any) -> Array:
        from shmdask.base import persist
        return persist(self, **kwargs)[0]

    def visualize(self, filename: str | None = None, **kwargs: Any) -> Any:
        from shmdask.base import visualize
        return visualize(self, filename=filename, **kwargs)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        x = np.asarray(self.compute())
        if dtype is not None and x.dtype != dtype:
            x = x.astype(dtype)
        return x

    def to_numpy(self) -> np.ndarray:
        return np.asarray(self.compute())

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError(f"the truth value of an array with {self.size} elements is "
                             "ambiguous; use .any() or .all()")
        return bool(self.compute())

    def __int__(self) -> int:
        return int(self.compute())

    def __float__(self) -> float:
        return float(self.compute())

    def __complex__(self) -> complex:
        return complex(self.compute())

    def __index__(self) -> int:
        return operator.index(self.compute())

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        from .repr import array_repr
        return array_repr(self)

    def _repr_html_(self) -> str:
        from .repr import array_repr_html
        return array_repr_html(self)

    def __reduce__(self):
        return (Array, (self._layers, self.name, self._chunks, self.dtype))

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and hasattr(np.ndarray, name):
            raise NotImplementedName(f"shmdask.array.Array.{name} is not implemented "
                                     f"(numpy.ndarray.{name} on a computed array is)")
        raise AttributeError(f"'Array' object has no attribute {name!r}")

    # ---------------------------------------------------------------- numpy protocols
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        from .dispatch import array_ufunc
        return array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func: Callable, types: tuple, args: tuple, kwargs: dict) -> Any:
        from .dispatch import array_function
        return array_function(func, types, args, kwargs)

    # ---------------------------------------------------------------- operators
    def __add__(self, other): return elemwise(operator.add, self, other)
    def __radd__(self, other): return elemwise(operator.add, other, self)
    def __sub__(self, other): return elemwise(operator.sub, self, other)
    def __rsub__(self, other): return elemwise(operator.sub, other, self)
    def __mul__(self, other): return elemwise(operator.mul, self, other)
    def __rmul__(self, other): return elemwise(operator.mul, other, self)
    def __truediv__(self, other): return elemwise(operator.truediv, self, other)
    def __rtruediv__(self, other): return elemwise(operator.truediv, other, self)
    def __floordiv__(self, other): return elemwise(operator.floordiv, self, other)
    def __rfloordiv__(self, other): return elemwise(operator.floordiv, other, self)
    def __mod__(self, other): return elemwise(operator.mod, self, other)
    def __rmod__(self, other): return elemwise(operator.mod, other, self)
    def __pow__(self, other): return elemwise(operator.pow, self, other)
    def __rpow__(self, other): return elemwise(operator.pow, other, self)
    def __divmod__(self, other):
        return elemwise(np.floor_divide, self, other), elemwise(np.mod, self, other)
    def __rdivmod__(self, other):
        return elemwise(np.floor_divide, other, self), elemwise(np.mod, other, self)
    def __and__(self, other): return elemwise(operator.and_, self, other)
    def __rand__(self, other): return elemwise(operator.and_, other, self)
    def __or__(self, other): return elemwise(operator.or_, self, other)
    def __ror__(self, other): return elemwise(operator.or_, other, self)
    def __xor__(self, other): return elemwise(operator.xor, self, other)
    def __rxor__(self, other): return elemwise(operator.xor, other, self)
    def __lshift__(self, other): return elemwise(operator.lshift, self, other)
    def __rlshift__(self, other): return elemwise(operator.lshift, other, self)
    def __rshift__(self, other): return elemwise(operator.rshift, self, other)
    def __rrshift__(self, other): return elemwise(operator.rshift, other, self)
    def __lt__(self, other): return elemwise(operator.lt, self, other)
    def __le__(self, other): return elemwise(operator.le, self, other)
    def __gt__(self, other): return elemwise(operator.gt, self, other)
    def __ge__(self, other): return elemwise(operator.ge, self, other)
    def __eq__(self, other): return elemwise(operator.eq, self, other)  # type: ignore[override]
    def __ne__(self, other): return elemwise(operator.ne, self, other)  # type: ignore[override]
    def __neg__(self): return elemwise(operator.neg, self)
    def __pos__(self): return elemwise(operator.pos, self)
    def __abs__(self): return elemwise(operator.abs, self)
    def __invert__(self): return elemwise(operator.invert, self)

    def __matmul__(self, other):
        from .linalg import matmul
        return matmul(self, other)

    def __rmatmul__(self, other):
        from .linalg import matmul
        return matmul(other, self)

    __hash__ = object.__hash__

    def __setitem__(self, key: Any, value: Any) -> None:
        raise NotImplementedError("shmdask.array: item assignment (x[...] = v) is not "
                                  "supported; use da.where(mask, value, x)")

    def __getitem__(self, index: Any) -> Array:
        from .slicing import getitem
        return getitem(self, index)

    # ---------------------------------------------------------------- methods
    @property
    def blocks(self) -> Any:
        """Select whole blocks: ``x.blocks[0]``, ``x.blocks[:, ::2]``."""
        from .routines import BlockView
        return BlockView(self)

    @property
    def T(self) -> Array:
        return self.transpose()

    def transpose(self, *axes: Any) -> Array:
        from .shape import transpose
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], Sequence)):
            axes = axes[0]
        return transpose(self, axes or None)

    def swapaxes(self, axis1: int, axis2: int) -> Array:
        from .shape import swapaxes
        return swapaxes(self, axis1, axis2)

    def reshape(self, *shape: Any, **kwargs: Any) -> Array:
        from .shape import reshape
        if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
            shape = shape[0]
        return reshape(self, shape, **kwargs)

    def ravel(self) -> Array:
        from .shape import ravel
        return ravel(self)

    flatten = ravel

    def squeeze(self, axis: Any = None) -> Array:
        from .shape import squeeze
        return squeeze(self, axis)

    def rechunk(self, chunks: Any = "auto", **kwargs: Any) -> Array:
        from .rechunk import rechunk
        return rechunk(self, chunks, **kwargs)

    def astype(self, dtype: Any, **kwargs: Any) -> Array:
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        return elemwise(partial(_astype, dtype=dtype, **kwargs), self, dtype=dtype)

    def copy(self) -> Array:
        return self

    def round(self, decimals: int = 0) -> Array:
        return elemwise(partial(np.round, decimals=decimals), self, dtype=self.dtype)

    def clip(self, min: Any = None, max: Any = None) -> Array:
        return clip(self, min, max)

    def conj(self) -> Array:
        return elemwise(np.conjugate, self)

    @property
    def real(self) -> Array:
        return elemwise(np.real, self)

    @property
    def imag(self) -> Array:
        return elemwise(np.imag, self)

    def dot(self, other: Any) -> Array:
        from .linalg import dot
        return dot(self, other)

    def map_blocks(self, func: Callable, *args: Any, **kwargs: Any) -> Array:
        return map_blocks(func, self, *args, **kwargs)

    def to_delayed(self, optimize_graph: bool = True) -> np.ndarray:
        return to_delayed(self, optimize_graph=optimize_graph)

    def store(self, target: Any, **kwargs: Any) -> Any:
        return store(self, target, **kwargs)

    def to_hdf5(self, filename: str, datapath: str, **kwargs: Any) -> None:
        from .routines import to_hdf5
        return to_hdf5(filename, datapath, self, **kwargs)

    def compute_chunk_sizes(self) -> Array:
        """Fill in unknown (nan) chunk sizes by computing every block's shape."""
        from shmdask.base import get as _get
        dsk = dict(self.__shmdask_graph__())
        keys = list(_flat(self.__shmdask_keys__()))
        shape_keys = [("shape-" + self.name,) + k[1:] for k in keys]
        for k, sk in zip(keys, shape_keys, strict=True):
            dsk[sk] = (_block_shape, k)
        shapes = dict(zip(keys, _get(dsk, shape_keys), strict=True))
        new_chunks = []
        for axis, blocks in enumerate(self._chunks):
            along = []
            for i in range(len(blocks)):
                idx = tuple(i if a == axis else 0 for a in range(self.ndim))
                along.append(int(shapes[(self.name,) + idx][axis]))
            new_chunks.append(tuple(along))
        self._chunks = tuple(new_chunks)
        return self

    # reductions -------------------------------------------------------------
    def sum(self, axis: Any = None, dtype: Any = None, keepdims: bool = False,
            split_every: Any = None) -> Array:
        from .reductions import sum as f
        return f(self, axis=axis, dtype=dtype, keepdims=keepdims, split_every=split_every)

    def prod(self, axis: Any = None, dtype: Any = None, keepdims: bool = False,
             split_every: Any = None) -> Array:
        from .reductions import prod as f
        return f(self, axis=axis, dtype=dtype, keepdims=keepdims, split_every=split_every)

    def mean(self, axis: Any = None, dtype: Any = None, keepdims: bool = False,
             split_every: Any = None) -> Array:
        from .reductions import mean as f
        return f(self, axis=axis, dtype=dtype, keepdims=keepdims, split_every=split_every)

    def std(self, axis: Any = None, dtype: Any = None, keepdims: bool = False, ddof: int = 0,
            split_every: Any = None) -> Array:
        from .reductions import std as f
        return f(self, axis=axis, dtype=dtype, keepdims=keepdims, ddof=ddof,
                 split_every=split_every)

    def var(self, axis: Any = None, dtype: Any = None, keepdims: bool = False, ddof: int = 0,
            split_every: Any = None) -> Array:
        from .reductions import var as f
        return f(self, axis=axis, dtype=dtype, keepdims=keepdims, ddof=ddof,
                 split_every=split_every)

    def min(self, axis: Any = None, keepdims: bool = False, split_every: Any = None) -> Array:
        from .reductions import min as f
        return f(self, axis=axis, keepdims=keepdims, split_every=split_every)

    def max(self, axis: Any = None, keepdims: bool = False, split_every: Any = None) -> Array:
        from .reductions import max as f
        return f(self, axis=axis, keepdims=keepdims, split_every=split_every)

    def any(self, axis: Any = None, keepdims: bool = False, split_every: Any = None) -> Array:
        from .reductions import any as f
        return f(self, axis=axis, keepdims=keepdims, split_every=split_every)

    def all(self, axis: Any = None, keepdims: bool = False, split_every: Any = None) -> Array:
        from .reductions import all as f
        return f(self, axis=axis, keepdims=keepdims, split_every=split_every)

    def argmin(self, axis: Any = None, keepdims: bool = False, split_every: Any = None) -> Array:
        from .reductions import argmin as f
        return f(self, axis=axis, keepdims=keepdims, split_every=split_every)

    def argmax(self, axis: Any = None, keepdims: bool = False, split_every: Any = None) -> Array:
        from .reductions import argmax as f
        return f(self, axis=axis, keepdims=keepdims, split_every=split_every)

    def cumsum(self, axis=None, dtype=None, out=None):
        from .cumulative import cumsum
        return cumsum(self, axis=axis, dtype=dtype, out=out)

    def cumprod(self, axis=None, dtype=None, out=None):
        from .cumulative import cumprod
        return cumprod(self, axis=axis, dtype=dtype, out=out)


def _astype(x: np.ndarray, dtype: np.dtype, **kwargs: Any) -> np.ndarray:
    return x.astype(dtype, **kwargs)


def _block_shape(x: np.ndarray) -> tuple:
    return tuple(np.shape(x))


def _flat(nested: Any):
    if type(nested) is list:
        for item in nested:
            yield from _flat(item)
    else:
        yield nested


# --------------------------------------------------------------------------- running

def optimize(dsk: dict, keys: Any, cull_and_fuse: bool = False) -> dict:
    """The Array optimisation pass: blockwise fusion, then cull and linear fusion.

    Blockwise fusion already happened when the layers were materialised (see
    ``layers.py``).  Culling and linear-chain fusion are what
    ``shmdask.base.prepare_graph`` does to every graph it runs, so by default
    they are not repeated here (repeating them cost ~10% of a 10,000-chunk
    ``random(...).sum()``); ``cull_and_fuse=True`` runs them anyway, e.g. for a
    graph handed to something that does not prepare graphs itself.
    """
    if not cull_and_fuse:
        return dsk
    from shmdask.graph import cull, fuse_linear
    flat = list(_flat(keys))
    culled = cull(dsk, flat)
    deps = None
    if type(culled) is tuple:
        culled, deps = culled
    if len(culled) < 2:
        return culled
    fused = fuse_linear(culled, flat, deps) if deps is not None else fuse_linear(culled, flat)
    if type(fused) is tuple:
        fused = fused[0]
    return fused


def compute(*arrays: Any, **kwargs: Any) -> tuple:
    from shmdask.base import compute as _compute
    return _compute(*arrays, **kwargs)


def is_array(x: Any) -> bool:
    return isinstance(x, Array)


# --------------------------------------------------------------------------- blockwise

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


# --------------------------------------------------------------------------- creation from data

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


def to_delayed(x: Array, optimize_graph: bool = True) -> np.ndarray:
    """An object ndarray (shape = numblocks) of Delayed, one per block."""
    from shmdask.delayed import Delayed
    dsk = x.__shmdask_graph__()
    keys = x.__shmdask_keys__()
    if optimize_graph:
        dsk = optimize(dsk, keys, cull_and_fuse=True)
    out = np.empty(x.numblocks, dtype=object)
    for key in _flat(keys):
        out[key[1:]] = _make_delayed(Delayed, key, dsk)
    return out


def _make_delayed(cls: type, key: Any, dsk: dict) -> Any:
    try:
        return cls(key, dsk)
    except TypeError:
        return cls(key=key, dsk=dsk)


# --------------------------------------------------------------------------- joining

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
    from .shape import expand_dims
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


# --------------------------------------------------------------------------- store

_STORE_LOCK = None


def _store_block(block: np.ndarray, target: Any, index: tuple, lock: bool) -> None:
    global _STORE_LOCK
    if lock:
        if _STORE_LOCK is None:
            import threading
            _STORE_LOCK = threading.Lock()
        with _STORE_LOCK:
            target[index] = block
    else:
        target[index] = block
    return None


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
    return _make_delayed(Delayed, name, dsk)
