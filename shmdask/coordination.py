"""Coordination primitives shared by clients and tasks: Lock, Semaphore, Event,
Variable, Queue, Pub/Sub — dask.distributed's, on shmdask's scheduler.

Where state lives, and how it is reached::

    Lock("x").acquire()  (client thread, or a task in a worker process)
       └─ client.connection.call("coordination", kind, name, op, args)
             LocalConnection ──────────────┐   (the client owns the engine)
             RemoteConnection ─TCP─▶ ClientSession thread   (a task's get_client(),
                                           │                  or Client("host:port"))
                                           ▼
       CoordinationService of the engine (one per scheduler, in the process that
       owns the engine): plain dicts under one condition variable; a call that
       must wait (acquire, get, wait) waits on it, with its timeout.

Objects are names: two ``Lock("x")`` anywhere in the cluster are the same
lock, and a primitive passed into a task is pickled as its name and finds
the task's client (``get_client()``) when first used.  Values (of Variable,
Queue, Pub) travel pickled; the service never unpickles them.  A Future put
into a Variable or Queue keeps its data on the cluster until it is replaced
or taken out: the service holds the key like a client would, and the taker
holds it before the service lets go (``get`` answers, the taker wants the
key, then tells the service it may release it).

Limits, unlike dask: nothing is reclaimed from a client that vanished while
holding a Lock or a Semaphore lease (dask expires leases); the primitives
live as long as the scheduler, not only while some client uses them.
"""

from __future__ import annotations

import collections
import itertools
import pickle
import threading
import uuid
import weakref
from collections.abc import Iterator
from typing import Any

from shmdask.cluster.protocol import pickle_any
from shmdask.units import parse_timedelta

_FUTURE = "__shmdask_future__"


# -- scheduler side ------------------------------------------------------------------


