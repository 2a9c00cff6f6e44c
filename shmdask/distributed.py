"""``shmdask.distributed``: the names of ``dask.distributed`` that shmdask provides.

``from shmdask.distributed import Client, LocalCluster, wait, as_completed, progress``
works where ``from dask.distributed import ...`` did (also ``futures_of``,
``fire_and_forget``, ``default_client``, ``TimeoutError``).
"""

from __future__ import annotations

from typing import Any

from shmdask.client import Client, default_client
from shmdask.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    Future,
    as_completed,
    fire_and_forget,
    futures_of,
    wait,
)
from shmdask.scheduler.state import KilledWorker

TimeoutError = TimeoutError  # noqa: A001, PLW0127 - dask.distributed exports it too

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "CancelledError",
    "Client",
    "Future",
    "KilledWorker",
    "LocalCluster",  # noqa: F822 - loaded lazily by __getattr__
    "TimeoutError",
    "as_completed",
    "default_client",
    "fire_and_forget",
    "futures_of",
    "performance_report",  # noqa: F822 - loaded lazily by __getattr__
    "progress",  # noqa: F822 - loaded lazily by __getattr__
    "wait",
]


def __getattr__(name: str) -> Any:
    if name == "LocalCluster":
        from shmdask.cluster.local_cluster import LocalCluster

        return LocalCluster
    if name == "performance_report":
        from shmdask.diagnostics.dashboard import performance_report

        return performance_report
    if name == "progress":
        from shmdask.diagnostics.progress import progress

        return progress
    raise AttributeError(f"module 'shmdask.distributed' has no attribute {name!r}")
