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
import os
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


def _scheduler(value: Any) -> Any:
    # a scheduler no compute could use is refused when set, not at the first compute
    from shmdask.base import check_scheduler

    check_scheduler(value)
    return value


def _fraction(name: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is False or value is None:  # dask's way to turn a threshold off
            return False
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ValueError(f"{name} must be a fraction of the memory limit in (0, 1] "
                             f"or False, not {value!r}")
        return float(value)
    return check


def _directory(value: Any) -> Any:
    if value is not None and not isinstance(value, str | os.PathLike):
        raise TypeError(f"temporary_directory must be a path or None, not {value!r}")
    return value


OPTIONS: tuple[Option, ...] = (
    Option("scheduler", None,
           '"sync" | "threads" | "processes" | a shmdask or dask.distributed Client | a '
           'dask-style get(dsk, keys) function (None: threads, or the open Client)',
           (), _scheduler),
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
    # A worker's memory thresholds, as fractions of its memory_limit (read when
    # a cluster starts; see cluster/local_cluster.py).
    Option("memory.target", 0.6, "above it, a worker's least recently used data is spilled "
           "to disk", ("distributed.worker.memory.target",), _fraction("memory.target")),
    Option("memory.spill", 0.7, "above it, a worker writes new results to disk",
           ("distributed.worker.memory.spill",), _fraction("memory.spill")),
    Option("memory.pause", 0.8, "above it, a worker takes no new tasks",
           ("distributed.worker.memory.pause",), _fraction("memory.pause")),
    Option("memory.terminate", 0.95, "above it, a worker is restarted (its data is kept)",
           ("distributed.worker.memory.terminate",), _fraction("memory.terminate")),
    Option("temporary_directory", None, "where a cluster makes its spill folder (None: the "
           "system's temporary directory)", ("temporary-directory",), _directory),
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


def memory_fraction(name: str) -> float | None:
    """A memory threshold (``"target"``, ``"spill"``, ...) as a fraction, or None if off."""
    value = get(f"memory.{name}")
    return None if value is False or value is None else float(value)


def refresh() -> None:
    """Back to the defaults (used by tests)."""
    with _lock:
        config.clear()
        config.update(_DEFAULTS)
