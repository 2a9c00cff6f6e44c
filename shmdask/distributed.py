"""``shmdask.distributed``: the names of ``dask.distributed`` that shmdask provides.

``from shmdask.distributed import Client, LocalCluster, wait, as_completed, progress``
works where ``from dask.distributed import ...`` did.
"""

from __future__ import annotations

from typing import Any

from shmdask.client import CancelledError, Client, Future, as_completed, wait
from shmdask.coordination import Event, Lock, Pub, Queue, Semaphore, Sub, Variable
from shmdask.scheduler.state import KilledWorker
from shmdask.worker_client import get_client, get_worker, rejoin, secede, worker_client

__all__ = [
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
    "Variable",
    "Worker",  # noqa: F822 - loaded lazily by __getattr__
    "as_completed",
    "get_client",
    "get_worker",
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
    if name in ("Scheduler", "Worker", "Nanny"):
        from shmdask.cluster import servers

        return getattr(servers, name)
    if name == "progress":
        from shmdask.diagnostics.progress import progress

        return progress
    raise AttributeError(f"module 'shmdask.distributed' has no attribute {name!r}")
