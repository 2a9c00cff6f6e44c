"""Process-wide settings: ``shmdask.config.set(...)`` globally or as a context manager.

One flat dict of options.  ``set`` changes it at once and returns a context
manager that puts the old values back on exit, so both styles of dask work::

    shmdask.config.set(scheduler="processes")          # from now on
    with shmdask.config.set(scheduler="sync"): ...     # inside the block only

Known options: ``scheduler`` ("sync" | "threads" | "processes" | a Client),
``num_workers`` (threads for the threads scheduler), ``progress`` (bool: show
a terminal progress bar for long computes), ``optimize`` (bool).  An unknown
option name is an error, so a typo does not pass silently.

Memory thresholds of a cluster's workers, as fractions of ``memory_limit``
(dask's names and defaults; ``False`` turns one off): ``memory.target`` (0.6:
spill least recently used data to disk above it), ``memory.spill`` (0.7: new
results go straight to disk above it), ``memory.pause`` (0.8: the worker
takes no new tasks) and ``memory.terminate`` (0.95: the worker is restarted).
dask's long names (``distributed.worker.memory.target``) are accepted too.
``temporary_directory``: where a cluster puts its spill folder (default: the
system's temporary directory).  A cluster reads these when it starts.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_DEFAULTS: dict[str, Any] = {
    "scheduler": None,
    "num_workers": None,
    "progress": True,
    "optimize": True,
    "memory.target": 0.6,
    "memory.spill": 0.7,
    "memory.pause": 0.8,
    "memory.terminate": 0.95,
    "temporary_directory": None,
}
MEMORY_FRACTIONS = ("memory.target", "memory.spill", "memory.pause", "memory.terminate")
_DASK_PREFIX = "distributed.worker."  # dask's spelling of the memory options
config: dict[str, Any] = dict(_DEFAULTS)
_lock = threading.Lock()
_MISSING = object()


class set:  # noqa: A001 - dask's public name
    """Set options; use as a context manager to restore them afterwards."""

    def __init__(self, options: dict[str, Any] | None = None, **kwargs: Any):
        updates = {_canonical(k): v for k, v in {**(options or {}), **kwargs}.items()}
        unknown = sorted(k for k in updates if k not in _DEFAULTS)
        if unknown:
            raise KeyError(
                f"unknown shmdask config option(s) {unknown}; known: {sorted(_DEFAULTS)}"
            )
        _check(updates)
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


def _canonical(name: str) -> str:
    if name.startswith(_DASK_PREFIX) and name[len(_DASK_PREFIX):] in _DEFAULTS:
        return name[len(_DASK_PREFIX):]
    return name


def _check(updates: dict[str, Any]) -> None:
    """Reject values that would only fail later, far from the mistake (a
    thread pool of no threads would wait forever)."""
    n = updates.get("num_workers")
    if n is not None and (type(n) is not int or n < 1):
        raise ValueError(f"num_workers must be a positive int or None, not {n!r}")
    for name in MEMORY_FRACTIONS:
        if name not in updates:
            continue
        value = updates[name]
        if value is False or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ValueError(f"{name} must be a fraction of the memory limit in (0, 1] "
                             f"or False, not {value!r}")
    directory = updates.get("temporary_directory")
    if directory is not None and not isinstance(directory, str | bytes | os.PathLike):
        raise TypeError(f"temporary_directory must be a path or None, not {directory!r}")


def get(name: str, default: Any = None) -> Any:
    return config.get(_canonical(name), default)


def memory_fraction(name: str) -> float | None:
    """A memory threshold (``"target"``, ``"spill"``, ...) as a fraction, or None if off."""
    value = get(f"memory.{name}")
    return None if value is False or value is None else float(value)


def refresh() -> None:
    """Back to the defaults (used by tests)."""
    with _lock:
        config.clear()
        config.update(_DEFAULTS)
