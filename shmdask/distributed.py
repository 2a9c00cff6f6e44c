"""``shmdask.distributed``: the names of ``dask.distributed`` that shmdask provides.

``from shmdask.distributed import Client, LocalCluster, wait, as_completed, progress``
works where ``from dask.distributed import ...`` did.
"""

from __future__ import annotations

from typing import Any

from shmdask.client import CancelledError, Client, Future, as_completed, wait
from shmdask.scheduler.state import KilledWorker

__all__ = [
    "CancelledError",
    "Client",
    "Future",
    "KilledWorker",
    "LocalCluster",  # noqa: F822 - loaded lazily by __getattr__
    "as_completed",
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
