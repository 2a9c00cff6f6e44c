"""Generalized ufuncs on Arrays: ``apply_gufunc``, ``gufunc``, ``as_gufunc``.

In: a function with a numpy gufunc signature such as ``"(n)->(n)"`` or
``"(i,j),(j)->(i)"`` -- a real gufunc (numba's ``@guvectorize``,
``np.vecdot``), a ``np.vectorize(..., signature=...)``, or any function that
works on the trailing *core* dimensions and loops over the leading ones --
and Arrays.  Out: Array(s) built by one blockwise layer: each task calls the
function on one block whose loop dimensions are chunked and whose core
dimensions are whole.

Why so: a gufunc sees its core dimensions at once (a smoothing window, a dot
product), so those must not be split.  A core dimension in several chunks is
an error naming the argument, the dimension and the fix
(``allow_rechunk=True`` or ``.rechunk``), as dask does, because merging the
chunks silently could make a block far larger than the user planned.  Loop
dimensions broadcast and align as in elementwise operations.  numpy sends
gufuncs to ``Array.__array_ufunc__``, which lands here, so ``smooth(x)`` works
for a numba gufunc ``smooth``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from .blockwise import blockwise_layer_array, pick_outputs, unify_chunks
from .convert import asarray
from .core import Array, token_name

_DIMS = re.compile(r"\(([^()]*)\)")


def parse_signature(signature: str) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], bool]:
    """``"(i,j),(j)->(i),()"`` -> ``([("i", "j"), ("j",)], [("i",), ()], True)``;
    the last item says whether there are several outputs (a tuple on the right)."""
    if not isinstance(signature, str) or "->" not in signature:
        raise ValueError(f"not a gufunc signature: {signature!r} (e.g. '(n)->()')")
    left, right = (part.replace(" ", "") for part in signature.split("->", 1))

    def dims(side: str) -> list[tuple[str, ...]]:
        groups = _DIMS.findall(side)
        if _DIMS.sub("", side).replace(",", "") or not groups:
            raise ValueError(f"not a gufunc signature: {signature!r}")
        out = []
        for group in groups:
            names = tuple(n for n in group.split(",") if n)
            for n in names:
                if not n.isidentifier():
                    raise ValueError(f"gufunc signature {signature!r}: dimension {n!r} is not "
                                     "supported (plain names only; no optional '?' dims)")
            out.append(names)
        return out

    outputs = dims(right)
    return dims(left), outputs, len(outputs) > 1


def apply_gufunc(func: Callable, signature: str | None, *args: Any,
                 axes: Sequence | None = None, axis: int | None = None,
                 keepdims: bool = False, output_dtypes: Any = None,
                 output_sizes: dict | None = None, vectorize: bool | None = None,
                 allow_rechunk: bool = False, meta: Any = None, **kwargs: Any) -> Any:
    """Apply a function with a gufunc signature to Arrays, block by block.

    ``output_dtypes``: dtype (or one per output) when it cannot be found by
    calling ``func`` on one block's worth of ones.  ``output_sizes``: lengths of
    output core dimensions that no input has.  ``vectorize``: wrap ``func`` in
    ``np.vectorize`` with the signature.  ``axes``/``axis``: which axes of each
    argument (and output) are the core dimensions, instead of the last ones.
    ``allow_rechunk``: merge core dimensions split into several chunks.
    """
    if signature is None:
        signature = getattr(func, "signature", None)
    if signature is None:
        raise ValueError("apply_gufunc needs a signature, e.g. '(n)->()'")
    if keepdims:
        raise NotImplementedError("shmdask.array.apply_gufunc(keepdims=True) is not supported")
    ins, outs, several = parse_signature(signature)
    if len(args) != len(ins):
        raise TypeError(f"signature {signature!r} takes {len(ins)} argument(s), "
                        f"got {len(args)}")
    if vectorize:
        otypes = None
        if output_dtypes is not None:
            dts = output_dtypes if isinstance(output_dtypes, list | tuple) else [output_dtypes]
            otypes = [np.dtype(d).char for d in dts]
        func = np.vectorize(func, signature=signature, otypes=otypes)
    arrays = [asarray(a) for a in args]
    in_axes, out_axes = _core_axes(axes, axis, ins, outs, arrays)
    if in_axes is not None:  # move the chosen core axes to the end
        arrays = [_move(a, src, range(a.ndim - len(src), a.ndim))
                  for a, src in zip(arrays, in_axes, strict=True)]
    sizes: dict[str, int] = dict(output_sizes or {})
    loop_ndim = 0
    for i, (a, core) in enumerate(zip(arrays, ins, strict=True)):
        if a.ndim < len(core):
            raise ValueError(f"argument {i} has {a.ndim} dimension(s) but the signature "
                             f"{signature!r} gives it {len(core)} core dimension(s)")
        loop_ndim = max(loop_ndim, a.ndim - len(core))
        for name, n in zip(core, a.shape[a.ndim - len(core):], strict=True):
            if sizes.setdefault(name, n) != n:
                raise ValueError(f"core dimension {name!r} has length {sizes[name]} in one "
                                 f"argument and {n} in argument {i}")
    for out in outs:
        missing = [n for n in out if n not in sizes]
        if missing:
            raise ValueError(f"output core dimension(s) {missing} appear in no input: give "
                             "their lengths with output_sizes={...}")
    arrays = [_whole_core(a, core, i, allow_rechunk,
                          in_axes[i] if in_axes is not None else None)
              for i, (a, core) in enumerate(zip(arrays, ins, strict=True))]
    loop = tuple(f".{d}" for d in range(loop_ndim))
    out_core = {n for out in outs for n in out}
    pairs = []
    for a, core in zip(arrays, ins, strict=True):
        n_loop = a.ndim - len(core)
        ind = loop[loop_ndim - n_loop:] + tuple(f"core-{n}" if n in out_core else 0
                                                for n in core)
        pairs.append((a, ind))
    chunks_by_sym, pairs = unify_chunks(pairs)
    for n in out_core:
        chunks_by_sym[f"core-{n}"] = (sizes[n],)
    dtypes = _output_dtypes(func, output_dtypes, meta, arrays, ins, sizes, len(outs), kwargs)
    call = partial(func, **kwargs) if kwargs else func
    fname = getattr(func, "__name__", None) or type(func).__name__
    name = token_name(fname, func, signature, kwargs, *[(a.name, ind) for a, ind in pairs])
    if not several:
        out_ind = loop + tuple(f"core-{n}" for n in outs[0])
        result = blockwise_layer_array(call, name, out_ind, chunks_by_sym, pairs, dtypes[0])
        return _move_out(result, outs[0], out_axes, 0)
    # several outputs: one task per block returns a tuple; each output picks its item
    combined = blockwise_layer_array(call, name, loop, chunks_by_sym, pairs, object)
    picked = pick_outputs(combined, loop, chunks_by_sym,
                          [loop + tuple(f"core-{n}" for n in out) for out in outs], dtypes)
    return tuple(_move_out(p, out, out_axes, i)
                 for i, (p, out) in enumerate(zip(picked, outs, strict=True)))


def _core_axes(axes: Any, axis: Any, ins: list, outs: list, arrays: list) -> tuple:
    """Normalised ``axes=`` (or ``axis=``): per input and per output, the axes
    that hold its core dimensions; (None, None) for the default (the last ones)."""
    if axes is None and axis is None:
        return None, None
    if axes is not None and axis is not None:
        raise ValueError("give axes= or axis=, not both")
    if axis is not None:
        if any(len(c) != 1 for c in ins) or any(len(c) > 1 for c in outs):
            raise ValueError("axis= needs a signature with one core dimension per input "
                             "(and at most one per output)")
        axes = [(axis,)] * len(ins) + [(axis,) if len(c) else () for c in outs]
    axes = [tuple(a) if isinstance(a, list | tuple) else (a,) for a in axes]
    if len(axes) == len(ins):
        axes += [tuple(range(-len(c), 0)) for c in outs]
    if len(axes) != len(ins) + len(outs):
        raise ValueError(f"axes= needs one entry per input and output ({len(ins) + len(outs)}"
                         f"), got {len(axes)}")
    in_axes = []
    for a, core, ax in zip(arrays, ins, axes, strict=False):
        if len(ax) != len(core):
            raise ValueError(f"axes entry {ax} does not match core dimensions {core}")
        in_axes.append(tuple(d % a.ndim for d in ax))
    return in_axes, axes[len(ins):]


def _move(a: Array, source: Sequence[int], dest: Sequence[int]) -> Array:
    from .shape import moveaxis

    source, dest = list(source), list(dest)
    return a if source == dest else moveaxis(a, source, dest)


def _move_out(result: Array, core: tuple, out_axes: Any, i: int) -> Array:
    if out_axes is None or not core:
        return result
    nd = result.ndim
    return _move(result, range(nd - len(core), nd), [d % nd for d in out_axes[i]])


def _whole_core(a: Array, core: tuple, i: int, allow_rechunk: bool,
                given_axes: tuple | None) -> Array:
    """``a`` with each of its core (last) axes in one chunk; ``given_axes``: where
    they were in the caller's array (for the message)."""
    first = a.ndim - len(core)
    split = [d for d in range(first, a.ndim) if len(a.chunks[d]) > 1]
    if not split:
        return a
    if not allow_rechunk:
        d = split[0]
        axis = given_axes[d - first] if given_axes is not None else d
        raise ValueError(
            f"core dimension {core[d - first]!r} (axis {axis}) of argument {i} is split into "
            f"{len(a.chunks[d])} chunks {a.chunks[d]}; a gufunc needs each core dimension in "
            f"one chunk: rechunk it (x.rechunk({{{axis}: -1}})) or pass allow_rechunk=True")
    from .rechunk import rechunk

    return rechunk(a, {d: -1 for d in split})


