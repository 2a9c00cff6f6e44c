"""Process-wide settings: ``shmdask.config.set(...)`` globally or as a context manager.

One flat dict of options under shmdask's own names.  ``set`` changes it at
once and returns a context manager that puts the old values back on exit, so
both styles of dask work::

    shmdask.config.set(scheduler="processes")          # from now on
    with shmdask.config.set(scheduler="sync"): ...     # inside the block only
    shmdask.config.set({"distributed.scheduler.allowed-failures": 5})  # dask's names

Every option is one row of :data:`OPTIONS`: its name, default, the dotted
names dask gives the same setting (``-`` and ``_`` alike, nested dicts too, as
in dask), and a check that turns a value into the one stored (or refuses it).
To add an option, add a row.  An unknown name is an error that lists the
nearest known names, so a typo does not pass silently.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from shmdask.units import parse_bytes, parse_timedelta


class Option(NamedTuple):
    name: str  # shmdask's name, the key of ``config``
    default: Any
    doc: str
    dask_names: tuple[str, ...] = ()  # dask's dotted names for the same setting
    check: Callable[[Any], Any] | None = None  # the value to store, or an error


def _positive_int_or_none(name: str) -> Callable[[Any], Any]:
    def check(n: Any) -> Any:
        # a thread pool of no threads would wait forever: refuse it here, not later
        if n is not None and (type(n) is not int or n < 1):
            raise ValueError(f"{name} must be a positive int or None, not {n!r}")
        return n
    return check


def _count(name: str) -> Callable[[Any], int]:
    def check(n: Any) -> int:
        if type(n) is not int or n < 0:
            raise ValueError(f"{name} must be an int >= 0, not {n!r}")
        return n
    return check


def _flag(name: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if value is None:  # dask's "optimization.fuse.active: null" means "default: on"
            return True
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, not {value!r}")
        return value
    return check


OPTIONS: tuple[Option, ...] = (
    Option("scheduler", None,
           '"sync" | "threads" | "processes" | a Client (None: threads, or the open Client)'),
    Option("num_workers", None, "threads of the threads scheduler (None: one per core)",
           ("num-workers",), _positive_int_or_none("num_workers")),
    Option("progress", True, "show a progress bar for computations longer than a second"),
    Option("optimize", True, "fuse linear chains and blockwise operations before running",
           ("optimization.fuse.active",), _flag("optimize")),
    Option("allowed_failures", 2,
           "workers that may die while running one task; the next death fails it with "
           "KilledWorker", ("distributed.scheduler.allowed-failures",),
           _count("allowed_failures")),
    Option("array_chunk_size", "128MiB",
           "target chunk size of chunks='auto' (and of byte sizes per chunk)",
           ("array.chunk-size",), parse_bytes),
    Option("connect_timeout", 10.0, "seconds a Client tries to reach a scheduler",
           ("distributed.comm.timeouts.connect",), parse_timedelta),
)

_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
_ALIASES: dict[str, str] = {}  # dask's name, with '-' for '_' -> shmdask's name
for _o in OPTIONS:
    for _alias in _o.dask_names:
        _ALIASES[_alias.replace("_", "-")] = _o.name

_DEFAULTS: dict[str, Any] = {
    o.name: o.check(o.default) if o.check and o.default is not None else o.default
    for o in OPTIONS}
config: dict[str, Any] = dict(_DEFAULTS)
_lock = threading.Lock()
_MISSING = object()


def canonical_name(name: str) -> str:
    """shmdask's name for ``name`` (its own, or one of dask's); KeyError naming
    the nearest known names otherwise."""
    if name in _BY_NAME:
        return name
    alias = _ALIASES.get(str(name).replace("_", "-"))
    if alias is not None:
        return alias
    known = sorted({*_BY_NAME, *(n for o in OPTIONS for n in o.dask_names)})
    near = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    raise KeyError(f"unknown shmdask config option {name!r}{hint} (known: {known})")


def _flatten(updates: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"distributed": {"scheduler": {...}}}`` -> ``{"distributed.scheduler....": ...}``."""
    out: dict[str, Any] = {}
    for key, value in updates.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not _is_option(name):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _is_option(name: str) -> bool:
    return name in _BY_NAME or str(name).replace("_", "-") in _ALIASES


class set:  # noqa: A001 - dask's public name
    """Set options; use as a context manager to restore them afterwards."""

    def __init__(self, options: Mapping[str, Any] | None = None, **kwargs: Any):
        given = {**_flatten(options or {}), **kwargs}
        updates: dict[str, Any] = {}
        for name, value in given.items():
            option = _BY_NAME[canonical_name(name)]
            updates[option.name] = (option.check(value) if option.check is not None
                                    else value)
        with _lock:
            self._old = {k: config.get(k, _MISSING) for k in updates}
            config.update(updates)

    def __enter__(self) -> set:
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:
            for k, v in self._old.items():
                if v is _MISSING:
                    config.pop(k, None)
                else:
                    config[k] = v


def get(name: str, default: Any = None) -> Any:
    """An option's value, by shmdask's name or dask's (``default`` if unset)."""
    try:
        name = canonical_name(name)
    except KeyError:
        return default
    return config.get(name, default)


def refresh() -> None:
    """Back to the defaults (used by tests)."""
    with _lock:
        config.clear()
        config.update(_DEFAULTS)
