"""Every numpy ufunc as ``da.<name>``, plus a few elementwise helpers.

In: Arrays, numpy arrays and scalars.  Out: an Array when any argument is an
Array (one blockwise layer, broadcasting as numpy does), otherwise exactly
what numpy returns, so ``da.sin(0.5)`` stays a float.  The wrappers are
generated from numpy's own list of ufuncs, so nothing is missed or
misspelled; ufuncs with two outputs (``modf``, ``frexp``, ``divmod``) return
two Arrays that share one layer of tasks.
"""

from __future__ import annotations

import operator
from functools import partial
from typing import Any

import numpy as np

from .blockwise import pick_outputs
from .core import Array
from .elementwise import elemwise


class ufunc:
    """A numpy ufunc that builds Arrays when given Arrays."""

    def __init__(self, np_ufunc: np.ufunc):
        self._ufunc = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.__doc__ = f"shmdask.array wrapper of numpy.{np_ufunc.__name__}\n\n" + (
            np_ufunc.__doc__ or "")
        self.nin = np_ufunc.nin
        self.nout = np_ufunc.nout

    def __repr__(self) -> str:
        return f"<shmdask.array.ufunc {self.__name__}>"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._ufunc, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not any(isinstance(a, Array) for a in args):
            return self._ufunc(*args, **kwargs)
        return apply_ufunc(self._ufunc, args, kwargs)


def apply_ufunc(uf: np.ufunc, args: tuple, kwargs: dict) -> Any:
    """``uf(*args, **kwargs)`` on Arrays.  ``uf`` may also be a gufunc wrapper
    with a ``signature`` that hands itself to ``__array_ufunc__`` (numba's,
    which pickles where its compiled ufunc would not)."""
    if kwargs.get("out") is not None:
        raise NotImplementedError(f"shmdask.array: {uf.__name__}(..., out=) is not supported")
    if "where" in kwargs:
        raise NotImplementedError(f"shmdask.array: {uf.__name__}(..., where=) is not supported")
    if getattr(uf, "signature", None) is not None:  # gufuncs are not elementwise
        if uf is np.matmul:
            from .linalg import matmul
            return matmul(*args)
        from .gufunc import apply_gufunc
        return apply_gufunc(uf, uf.signature, *args, **kwargs)
    if len(args) != uf.nin:
        raise TypeError(f"{uf.__name__} takes {uf.nin} argument(s), got {len(args)}")
    func = partial(uf, **kwargs) if kwargs else uf
    if uf.nout == 1:
        return elemwise(func, *args)
    combined = elemwise(func, *args, dtype=object)
    with np.errstate(all="ignore"):
        metas = uf(*[np.ones((1,) * a.ndim, a.dtype) if hasattr(a, "dtype") and hasattr(a, "ndim")
                     else a for a in args], **kwargs)
    syms = tuple(f".{d}" for d in range(combined.ndim))
    return pick_outputs(combined, syms, dict(zip(syms, combined.chunks, strict=True)),
                        [syms] * uf.nout, [np.asarray(m).dtype for m in metas])


# vars(), not dir(): getattr on every name would import numpy's lazy submodules (f2py...)
UFUNC_NAMES = sorted(n for n, v in vars(np).items() if isinstance(v, np.ufunc))

for _n in UFUNC_NAMES:
    globals()[_n] = ufunc(getattr(np, _n))

# Also the numpy aliases that are not ufunc attributes of np on every version.
abs = ufunc(np.absolute)  # noqa: A001


def isclose(a: Any, b: Any, rtol: float = 1e-05, atol: float = 1e-08,
            equal_nan: bool = False) -> Any:
    return elemwise(partial(np.isclose, rtol=rtol, atol=atol, equal_nan=equal_nan), a, b)


def allclose(a: Any, b: Any, rtol: float = 1e-05, atol: float = 1e-08,
             equal_nan: bool = False) -> Any:
    from .reductions import all as all_
    return all_(isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))


def around(x: Any, decimals: int = 0) -> Any:
    return elemwise(partial(np.round, decimals=decimals), x)


round = around  # noqa: A001


def nan_to_num(x: Any, copy: bool = True, nan: float = 0.0, posinf: Any = None,
               neginf: Any = None) -> Any:
    return elemwise(partial(np.nan_to_num, nan=nan, posinf=posinf, neginf=neginf), x)


def angle(x: Any, deg: bool = False) -> Any:
    return elemwise(partial(np.angle, deg=deg), x)


def real(x: Any) -> Any:
    return elemwise(np.real, x)


def imag(x: Any) -> Any:
    return elemwise(np.imag, x)


def iscomplex(x: Any) -> Any:
    return elemwise(np.iscomplex, x)


def isreal(x: Any) -> Any:
    return elemwise(np.isreal, x)


def astype(x: Any, dtype: Any) -> Any:
    return x.astype(dtype)


__all__ = UFUNC_NAMES + ["ufunc", "abs", "isclose", "allclose", "around", "round",
                         "nan_to_num", "angle", "real", "imag", "iscomplex", "isreal",
                         "operator"]
