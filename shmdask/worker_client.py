"""Tasks that use the cluster: ``get_worker``, ``get_client``, ``worker_client``,
``secede`` and ``rejoin``, as in dask.distributed.

How a task in a worker process reaches the scheduler: as a client over TCP.
A LocalCluster listens on loopback only when a task first asks (most runs
never do, and pay nothing)::

    task: get_client()
      └─ worker ──("ask", "scheduler") over its pipe──▶ cluster (reader thread):
                                                          start the listener once
         ◀──────── ("answer", address, key) ──────────────┘
      └─ Client(address, auth_key=key): a RemoteConnection to the same engine,
         one per worker process, shared by all its tasks

A worker that joined over TCP (``shmdask worker ADDRESS``) already knows the
address and its key, and connects there.  The key travels only over the
worker's own pipe.  Outside a worker process (the client, or the threads
backend whose tasks run in the client's process) ``get_client()`` is the
default client.  Thread workers (``LocalCluster(processes=False)``) secede the
same way: a new thread takes the task's place in the worker's pool.

Evolving workflows: a task that waits on tasks it submitted would hold a
worker thread the waited-on tasks may need.  ``secede()`` takes the task's
thread out of the worker's pool (the worker starts a replacement thread, and
the scheduler stops counting the task against the worker's threads) and
``rejoin()`` puts it back; ``with worker_client() as client:`` does both
around its block, so a recursive computation runs on a one-thread cluster.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_client_lock = threading.Lock()
_worker_client: Any = None  # the Client of this worker process, made on first use


def _this_worker() -> Any:
    """The worker running this task: the Worker of this process (a worker
    process), or the thread worker running it here (the threads backend); None
    outside a task."""
    from shmdask.scheduler import local

    in_thread = getattr(local.current, "worker", None)
    if in_thread is not None:
        return in_thread
    from shmdask.cluster import worker as worker_module

    return getattr(worker_module.current, "worker", None) or worker_module.Worker.instance


def _in_client_process(worker: Any) -> bool:
    """A thread worker runs in the client's process: its client is the default one."""
    from shmdask.cluster import worker as worker_module

    return not isinstance(worker, worker_module.Worker)


def get_worker() -> Any:
    """The worker running the current task (``.address``, ``.name``, ``.nthreads``)."""
    worker = _this_worker()
    if worker is None:
        raise ValueError("get_worker() must be called from a task on a worker process "
                         "(no worker found in this process)")
    return worker


def get_client(timeout: float | None = None) -> Any:
    """In a task: a Client of the cluster running it (one per worker process).
    Elsewhere: the default client.  ``timeout``: seconds to connect."""
    global _worker_client
    worker = _this_worker()
    if worker is None or _in_client_process(worker):
        from shmdask import config
        from shmdask.client import Client

        client = config.get("scheduler")
        if isinstance(client, Client) and not client.closed:
            return client
        raise ValueError("no client found: create a Client first (get_client() outside a "
                         "task returns the default client)")
    with _client_lock:
        if _worker_client is None or _worker_client.closed \
                or not _worker_client.connection.alive():
            from shmdask.client import Client

            contact = dict(worker.scheduler_connect or worker.ask("scheduler"))
            address = contact.pop("address")
            _worker_client = Client(address, set_as_default=False,
                                    timeout=timeout or 10, **contact)
        return _worker_client


def _pool_of(worker: Any) -> Any:
    if not hasattr(worker, "secede"):
        raise ValueError(f"{type(worker).__name__} runs tasks in the scheduler's own "
                         "thread: there is no thread pool to leave")
    return worker


def secede() -> None:
    """Leave the worker's thread pool: the task keeps running, but no longer
    holds one of the worker's threads (use before waiting on other tasks)."""
    _pool_of(get_worker()).secede()


def rejoin() -> None:
    """Come back into the thread pool after :func:`secede`."""
    _pool_of(get_worker()).rejoin()


@contextlib.contextmanager
def worker_client(timeout: float | None = None, separate_thread: bool = True
                  ) -> Iterator[Any]:
    """``with worker_client() as client:`` in a task: submit and gather more
    tasks without holding a worker thread (secede on entry, rejoin on exit).
    Outside a task it gives the default client and secedes nothing."""
    worker = _this_worker()
    client = get_client(timeout)
    seceding = separate_thread and hasattr(worker, "secede")
    if seceding:
        worker.secede()
    try:
        yield client
    finally:
        if seceding:
            worker.rejoin()


__all__ = ["get_worker", "get_client", "worker_client", "secede", "rejoin"]