def _output_dtypes(func: Callable, given: Any, meta: Any, arrays: list, ins: list,
                   sizes: dict, n_out: int, kwargs: dict) -> list:
    if given is None and meta is not None:
        metas = meta if isinstance(meta, tuple) else (meta,)
        given = [np.asarray(m).dtype for m in metas]
    if given is not None:
        dts = list(given) if isinstance(given, list | tuple) else [given]
        if len(dts) != n_out:
            raise ValueError(f"output_dtypes has {len(dts)} entries for {n_out} output(s)")
        return [np.dtype(d) for d in dts]
    # One loop element with the real core lengths: the function's own answer.
    samples = [np.ones((1,) * (a.ndim - len(core)) + tuple(sizes[n] for n in core), a.dtype)
               for a, core in zip(arrays, ins, strict=True)]
    try:
        with np.errstate(all="ignore"):
            out = func(*samples, **kwargs)
    except Exception as exc:
        raise ValueError(f"could not find the output dtype of {func!r} by calling it on a "
                         f"sample block ({exc!r}); give output_dtypes=") from exc
    outs = out if n_out > 1 else (out,)
    return [np.asarray(o).dtype for o in outs]


class gufunc:  # noqa: N801 - dask's name
    """``func`` as a gufunc over Arrays: ``gufunc(f, signature="(n)->()")(x)``.

    Calls with no Array argument go to ``func`` itself (through
    ``np.vectorize`` when ``vectorize=True``).
    """

    def __init__(self, pyfunc: Callable, *, signature: str | None = None,
                 vectorize: bool = False, **options: Any):
        self.pyfunc = pyfunc
        self.signature = signature or getattr(pyfunc, "signature", None)
        if self.signature is None:
            raise ValueError("gufunc needs a signature, e.g. signature='(n)->()'")
        parse_signature(self.signature)
        self.vectorize = vectorize
        self.options = options
        self.__name__ = getattr(pyfunc, "__name__", type(pyfunc).__name__)
        self.__doc__ = getattr(pyfunc, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not any(isinstance(a, Array) for a in args):
            func = self.pyfunc
            if self.vectorize:
                func = np.vectorize(func, signature=self.signature)
            return func(*args, **kwargs)
        return apply_gufunc(self.pyfunc, self.signature, *args, vectorize=self.vectorize,
                            **{**self.options, **kwargs})

    def __repr__(self) -> str:
        return f"<shmdask.array.gufunc {self.__name__} {self.signature}>"


def as_gufunc(signature: str | None = None, **options: Any) -> Callable[[Callable], gufunc]:
    """Decorator: ``@as_gufunc(signature="(i)->()", vectorize=True)``."""
    def wrap(pyfunc: Callable) -> gufunc:
        return gufunc(pyfunc, signature=signature, **options)
    return wrap
