"""Process-wide settings: ``shmdask.config.set(...)`` globally or as a context manager.

One flat dict of options.  ``set`` changes it at once and returns a context
manager that puts the old values back on exit, so both styles of dask work::

    shmdask.config.set(scheduler="processes")          # from now on
    with shmdask.config.set(scheduler="sync"): ...     # inside the block only

Known options: ``scheduler`` ("sync" | "threads" | "processes" | a shmdask or
dask.distributed Client | a dask-style ``get(dsk, keys)`` function; a value
that is none of these is refused here, not at the first compute),
``num_workers`` (threads for the threads scheduler), ``progress`` (bool: show
a terminal progress bar for long computes), ``optimize`` (bool).  An unknown
option name is an error, so a typo does not pass silently.
"""

from __future__ import annotations

import threading
from typing import Any

_DEFAULTS: dict[str, Any] = {
    "scheduler": None,
    "num_workers": None,
    "progress": True,
    "optimize": True,
}
config: dict[str, Any] = dict(_DEFAULTS)
_lock = threading.Lock()
_MISSING = object()


class set:  # noqa: A001 - dask's public name
    """Set options; use as a context manager to restore them afterwards."""

    def __init__(self, options: dict[str, Any] | None = None, **kwargs: Any):
        updates = {**(options or {}), **kwargs}
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


def _check(updates: dict[str, Any]) -> None:
    """Reject values that would only fail later, far from the mistake (a
    thread pool of no threads would wait forever)."""
    n = updates.get("num_workers")
    if n is not None and (type(n) is not int or n < 1):
        raise ValueError(f"num_workers must be a positive int or None, not {n!r}")
    if "scheduler" in updates:
        from shmdask.base import check_scheduler

        check_scheduler(updates["scheduler"])


def get(name: str, default: Any = None) -> Any:
    return config.get(name, default)


def refresh() -> None:
    """Back to the defaults (used by tests)."""
    with _lock:
        config.clear()
        config.update(_DEFAULTS)
