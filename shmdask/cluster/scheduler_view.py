"""What ``cluster.scheduler`` and ``cluster.scheduler_info`` show: dask's shapes over our engine.

dask's examples read a few attributes of the cluster's scheduler object
(``cluster.scheduler.workers``, ``.address``, ``len(.tasks)``) and index
``cluster.scheduler_info["workers"]``.  Here there is no scheduler object
apart from the engine, so :class:`SchedulerView` answers those reads from
the cluster's ``scheduler_info()`` and the engine's task table, at the time
of each read (snapshots: nothing here changes the cluster).

``scheduler_info`` is a method of shmdask's clusters (``Client`` calls it) and
an attribute of dask's: :class:`SchedulerInfo` is a dict that also returns
itself when called, so both spellings work.
"""

from __future__ import annotations

import weakref
from typing import Any


class SchedulerInfo(dict):
    """dask's ``scheduler_info`` dict; calling it (shmdask's spelling) returns it."""

    def __call__(self) -> SchedulerInfo:
        return self


class WorkerState:
    """One worker as ``cluster.scheduler.workers`` shows it (a snapshot)."""

    def __init__(self, address: str, info: dict):
        self.address = address
        self.name = info.get("name", address)
        self.nthreads = info.get("nthreads", 1)
        self.memory_limit = info.get("memory_limit")
        self.pid = info.get("pid")
        self.host = info.get("host")
        self.kind = info.get("kind")
        self.metrics = dict(info.get("metrics", {}))

    def __repr__(self) -> str:
        return (f"<WorkerState {self.address!r} name: {self.name} pid: {self.pid} "
                f"nthreads: {self.nthreads}>")


class TaskState:
    """One task as ``cluster.scheduler.tasks`` shows it (a snapshot)."""

    __slots__ = ("key", "state")

    def __init__(self, key: Any, state: str):
        self.key = key
        self.state = state

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state}>"


class SchedulerView:
    """``cluster.scheduler``: the parts of dask's Scheduler that examples read."""

    def __init__(self, cluster: Any):
        self._cluster = weakref.ref(cluster)

    def _get(self) -> Any:
        cluster = self._cluster()
        if cluster is None or cluster.closed:
            raise RuntimeError("the cluster is closed")
        return cluster

    @property
    def address(self) -> str:
        return self._get().address

    @property
    def id(self) -> str:
        return self._get().scheduler_info()["id"]

    @property
    def workers(self) -> dict[str, WorkerState]:
        info = self._get().scheduler_info()
        return {addr: WorkerState(addr, w) for addr, w in info["workers"].items()}

    @property
    def total_nthreads(self) -> int:
        return sum(w.nthreads for w in self.workers.values())

    @property
    def tasks(self) -> dict[Any, TaskState]:
        engine = self._get().engine
        states = engine.call(lambda e: {k: ts.state for k, ts in e.state.tasks.items()})
        return {k: TaskState(k, s) for k, s in states.items()}

    def __repr__(self) -> str:
        cluster = self._cluster()
        if cluster is None or cluster.closed:
            return "<Scheduler: closed>"
        return f"<Scheduler {cluster.address!r} workers: {len(cluster.workers)}>"


__all__ = ["SchedulerInfo", "SchedulerView", "WorkerState", "TaskState"]
