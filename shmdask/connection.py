"""How a Client talks to a scheduler: the connection verbs, and the in-process connection.

A :class:`~shmdask.client.Client` holds one :class:`Connection` and uses
nothing else of the scheduler::

    Client ──submit / scatter / unwant──▶ Connection ──▶ engine (here, or over TCP)
           ◀── listener(key, "memory" | "erred" | "cancelled", exc) ──┘
           ──fetch / scheduler_info / task_stream / tasks_done / restart──▶ answers

:class:`LocalConnection` calls an engine in this process (a ``LocalCluster``
of worker processes, or threads); :class:`~shmdask.cluster.tcp_client.RemoteConnection`
sends the same verbs over TCP.  Listeners may be called on any thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shmdask.scheduler.pieces import PieceSubmitter
from shmdask.scheduler.records import TaskStream

Listener = Callable[[Any, str, BaseException | None], None]


class Connection(ABC):
    """The verbs a Client needs of a scheduler."""

    @abstractmethod
    def submit(self, dsk: Mapping, dependencies: Mapping, wanted: list,
               priorities: Mapping | None, listener: Listener,
               annotations: Mapping | None = None) -> None:
        """Add a graph; ``listener`` hears when each wanted key is done.
        ``annotations``: per-key scheduling options (priority, retries, ...)."""

    @abstractmethod
    def retry(self, keys: list, listener: Listener) -> None:
        """Run these erred keys (and what erred with them) again."""

    def submit_pieces(self, pieces: Iterable[tuple[Mapping, Mapping, Mapping]], wanted: list,
                      listener: Listener) -> int:
        """Add a graph given as ``(graph, dependencies, priorities)`` pieces in run
        order (:func:`shmdask.graph.order_pieces`); returns the number of tasks.

        Here the pieces are joined and sent as one graph; a connection that can
        do better sends each piece as soon as it is made, so the first tasks run
        while the rest of a huge graph is still being walked."""
        dsk: dict = {}
        deps: dict = {}
        prio: dict = {}
        for graph, dependencies, priorities in pieces:
            dsk.update(graph)
            deps.update(dependencies)
            prio.update(priorities)
        self.submit(dsk, deps, wanted, prio, listener)
        return len(dsk)

    @abstractmethod
    def scatter(self, items: Mapping, listener: Listener) -> None:
        """Store user objects under these keys (each wanted once)."""

    @abstractmethod
    def unwant(self, keys: list) -> None:
        """The client no longer needs these keys (once per earlier want)."""

    @abstractmethod
    def fetch(self, keys: list) -> dict:
        """Values of keys in memory, as private user objects."""

    def fetch_views(self, keys: list) -> dict:
        """Values of keys in memory for a reader that copies what it keeps:
        read-only and valid only while the keys are held, where that saves a
        copy; private copies otherwise."""
        return self.fetch(keys)

    @abstractmethod
    def scheduler_info(self) -> dict:
        """dask's ``scheduler_info()`` dict."""

    @abstractmethod
    def task_stream(self) -> TaskStream:
        """The scheduler's task-stream log (read-only for clients)."""

    @abstractmethod
    def tasks_done(self) -> int:
        """How many tasks the scheduler has finished so far."""

    def unfinished_tasks(self) -> int | None:
        """Tasks the scheduler has yet to finish, or None where that is not known."""
        return None

    @abstractmethod
    def restart(self) -> None:
        """Drop all data and tasks; fresh workers."""

    @abstractmethod
    def alive(self) -> bool:
        """Whether the scheduler can still be reached."""

    @abstractmethod
    def close(self) -> None:
        """Hang up (the scheduler lives on if it is not ours)."""

    def call(self, verb: str, **kwargs: Any) -> Any:
        """A scheduler-side call beyond tasks: ``client.run``, ``retire_workers``,
        ``Lock``... (the table is :mod:`shmdask.cluster.scheduler_calls`)."""
        raise NotImplementedError(f"{type(self).__name__} does not serve {verb!r}")


class LocalConnection(Connection):
    """The connection verbs on an engine in this process."""

    def __init__(self, cluster: Any):
        self.cluster = cluster
        self.engine = cluster.engine

    def submit(self, dsk, dependencies, wanted, priorities, listener,
               annotations: Mapping | None = None) -> None:
        self.engine.submit(dsk, dependencies, wanted, priorities, listener, annotations)

    def retry(self, keys: list, listener) -> None:
        self.engine.retry(keys, listener)

    def submit_pieces(self, pieces, wanted, listener) -> int:
        submitter = PieceSubmitter(self.engine, pieces, wanted, listener)
        try:
            while submitter.submit_next():
                pass
        except BaseException:  # e.g. a cycle found half-way: let go of what was sent
            submitter.abort()
            raise
        return submitter.total

    def scatter(self, items: Mapping, listener) -> None:
        self.engine.scatter(items, listener)

    def unwant(self, keys: list) -> None:
        self.engine.unwant(keys)

    def fetch(self, keys: list) -> dict:
        data, store = self.engine.data, self.engine.store
        return {k: store.to_user(data[k]) for k in keys}

    def fetch_views(self, keys: list) -> dict:
        data, store = self.engine.data, self.engine.store
        return {k: store.to_user_view(data[k]) for k in keys}

    def scheduler_info(self) -> dict:
        return self.cluster.scheduler_info()

    def task_stream(self) -> TaskStream:
        return self.engine.task_stream

    def tasks_done(self) -> int:
        return self.engine.tasks_done

    def unfinished_tasks(self) -> int:
        unfinished = ("waiting", "ready", "processing")
        return self.engine.call(
            lambda e: sum(ts.state in unfinished for ts in e.state.tasks.values()))

    def restart(self) -> None:
        self.cluster.restart()

    def alive(self) -> bool:
        return not self.engine.closed

    def close(self) -> None:
        pass

    def call(self, verb: str, **kwargs: Any) -> Any:
        from shmdask.cluster.scheduler_calls import handle_call

        return handle_call(self.cluster, verb, kwargs)