class CoordinationService:
    """The state of every primitive of one scheduler (see the module docstring)."""

    def __init__(self, engine: Any):
        self._engine = weakref.ref(engine)
        self.cond = threading.Condition()
        self.locks: dict[str, str] = {}  # name -> holder id
        self.semaphores: dict[str, dict] = {}  # name -> {"max": n, "leases": set}
        self.events: dict[str, bool] = {}
        self.variables: dict[str, Any] = {}  # name -> packed value
        self.queues: dict[str, collections.deque] = {}
        self.queue_sizes: dict[str, int] = {}
        self.subscribers: dict[str, dict[str, collections.deque]] = {}
        self._tokens = itertools.count()

    # -- futures held by the service ----------------------------------------------

    def _hold(self, packed: Any) -> None:
        if isinstance(packed, tuple) and packed and packed[0] == _FUTURE:
            engine = self._engine()
            if engine is not None:
                engine.submit({}, {}, [packed[1]])

    def _let_go(self, packed: Any) -> None:
        if isinstance(packed, tuple) and packed and packed[0] == _FUTURE:
            engine = self._engine()
            if engine is not None:
                engine.unwant([packed[1]])

    # -- dispatch -------------------------------------------------------------------

    def handle(self, kind: str, name: str, op: str, args: tuple, kwargs: dict) -> Any:
        method = getattr(self, f"{kind}_{op}", None)
        if method is None or kind not in _KINDS:
            raise ValueError(f"unknown coordination call {kind}.{op}")
        with self.cond:
            result = method(name, *args, **kwargs)
            self.cond.notify_all()
            return result

    def _wait(self, predicate: Any, timeout: float | None) -> bool:
        return self.cond.wait_for(predicate, timeout)

    # -- Lock -------------------------------------------------------------------------

    def lock_acquire(self, name: str, holder: str, timeout: float | None = None) -> bool:
        if self.locks.get(name) == holder:
            raise RuntimeError(f"Lock {name!r} is already held by this Lock object")
        if not self._wait(lambda: name not in self.locks, timeout):
            return False
        self.locks[name] = holder
        return True

    def lock_release(self, name: str, holder: str) -> None:
        if self.locks.get(name) != holder:
            raise RuntimeError(f"Lock {name!r} is not held by this Lock object")
        del self.locks[name]

    def lock_locked(self, name: str) -> bool:
        return name in self.locks

    # -- Semaphore ------------------------------------------------------------------

    def semaphore_create(self, name: str, max_leases: int) -> int:
        sem = self.semaphores.setdefault(name, {"max": max_leases, "leases": set()})
        return sem["max"]

    def semaphore_acquire(self, name: str, lease: str, timeout: float | None = None) -> bool:
        sem = self.semaphores[name]
        if not self._wait(lambda: len(sem["leases"]) < sem["max"], timeout):
            return False
        sem["leases"].add(lease)
        return True

    def semaphore_release(self, name: str, lease: str) -> None:
        sem = self.semaphores[name]
        if lease not in sem["leases"]:
            raise RuntimeError(f"Semaphore {name!r}: released more often than acquired")
        sem["leases"].discard(lease)

    def semaphore_value(self, name: str) -> int:
        return len(self.semaphores[name]["leases"])

    # -- Event ------------------------------------------------------------------------

    def event_set(self, name: str) -> None:
        self.events[name] = True

    def event_clear(self, name: str) -> None:
        self.events[name] = False

    def event_is_set(self, name: str) -> bool:
        return self.events.get(name, False)

    def event_wait(self, name: str, timeout: float | None = None) -> bool:
        return self._wait(lambda: self.events.get(name, False), timeout)

    # -- Variable ---------------------------------------------------------------------

    def variable_set(self, name: str, packed: Any) -> None:
        self._hold(packed)
        old = self.variables.get(name)
        self.variables[name] = packed
        self._let_go(old)

    def variable_get(self, name: str, timeout: float | None = None) -> Any:
        if not self._wait(lambda: name in self.variables, timeout):
            raise TimeoutError(f"Variable {name!r} was not set within {timeout} s")
        return self.variables[name]

    def variable_delete(self, name: str) -> None:
        self._let_go(self.variables.pop(name, None))

    # -- Queue ------------------------------------------------------------------------

    def queue_create(self, name: str, maxsize: int = 0) -> None:
        self.queues.setdefault(name, collections.deque())
        self.queue_sizes.setdefault(name, maxsize)

    def queue_put(self, name: str, packed: Any, timeout: float | None = None) -> None:
        items, maxsize = self.queues[name], self.queue_sizes[name]
        if maxsize and not self._wait(lambda: len(items) < maxsize, timeout):
            raise TimeoutError(f"Queue {name!r} stayed full for {timeout} s")
        self._hold(packed)
        items.append(packed)

    def queue_get(self, name: str, timeout: float | None = None, batch: Any = False) -> Any:
        items = self.queues[name]
        if batch is True:
            taken = list(items)
            items.clear()
            return taken
        n = int(batch) if batch else 1
        if not self._wait(lambda: len(items) >= n, timeout):
            raise TimeoutError(f"Queue {name!r}: nothing to get within {timeout} s")
        taken = [items.popleft() for _ in range(n)]
        return taken if batch else taken[0]

    def queue_qsize(self, name: str) -> int:
        return len(self.queues[name])

    def queue_release(self, name: str, packed: list) -> None:
        """The taker of these items holds their futures now: let go of ours."""
        for p in packed:
            self._let_go(p)

    # -- Pub / Sub ----------------------------------------------------------------------

    def pubsub_subscribe(self, name: str, subscriber: str) -> None:
        self.subscribers.setdefault(name, {})[subscriber] = collections.deque()

    def pubsub_unsubscribe(self, name: str, subscriber: str) -> None:
        self.subscribers.get(name, {}).pop(subscriber, None)

    def pubsub_put(self, name: str, message: bytes) -> int:
        subs = self.subscribers.get(name, {})
        for inbox in subs.values():
            inbox.append(message)
        return len(subs)

    def pubsub_get(self, name: str, subscriber: str, timeout: float | None = None) -> bytes:
        inbox = self.subscribers.get(name, {}).get(subscriber)
        if inbox is None:
            raise RuntimeError(f"Sub {name!r} is not subscribed")
        if not self._wait(lambda: bool(inbox), timeout):
            raise TimeoutError(f"Sub {name!r}: no message within {timeout} s")
        return inbox.popleft()

    def pubsub_subscribers(self, name: str) -> int:
        return len(self.subscribers.get(name, {}))


