"""Deterministic tokens: equal inputs give equal hex strings, in any process.

``pure=True`` delayed calls and array layers are named by ``tokenize`` of
their function and arguments, so the same computation built twice gets the
same keys and runs once.  Values are normalised to a canonical, hashable
description first:

- numpy arrays by dtype, shape and a hash of their bytes (blake2b runs at
  about a GB/s here, so even large inputs are cheap next to computing them);
- functions by module and qualified name (by their pickled bytes when they
  have no importable name, e.g. lambdas and closures: pickled once per
  function object); bound methods also by the object they are bound to;
- containers recursively; objects with ``__shmdask_tokenize__`` by its result;
- anything else by its pickle, or failing that a random token (the value is
  then treated as unique, which is safe: it only costs sharing).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import pickle
import secrets
import types
import weakref
from functools import partial
from typing import Any

import cloudpickle
import numpy as np  # eager: a lazy import raced with workers warming up in a thread


def _normalize_function(func: Any) -> Any:
    if isinstance(func, partial):
        return (
            "partial",
            _normalize_function(func.func),
            normalize(func.args),
            normalize(func.keywords or {}),
        )
    if isinstance(func, types.MethodType):  # bound: the instance is part of the call
        return ("method", _normalize_function(func.__func__), normalize(func.__self__))
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if module and qualname and "<" not in qualname and module != "__main__":
        return ("fn", module, qualname)
    if type(func) is types.FunctionType:
        known = _function_descriptions.get(func)
        if known is None:
            known = _function_descriptions[func] = _describe_by_bytes(func)
        return known
    return _describe_by_bytes(func)


def _describe_by_bytes(func: Any) -> Any:
    try:
        return ("fn-bytes", hashlib.blake2b(cloudpickle.dumps(func)).hexdigest())
    except Exception:
        return ("fn-unique", unique_token())


# A function without an importable name (a notebook's or script's, a lambda, a
# closure) is described by its pickle, which costs ~100 us: once per function
# object, not once per call (``client.map`` over 10,000 items pickled it 10,000
# times).  As in dask, a global or closure the function reads that changes
# later does not change its token; the entry goes with the function.
_function_descriptions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _normalize_array(x: np.ndarray) -> Any:
    if type(x) is not np.ndarray:  # subclasses: their type, and a mask's content
        extra = (normalize(np.ma.getmaskarray(x)), normalize(x.fill_value)) \
            if isinstance(x, np.ma.MaskedArray) else ()
        return ("ndarray-subclass", type(x).__module__, type(x).__qualname__,
                _normalize_array(np.asarray(x).view(np.ndarray)), *extra)
    if x.dtype.hasobject:
        return ("ndarray-object", x.shape, normalize(x.tolist()))
    data = np.ascontiguousarray(x)
    digest = hashlib.blake2b(data.view(np.uint8).reshape(-1).data, digest_size=20).hexdigest()
    # dtype.str alone is "|V8" for every 8-byte structured dtype; descr names the fields
    dtype = x.dtype.descr if x.dtype.fields else x.dtype.str
    return ("ndarray", dtype, x.shape, digest)


def normalize(x: Any) -> Any:
    """A canonical, picklable description of ``x`` for hashing."""
    typ = type(x)
    if x is None or typ in (int, float, str, bytes, bool, complex):
        return x
    if typ in (tuple, list):
        return (typ.__name__, tuple(normalize(i) for i in x))
    if typ is dict:
        return ("dict", tuple(sorted((repr(k), normalize(v)) for k, v in x.items())))
    if typ in (set, frozenset):
        return (typ.__name__, tuple(sorted(repr(normalize(i)) for i in x)))
    if isinstance(x, np.ndarray):
        return _normalize_array(x)
    if isinstance(x, np.generic):
        return ("npscalar", x.dtype.str, x.tobytes())
    # looked up on the type: an instance __getattr__ may answer any name
    method = getattr(typ, "__shmdask_tokenize__", None)
    if callable(method) and not isinstance(x, type):
        return ("custom", normalize(method(x)))
    if callable(x):
        return _normalize_function(x)
    try:
        return ("pickle", hashlib.blake2b(pickle.dumps(x, protocol=5)).hexdigest())
    except Exception:
        return ("unique", unique_token())


class _UniqueTokens:
    """32-hex-digit tokens that never repeat: a random per-process prefix and a
    counter.  ``uuid4`` reads the OS's entropy source for every token, which
    costs tens of microseconds here; this costs well under one.  A forked
    child draws a new prefix, so parent and child never share a token."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


#: ``unique_token()``: a fresh token for a value or call that must not be shared.
unique_token = _UniqueTokens()


def tokenize(*args: Any, **kwargs: Any) -> str:
    """A deterministic 32-character hex token for the arguments."""
    description = normalize((args, kwargs)) if kwargs else normalize(args)
    return hashlib.blake2b(repr(description).encode(), digest_size=16).hexdigest()
