# ruff: noqa: F401
"""``import shmdask.array as da``: chunked numpy arrays computed by shmdask.

Public names mirror ``dask.array``: creation (``ones``, ``from_array``,
``random.*``...), every numpy ufunc, reductions, indexing, shape changes,
linear algebra, ``map_blocks``/``blockwise``, ``store``.  See ``core.py``
for the Array itself and ``layers.py`` for how graphs are kept and fused.
"""

from . import random
from .chunks import normalize_chunks
from .core import (
    Array,
    array,
    asanyarray,
    asarray,
    blockwise,
    clip,
    concatenate,
    elemwise,
    from_array,
    from_delayed,
    map_blocks,
    stack,
    store,
    to_delayed,
    where,
)
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
from .gufunc import apply_gufunc, as_gufunc, gufunc
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
    block,
    broadcast_to,
    copy,
    count_nonzero,
    dstack,
    flip,
    fliplr,
    flipud,
    hstack,
    isin,
    ndim,
    result_type,
    shape,
    size,
    take,
    to_hdf5,
    unique,
    vstack,
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