_KINDS = ("lock", "semaphore", "event", "variable", "queue", "pubsub")
_services: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_services_lock = threading.Lock()


def service_for(engine: Any) -> CoordinationService:
    """The coordination state of ``engine``'s scheduler (made on first use)."""
    with _services_lock:
        service = _services.get(engine)
        if service is None:
            service = _services[engine] = CoordinationService(engine)
        return service


# -- client side ---------------------------------------------------------------------


def _timeout(timeout: Any) -> float | None:
    """Seconds, dask's strings ("100 ms", "2 minutes") or None (wait for ever)."""
    if timeout is None:
        return None
    try:
        return parse_timedelta(timeout)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"timeout: {exc}") from None


class _Primitive:
    """A name on the scheduler, reached through a client (see the module docstring)."""

    kind = ""

    def __init__(self, name: str | None = None, client: Any = None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{type(self).__name__} name must be a str, not {name!r}")
        self.name = name or f"{self.kind}-{uuid.uuid4().hex}"
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from shmdask.worker_client import get_client

            self._client = get_client()
        return self._client

    def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        return self.client.connection.call("coordination", kind=self.kind, name=self.name,
                                           op=op, args=args, kwargs=kwargs)

    def _pack(self, value: Any) -> Any:
        from shmdask.client import Future

        if isinstance(value, Future):
            return (_FUTURE, value.key)
        return pickle_any(value)

    def _unpack(self, packed: Any) -> Any:
        if isinstance(packed, tuple) and packed and packed[0] == _FUTURE:
            from shmdask.client import Future

            client = self.client
            key = packed[1]
            status, new = client._hold(key)
            future = Future(key, client, status)
            if new:  # tell the scheduler we hold it too, and hear when it is done
                client.connection.submit({}, {}, [key], None, client._listener)
            return future
        return pickle.loads(packed)

    def __reduce__(self) -> tuple:
        return (type(self), (self.name,))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.name}>"


class Lock(_Primitive):
    """A cluster-wide lock: ``with Lock("resource"): ...``."""

    kind = "lock"

    def __init__(self, name: str | None = None, client: Any = None):
        super().__init__(name, client)
        self.id = uuid.uuid4().hex  # who holds it: this object
        self._held = False

    def acquire(self, blocking: bool = True, timeout: Any = None) -> bool:
        if not blocking:
            if timeout is not None:
                raise ValueError("a non-blocking acquire takes no timeout")
            timeout = 0
        self._held = self._call("acquire", self.id, timeout=_timeout(timeout))
        return self._held

    def release(self) -> None:
        self._call("release", self.id)
        self._held = False

    def locked(self) -> bool:
        return self._call("locked")

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class Semaphore(_Primitive):
    """At most ``max_leases`` holders at a time, cluster-wide."""

    kind = "semaphore"

    def __init__(self, max_leases: int = 1, name: str | None = None, client: Any = None):
        if isinstance(max_leases, bool) or not isinstance(max_leases, int) or max_leases < 1:
            raise ValueError(f"max_leases must be a positive int, not {max_leases!r}")
        super().__init__(name, client)
        self.max_leases = max_leases
        self._leases: list[str] = []
        self._created = False

    def _ensure(self) -> None:
        if not self._created:
            self.max_leases = self._call("create", self.max_leases)
            self._created = True

    def acquire(self, timeout: Any = None) -> bool:
        self._ensure()
        lease = uuid.uuid4().hex
        if self._call("acquire", lease, timeout=_timeout(timeout)):
            self._leases.append(lease)
            return True
        return False

    def release(self) -> bool:
        if not self._leases:
            raise RuntimeError(f"Semaphore {self.name!r}: released more often than acquired")
        self._call("release", self._leases.pop())
        return True

    def get_value(self) -> int:
        """Leases held now, by anyone."""
        self._ensure()
        return self._call("value")

    def __enter__(self) -> Semaphore:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __reduce__(self) -> tuple:
        return (type(self), (self.max_leases, self.name))


