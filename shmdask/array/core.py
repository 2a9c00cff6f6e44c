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
of shmdask.array writes into an input block.

The operations live next door, each module named after what it holds:
``blockwise.py`` (aligning blocks, ``map_blocks``, ``blockwise``),
``elementwise.py`` (operators, ``clip``, ``where``), ``convert.py``
(``from_array``, ``asarray``, ``from_delayed``, ``to_delayed``, ``store``),
``joining.py`` (``concatenate``, ``stack``...).  They build on the class
here, so its methods import them when first called.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from shmdask.graph import cull, flatten, fuse_linear
from shmdask.interop.shmdask_on_dask import DaskCollection
from shmdask.tokenize import tokenize

from .chunks import Chunks, shape_of
from .layers import MaterializedLayer, lazy_graph, materialize


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


class NotImplementedName(NotImplementedError, AttributeError):
    """A numpy function or method shmdask.array does not provide.

    Also an AttributeError, so ``hasattr()`` and ``getattr(..., default)`` keep
    working for code that probes for features.
    """


def _elemwise(op: Callable, *args: Any, **kwargs: Any) -> Array:
    """``elementwise.elemwise``, for the operators and methods below (that
    module builds on this one, so it is imported on first use)."""
    from .elementwise import elemwise
    return elemwise(op, *args, **kwargs)


# --------------------------------------------------------------------------- the class

