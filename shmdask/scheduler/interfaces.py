"""The engine's two interfaces to the world, and what travels through them.

A transport (threads, local worker processes, remote workers over TCP) gives
the engine a :class:`WorkerHandle` per worker and a :class:`DataStore` for
the values; the engine hands a handle batches of :class:`TaskSpec` and the
handle posts back :class:`TaskResult` (or an error) to the engine's inbox.

- **WorkerHandle** (one per worker, or per thread of the threads backend)
  sends a batch of :class:`TaskSpec` and later posts events to the inbox.
- **DataStore** is the data plane: values in ``Engine.data`` are opaque to the
  loop (live objects for threads, serialized shared-memory references for
  processes); the store turns them into user objects, stores scattered data
  and frees released keys.

Kept apart from the loop (:mod:`shmdask.scheduler.engine`) so a transport
imports only what it implements, not the loop that drives it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple


class TaskSpec(NamedTuple):
    key: Any
    computation: Any
    deps: dict  # dependency key -> stored value


class TaskResult(NamedTuple):
    key: Any
    value: Any  # stored value
    record: tuple | dict  # task-stream record, compact or a dict (scheduler.records)


class WorkerHandle(ABC):
    """The engine's view of one worker.  ``run`` is called on the loop thread."""

    id: str
    nthreads: int = 1
    kind: str = "thread"  # "thread" | "local" | "remote"
    resources: Mapping | None = None  # dask's worker resources: {"GPU": 2, ...}
    runs_inline: bool = False  # run() executes the tasks before returning: no queue
    # Tasks per thread one run() may carry at most; None takes the engine's
    # max_batch.  A transport whose every message costs more than its tiny
    # tasks do (a system call and a wake-up of another process) asks for more.
    max_batch: int | None = None

    @abstractmethod
    def run(self, tasks: list[TaskSpec]) -> None:
        """Start these tasks; results come back later as inbox events."""

    def close(self) -> None:  # pragma: no cover - default
        pass

    # What ``scheduler_info()["workers"]`` says of a worker; transports fill
    # in what they know.
    pid: int | None = None
    host: str = "127.0.0.1"
    memory_limit: int | None = None
    processing: Any = ()  # keys sent and not yet answered
    paused: bool = False  # over its memory budget: no new tasks until it is back under
    above_target: bool = False  # over its memory target: tasks that free memory go first

    def memory_now(self) -> int:
        """Resident memory of the worker, in bytes (0 when unknown)."""
        return 0

    def info(self) -> dict:
        return {
            "name": getattr(self, "name", self.id),
            "id": self.id,
            "pid": self.pid,
            "host": self.host,
            "nthreads": self.nthreads,
            "memory_limit": self.memory_limit,
            "kind": self.kind,
            "resources": dict(self.resources or {}),
            "metrics": {
                "memory": self.memory_now(),
                "executing": min(self.nthreads, len(self.processing)),
                "in_memory": 0,
            },
        }


class DataStore(ABC):
    """Where results live.  Values are opaque to the engine.

    The wire hooks (``outgoing``, ``alloc_incoming``, ``free_incoming``,
    ``incoming``) are how a network transport moves values of this store;
    the defaults suit a store of live objects, which are pickled as they are.
    """

    where = "memory"  # where values live, as task-stream records say it
    threshold = 16 * 1024  # bytes from which a transfer is worth a record

    @abstractmethod
    def to_user(self, value: Any) -> Any: ...

    @abstractmethod
    def from_user(self, obj: Any) -> Any: ...

    def to_user_view(self, value: Any) -> Any:
        """``value`` for a reader that copies what it keeps: read-only views
        where the store can (valid only while the key is held), else ``to_user``."""
        return self.to_user(value)

    def release(self, values: list) -> None:
        pass

    def nbytes(self, value: Any) -> int:
        return 0

    def outgoing(self, value: Any) -> Any:
        """``value`` as it leaves for a remote peer."""
        return value

    def begin_read(self) -> int:
        """A reader of what :meth:`outgoing` gave starts; returns its token.
        Until :meth:`end_read` the store does not reuse memory it read from."""
        return 0

    def end_read(self, token: int) -> None:
        pass

    def alloc_incoming(self, nbytes: int) -> tuple | None:
        """A ``(ref, writeable view)`` to read an arriving buffer into, or None."""
        return None

    def free_incoming(self, refs: list) -> None:
        """Give back what ``alloc_incoming`` handed out and no value claimed."""

    def incoming(self, value: Any) -> Any:
        """A value that arrived from a peer (a serialized value with a ``load()``)."""
        return self.from_user(value.load())

    def close(self) -> None:
        pass


class LocalStore(DataStore):
    """Live Python objects, for the in-process backends."""

    def to_user(self, value: Any) -> Any:
        return value

    def from_user(self, obj: Any) -> Any:
        return obj


Listener = Callable[[Any, str, BaseException | None], None]


class RemoteTraceback(Exception):
    """Carries the traceback text of a task that failed in another process."""

    def __init__(self, text: str):
        self.text = text
        super().__init__(text)

    def __str__(self) -> str:
        return "\n\n" + self.text