class Event(_Primitive):
    """A cluster-wide flag that tasks and clients can wait for."""

    kind = "event"

    def set(self) -> None:
        self._call("set")

    def clear(self) -> None:
        self._call("clear")

    def is_set(self) -> bool:
        return self._call("is_set")

    def wait(self, timeout: Any = None) -> bool:
        return self._call("wait", timeout=_timeout(timeout))


class Variable(_Primitive):
    """A named value (or Future) shared by clients and tasks."""

    kind = "variable"

    def set(self, value: Any) -> None:
        self._call("set", self._pack(value))

    def get(self, timeout: Any = None) -> Any:
        return self._unpack(self._call("get", timeout=_timeout(timeout)))

    def delete(self) -> None:
        self._call("delete")


class Queue(_Primitive):
    """A cluster-wide FIFO of values (or Futures)."""

    kind = "queue"

    def __init__(self, name: str | None = None, client: Any = None, maxsize: int = 0):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"maxsize must be an int >= 0, not {maxsize!r}")
        super().__init__(name, client)
        self.maxsize = maxsize
        self._created = False

    def _ensure(self) -> None:
        if not self._created:
            self._call("create", self.maxsize)
            self._created = True

    def put(self, value: Any, timeout: Any = None) -> None:
        self._ensure()
        self._call("put", self._pack(value), timeout=_timeout(timeout))

    def get(self, timeout: Any = None, batch: bool | int = False) -> Any:
        self._ensure()
        packed = self._call("get", timeout=_timeout(timeout), batch=batch)
        items = packed if batch else [packed]
        values = [self._unpack(p) for p in items]
        futures = [p for p in items if isinstance(p, tuple)]
        if futures:  # we hold them now (the submit went first): the queue may let go
            self._call("release", futures)
        return values if batch else values[0]

    def qsize(self) -> int:
        self._ensure()
        return self._call("qsize")

    def __reduce__(self) -> tuple:
        return (_queue, (self.name, self.maxsize))


def _queue(name: str, maxsize: int) -> Queue:
    return Queue(name, maxsize=maxsize)


class Pub(_Primitive):
    """Publish messages to every current ``Sub`` of the same name."""

    kind = "pubsub"

    def put(self, message: Any) -> None:
        self._call("put", pickle_any(message))

    @property
    def subscribers(self) -> int:
        return self._call("subscribers")


class Sub(_Primitive):
    """Receive what ``Pub``s of the same name publish from now on."""

    kind = "pubsub"

    def __init__(self, name: str | None = None, client: Any = None):
        super().__init__(name, client)
        self.id = uuid.uuid4().hex
        self._call("subscribe", self.id)
        self._finalizer = weakref.finalize(self, _unsubscribe, self.client, self.name, self.id)

    def get(self, timeout: Any = None) -> Any:
        return pickle.loads(self._call("get", self.id, timeout=_timeout(timeout)))

    def __iter__(self) -> Iterator[Any]:
        while True:
            yield self.get()

    def __next__(self) -> Any:
        return self.get()

    def close(self) -> None:
        self._finalizer()


def _unsubscribe(client: Any, name: str, subscriber: str) -> None:
    try:
        if not client.closed:
            client.connection.call("coordination", kind="pubsub", name=name,
                                   op="unsubscribe", args=(subscriber,), kwargs={})
    except Exception:  # the client or cluster is gone: nothing to undo
        pass


__all__ = ["Lock", "Semaphore", "Event", "Variable", "Queue", "Pub", "Sub",
           "CoordinationService", "service_for"]