class Array(DaskCollection):
    """A lazy, chunked n-dimensional array (numpy semantics, one task per block).

    Also a dask collection (``DaskCollection``): dask and dask.distributed
    compute it as they compute their own arrays.
    """

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

    def __shmdask_lazy_graph__(self, min_tasks: int) -> Mapping | None:
        """The graph written out block by block as a scheduler reads it
        (:class:`~shmdask.array.layers.LayeredGraph`) when it has at least
        ``min_tasks`` tasks, else None (``__shmdask_graph__`` serves)."""
        if self._dsk is not None:
            return self._dsk if len(self._dsk) >= min_tasks else None
        return lazy_graph(self._layers, {self.name}, min_tasks)

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
    def __shmdask_optimize__(dsk: Mapping, keys: Any) -> Mapping:
        return optimize(dsk, keys)

    def __shmdask_tokenize__(self) -> str:
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
    def __add__(self, other): return _elemwise(operator.add, self, other)
    def __radd__(self, other): return _elemwise(operator.add, other, self)
    def __sub__(self, other): return _elemwise(operator.sub, self, other)
    def __rsub__(self, other): return _elemwise(operator.sub, other, self)
    def __mul__(self, other): return _elemwise(operator.mul, self, other)
    def __rmul__(self, other): return _elemwise(operator.mul, other, self)
    def __truediv__(self, other): return _elemwise(operator.truediv, self, other)
    def __rtruediv__(self, other): return _elemwise(operator.truediv, other, self)
    def __floordiv__(self, other): return _elemwise(operator.floordiv, self, other)
    def __rfloordiv__(self, other): return _elemwise(operator.floordiv, other, self)
    def __mod__(self, other): return _elemwise(operator.mod, self, other)
    def __rmod__(self, other): return _elemwise(operator.mod, other, self)
    def __pow__(self, other): return _elemwise(operator.pow, self, other)
    def __rpow__(self, other): return _elemwise(operator.pow, other, self)
    def __divmod__(self, other):
        return _elemwise(np.floor_divide, self, other), _elemwise(np.mod, self, other)
    def __rdivmod__(self, other):
        return _elemwise(np.floor_divide, other, self), _elemwise(np.mod, other, self)
    def __and__(self, other): return _elemwise(operator.and_, self, other)
    def __rand__(self, other): return _elemwise(operator.and_, other, self)
    def __or__(self, other): return _elemwise(operator.or_, self, other)
    def __ror__(self, other): return _elemwise(operator.or_, other, self)
    def __xor__(self, other): return _elemwise(operator.xor, self, other)
    def __rxor__(self, other): return _elemwise(operator.xor, other, self)
    def __lshift__(self, other): return _elemwise(operator.lshift, self, other)
    def __rlshift__(self, other): return _elemwise(operator.lshift, other, self)
    def __rshift__(self, other): return _elemwise(operator.rshift, self, other)
    def __rrshift__(self, other): return _elemwise(operator.rshift, other, self)
    def __lt__(self, other): return _elemwise(operator.lt, self, other)
    def __le__(self, other): return _elemwise(operator.le, self, other)
    def __gt__(self, other): return _elemwise(operator.gt, self, other)
    def __ge__(self, other): return _elemwise(operator.ge, self, other)
    def __eq__(self, other): return _elemwise(operator.eq, self, other)  # type: ignore[override]
    def __ne__(self, other): return _elemwise(operator.ne, self, other)  # type: ignore[override]
    def __neg__(self): return _elemwise(operator.neg, self)
    def __pos__(self): return _elemwise(operator.pos, self)
    def __abs__(self): return _elemwise(operator.abs, self)
    def __invert__(self): return _elemwise(operator.invert, self)

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
        from .elementwise import _astype
        return _elemwise(partial(_astype, dtype=dtype, **kwargs), self, dtype=dtype)

    def copy(self) -> Array:
        return self

    def round(self, decimals: int = 0) -> Array:
        return _elemwise(partial(np.round, decimals=decimals), self, dtype=self.dtype)

    def clip(self, min: Any = None, max: Any = None) -> Array:
        from .elementwise import clip
        return clip(self, min, max)

    def conj(self) -> Array:
        return _elemwise(np.conjugate, self)

    @property
    def real(self) -> Array:
        return _elemwise(np.real, self)

    @property
    def imag(self) -> Array:
        return _elemwise(np.imag, self)

    def dot(self, other: Any) -> Array:
        from .linalg import dot
        return dot(self, other)

    def map_blocks(self, func: Callable, *args: Any, **kwargs: Any) -> Array:
        from .blockwise import map_blocks
        return map_blocks(func, self, *args, **kwargs)

    def to_delayed(self, optimize_graph: bool = True) -> np.ndarray:
        from .convert import to_delayed
        return to_delayed(self, optimize_graph=optimize_graph)

    def to_dask_array(self) -> Any:
        """The same array as a dask.array.Array (needs the ``dask`` extra)."""
        from shmdask.interop.shmdask_on_dask import to_dask_array
        return to_dask_array(self)

    def store(self, target: Any, **kwargs: Any) -> Any:
        from .convert import store
        return store(self, target, **kwargs)

    def to_hdf5(self, filename: str, datapath: str, **kwargs: Any) -> None:
        from .routines import to_hdf5
        return to_hdf5(filename, datapath, self, **kwargs)

    def compute_chunk_sizes(self) -> Array:
        """Fill in unknown (nan) chunk sizes by computing every block's shape."""
        from shmdask.base import get as _get
        dsk = dict(self.__shmdask_graph__())
        keys = list(flatten(self.__shmdask_keys__()))
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


def _block_shape(x: np.ndarray) -> tuple:
    return tuple(np.shape(x))


# --------------------------------------------------------------------------- running

def optimize(dsk: Mapping, keys: Any, cull_and_fuse: bool = False) -> Mapping:
    """The Array optimisation pass: blockwise fusion, then cull and linear fusion.

    Blockwise fusion already happened when the layers were materialised (see
    ``layers.py``).  Culling and linear-chain fusion are what
    ``shmdask.base.prepare_graph`` does to every graph it runs, so by default
    they are not repeated here (repeating them cost ~10% of a 10,000-chunk
    ``random(...).sum()``); ``cull_and_fuse=True`` runs them anyway, e.g. for a
    graph handed to something that does not prepare graphs itself.  So a
    graph read lazily (``__shmdask_lazy_graph__``) passes through unread.
    """
    if not cull_and_fuse:
        return dsk
    flat = list(flatten(keys))
    graph, deps = cull(dsk, flat)
    return fuse_linear(graph, flat, deps)[0]


def compute(*arrays: Any, **kwargs: Any) -> tuple:
    from shmdask.base import compute as _compute
    return _compute(*arrays, **kwargs)


def is_array(x: Any) -> bool:
    return isinstance(x, Array)
