"""``shmdask.distributed``: the names of ``dask.distributed`` that shmdask provides.

``from shmdask.distributed import Client, LocalCluster, wait, as_completed, progress``
works where ``from dask.distributed import ...`` did (also ``futures_of``,
``fire_and_forget``, ``default_client``, ``TimeoutError``).
"""

from __future__ import annotations

from typing import Any

from shmdask.client import Client
from shmdask.client_defaults import default_client
from shmdask.coordination import Event, Lock, Pub, Queue, Semaphore, Sub, Variable
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
from shmdask.worker_client import get_client, get_worker, rejoin, secede, worker_client

TimeoutError = TimeoutError  # noqa: A001, PLW0127 - dask.distributed exports it too

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "CancelledError",
    "Client",
    "Event",
    "Future",
    "KilledWorker",
    "LocalCluster",  # noqa: F822 - loaded lazily by __getattr__
    "Lock",
    "Nanny",  # noqa: F822 - loaded lazily by __getattr__
    "Pub",
    "Queue",
    "Scheduler",  # noqa: F822 - loaded lazily by __getattr__
    "Semaphore",
    "Sub",
    "TimeoutError",
    "Variable",
    "Worker",  # noqa: F822 - loaded lazily by __getattr__
    "as_completed",
    "default_client",
    "fire_and_forget",
    "futures_of",
    "get_client",
    "get_worker",
    "performance_report",  # noqa: F822 - loaded lazily by __getattr__
    "progress",  # noqa: F822 - loaded lazily by __getattr__
    "rejoin",
    "secede",
    "wait",
    "worker_client",
]


def __getattr__(name: str) -> Any:
    if name == "LocalCluster":
        from shmdask.cluster.local_cluster import LocalCluster

        return LocalCluster
    if name == "performance_report":
        from shmdask.diagnostics.dashboard import performance_report

        return performance_report
    if name in ("Scheduler", "Worker", "Nanny"):
        from shmdask.cluster import servers

        return getattr(servers, name)
    if name == "progress":
        from shmdask.diagnostics.progress import progress

        return progress
    raise AttributeError(f"module 'shmdask.distributed' has no attribute {name!r}")
