"""numpy's dispatch protocols: ``np.sin(x)``, ``np.sum(x)``, ``np.concatenate([x, y])``.

In: the calls numpy forwards to ``Array.__array_ufunc__`` and
``Array.__array_function__``.  Out: an Array built by the matching function
of ``shmdask.array``, or NotImplementedError naming the numpy function we do
not implement -- never a silent conversion to numpy (which would compute the
whole array behind the user's back).  The table is built on first use from
the names both numpy and ``shmdask.array`` define, so adding a function to
the package is enough to make numpy dispatch to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

_TABLE: dict | None = None

_NAMES = [
    "sum", "prod", "mean", "std", "var", "min", "max", "amin", "amax", "argmin", "argmax",
    "any", "all", "nansum", "nanprod", "nanmean", "nanstd", "nanvar", "nanmin", "nanmax",
    "nanargmin", "nanargmax", "concatenate", "stack", "hstack", "vstack", "dstack",
    "transpose", "swapaxes", "moveaxis", "reshape", "ravel", "squeeze", "expand_dims",
    "where", "clip", "round", "around", "dot", "tensordot", "vdot", "outer", "isclose",
    "allclose", "nan_to_num", "ones_like", "zeros_like", "full_like", "empty_like", "real",
    "imag", "iscomplex", "isreal", "angle", "atleast_1d", "atleast_2d", "take", "shape",
    "ndim", "size", "astype", "copy", "result_type", "matmul", "broadcast_to", "cumsum",
    "cumprod", "nancumsum", "nancumprod", "flip", "fliplr", "flipud", "block", "count_nonzero",
    "isin", "unique", "array_equal", "median", "nanmedian", "percentile", "quantile", "diff",
    "histogram", "average",
]


def _table() -> dict:
    global _TABLE
    if _TABLE is None:
        import shmdask.array as da
        table = {}
        for name in _NAMES:
            if hasattr(np, name) and hasattr(da, name):
                table[getattr(np, name)] = getattr(da, name)
        _TABLE = table
    return _TABLE


def _numpy_name(func: Callable) -> str:
    module = getattr(func, "__module__", "numpy") or "numpy"
    if module.startswith(("numpy._core", "numpy.core", "numpy.lib")):
        module = "numpy"  # where numpy defines it, not where users call it
    return f"{module}.{getattr(func, '__name__', repr(func))}"


def array_function(func: Callable, types: tuple, args: tuple, kwargs: dict) -> Any:
    from .core import Array
    if not all(issubclass(t, Array | np.ndarray) for t in types):
        return NotImplemented
    impl = _table().get(func)
    if impl is None:
        raise NotImplementedError(f"shmdask.array does not implement {_numpy_name(func)} "
                                  "(compute the array first with .compute() or np.asarray)")
    return impl(*args, **kwargs)


_REDUCE = {"add": "sum", "multiply": "prod", "minimum": "min", "maximum": "max",
           "logical_and": "all", "logical_or": "any"}


def array_ufunc(ufunc: np.ufunc, method: str, inputs: tuple, kwargs: dict) -> Any:
    import shmdask.array as da

    from .ufunc import apply_ufunc
    if kwargs.get("out") is not None:
        raise NotImplementedError(f"shmdask.array: numpy.{ufunc.__name__}(..., out=) is not "
                                  "supported")
    if method == "__call__":
        return apply_ufunc(ufunc, inputs, kwargs)
    if method == "reduce" and ufunc.__name__ in _REDUCE:
        kwargs = dict(kwargs)
        kwargs.pop("out", None)
        axis = kwargs.pop("axis", 0)
        return getattr(da, _REDUCE[ufunc.__name__])(inputs[0], axis=axis, **kwargs)
    raise NotImplementedError(f"shmdask.array does not implement numpy.{ufunc.__name__}"
                              f".{method}")
