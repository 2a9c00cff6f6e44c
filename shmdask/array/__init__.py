# ruff: noqa: F401
"""``import shmdask.array as da``: chunked numpy arrays computed by shmdask.

Public names mirror ``dask.array``: creation (``ones``, ``from_array``,
``random.*``...), every numpy ufunc, reductions, indexing, shape changes,
linear algebra, ``map_blocks``/``blockwise``, ``store``.  See ``core.py``
for the Array itself and ``layers.py`` for how graphs are kept and fused.
"""

from . import random
from .blockwise import blockwise, map_blocks
from .chunks import normalize_chunks
from .convert import (
    array,
    asanyarray,
    asarray,
    from_array,
    from_dask_array,
    from_delayed,
    store,
    to_delayed,
)
from .core import Array
from .creation import (
    arange,
    empty,
    empty_like,
    eye,
    full,
    full_like,
    identity,
    linspace,
    ones,
    ones_like,
    zeros,
    zeros_like,
)
from .cumulative import cumprod, cumsum, nancumprod, nancumsum
from .elementwise import clip, elemwise, where
from .gufunc import apply_gufunc, as_gufunc, gufunc
from .joining import block, concatenate, dstack, hstack, stack, vstack
from .linalg import dot, matmul, outer, tensordot, vdot
from .rechunk import rechunk
from .reductions import (
    all,
    amax,
    amin,
    any,
    argmax,
    argmin,
    max,
    mean,
    min,
    nanargmax,
    nanargmin,
    nanmax,
    nanmean,
    nanmin,
    nanprod,
    nanstd,
    nansum,
    nanvar,
    prod,
    reduction,
    std,
    sum,
    var,
)
from .routines import (
    array_equal,
    broadcast_to,
    copy,
    count_nonzero,
    flip,
    fliplr,
    flipud,
    isin,
    ndim,
    result_type,
    shape,
    size,
    take,
    to_hdf5,
    unique,
)
from .shape import (
    atleast_1d,
    atleast_2d,
    expand_dims,
    moveaxis,
    ravel,
    reshape,
    squeeze,
    swapaxes,
    transpose,
)
from .statistics import average, diff, histogram, median, nanmedian, percentile, quantile
from .ufunc import *  # noqa: F401,F403  (every numpy ufunc, generated)
from .ufunc import abs, allclose, angle, around, imag, isclose, isreal, nan_to_num, real, round


def astype(x, dtype):  # noqa: D103 - numpy 2's np.astype
    return asarray(x).astype(dtype)


__all__ = [n for n in dir() if not n.startswith("_")]


def __getattr__(name: str):
    """numpy names we lack fail with an error that names them (and hasattr() is False)."""
    import numpy

    from .core import NotImplementedName
    if not name.startswith("_") and name in vars(numpy):
        raise NotImplementedName(f"shmdask.array.{name} is not implemented "
                                 f"(numpy.{name} on a computed array is)")
    raise AttributeError(f"module 'shmdask.array' has no attribute {name!r}")
