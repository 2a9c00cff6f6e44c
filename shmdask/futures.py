"""Futures and the ways to wait for them: ``Future``, ``wait``, ``as_completed``.

What flows in: the scheduler's answer for a key (``"memory"``, ``"erred"``,
``"cancelled"``), delivered by the Client's listener on whichever thread the
connection hears it (the engine's loop thread, or a TCP reader thread).
What flows out: results to ``result()``, ``await future``, iterators and
callbacks, each in the caller's own thread or event loop.

Why it is shaped so:

- Every Future of one key in one Client shares a :class:`KeyStatus`.  A status
  finishes once (until ``retry``), under one module lock, then calls its
  *waiters*: internal, non-blocking callables (set an event, append to a
  queue, ``loop.call_soon_threadsafe``), as CPython's ``concurrent.futures``
  does.  ``wait`` and ``as_completed`` are built on these waiters: they sleep
  on a condition until told, they never poll.
- User code never runs on the thread that delivers statuses: done-callbacks
  go to the Client's :class:`CallbackThread`, one call at a time, each in its
  own ``try`` (a callback that raises is logged; the others still run), as
  dask runs them "in a separate thread".
- Asynchronous code awaits an ``asyncio`` future that a waiter resolves with
  ``call_soon_threadsafe``; fetching a value, which may copy from shared memory
  or cross the network, runs in the loop's executor.  The event loop never
  blocks.
- :func:`futures_of` is the one way to find the Futures inside lists, dicts and
  persisted collections; ``wait``, ``as_completed``, ``progress`` and
  ``fire_and_forget`` all use it.
"""

from __future__ import annotations

import asyncio
import html
import logging
import queue
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from shmdask.event_loops import resolve_soon
from shmdask.tracebacks import traceback_of
from shmdask.units import parse_timedelta

if TYPE_CHECKING:  # pragma: no cover
    from shmdask.client import Client

logger = logging.getLogger("shmdask.client")


class CancelledError(Exception):
    """The future was cancelled (or its data dropped by ``restart``)."""


# -- the status of a key ---------------------------------------------------------------

# Guards every status's transition and waiter list.  Critical sections are a
# few assignments, so one lock for all keys costs less than one per key.
_lock = threading.Lock()


class KeyStatus:
    """What a client knows about one key; shared by all its Futures (``holders``
    counts them: the key is let go of when the last one goes).

    A persist makes one per key and most are never waited on one by one, so
    the event a blocking ``wait`` sleeps on, and the list of waiters, are made
    only when someone needs them: a status is one small object until then."""

    __slots__ = ("_event", "status", "exception", "waiters", "holders")

    def __init__(self) -> None:
        self.holders = 0
        self._event: threading.Event | None = None
        self.status = "pending"
        self.exception: BaseException | None = None
        self.waiters: list[Callable[[KeyStatus], None]] | None = None

    @property
    def done(self) -> bool:
        """Finished (in memory, erred or cancelled), until a retry.  (The methods
        here compare the status themselves, under the lock: a property costs
        eight times the comparison.)"""
        return self.status != "pending"

    def finish(self, status: str, exception: BaseException | None) -> None:
        """The scheduler's answer: ``"memory"``, ``"erred"`` or ``"cancelled"``."""
        with _lock:
            if self.status != "pending":  # done
                return
            status = {"memory": "finished", "cancelled": "cancelled"}.get(status, "error")
            if status == "cancelled" and not isinstance(exception, CancelledError):
                exception = CancelledError(str(exception) if exception else "cancelled")
            self.exception = exception
            waiters, self.waiters = self.waiters, None
            # Last: the status is what says "done" to readers outside the lock,
            # who then read the exception.
            self.status = status
            if self._event is not None:
                self._event.set()
        for waiter in waiters or ():
            try:
                waiter(self)
            except Exception:  # internal waiters do not raise; if one did, the rest go on
                logger.exception("shmdask: a waiter of a future failed")

    def wait(self, timeout: float | None) -> bool:
        """Block until finished; False after ``timeout`` seconds."""
        with _lock:
            if self.status != "pending":  # done
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def cancel(self, reason: str) -> None:
        """Cancelled, also when finished (its data is gone: ``cancel``, ``restart``)."""
        with _lock:
            if self.status != "pending":  # done
                self.exception = CancelledError(reason)
                self.status = "cancelled"
                return
        self.finish("cancelled", CancelledError(reason))

    def add_waiter(self, waiter: Callable[[KeyStatus], None]) -> bool:
        """Call ``waiter(status)`` once when finished.  False (and ``waiter`` is
        not kept) when finished already: the caller acts at once instead."""
        with _lock:
            if self.status != "pending":  # done
                return False
            if self.waiters is None:
                self.waiters = []
            self.waiters.append(waiter)
            return True

    def remove_waiter(self, waiter: Callable) -> None:
        with _lock:
            if self.waiters is not None and waiter in self.waiters:
                self.waiters.remove(waiter)

    def reset(self) -> bool:
        """Back to pending (``retry``).  False if it was not erred."""
        with _lock:
            if self.status != "error":
                return False
            self.status = "pending"
            self.exception = None
            if self._event is not None:
                self._event.clear()
            return True


class CallbackThread:
    """Runs user callbacks of one Client in order, off the scheduler's thread.

    Started on the first callback; leaves after ``idle`` seconds without work
    or on :meth:`close`, so no thread outlives the callbacks that needed it.
    """

    idle = 5.0

    def __init__(self, name: str):
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable, *args: Any) -> None:
        with self._lock:
            self._queue.put((fn, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.idle)
            except queue.Empty:
                item = None
            if item is None:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            fn, args = item
            try:
                fn(*args)
            except Exception:
                logger.exception("shmdask: callback %r raised", fn)

    def close(self) -> None:
        """Leave once the callbacks queued so far have run."""
        self._queue.put(None)


# -- finding futures ------------------------------------------------------------------


def is_future(x: Any) -> bool:
    return getattr(type(x), "_shmdask_future", False)


def futures_of(obj: Any, like: Callable[[Any], bool] = is_future) -> list[Future]:
    """The Futures in ``obj``: a Future, a (nested) list/tuple/set/dict of them,
    or a collection whose graph holds them (a persisted Array or Delayed).

    ``like`` says what counts as a future (``progress`` also takes other
    objects with a ``done()`` method).
    """
    found: dict[int, Any] = {}
    stack = [obj]
    while stack:
        x = stack.pop()
        if like(x):
            found.setdefault(id(x), x)
        elif type(x) in (list, tuple, set, frozenset):
            stack.extend(reversed(list(x)))
        elif type(x) is dict:
            stack.extend(reversed(list(x.values())))
        elif hasattr(x, "__shmdask_graph__") and not isinstance(x, type):
            stack.extend(reversed(list(x.__shmdask_graph__().values())))
    return list(found.values())


# -- Future ---------------------------------------------------------------------------


async def _until_done(status: KeyStatus, timeout: float | None = None) -> None:
    """Sleep in the running event loop until ``status`` finishes."""
    if status.done:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def wake(_status: KeyStatus) -> None:
        resolve_soon(loop, done)

    if not status.add_waiter(wake):
        return
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        status.remove_waiter(wake)


class Future:
    """A remote result: ``.result()``, ``await future``, ``.exception()``, ``.cancel()``."""

    _shmdask_future = True
    # dask treats objects saying this as a scheduler's futures: a graph it builds
    # refers to their key (and the scheduler supplies the data) instead of
    # copying the Future into a task
    __dask_future__ = True

    def __dask_tokenize__(self) -> tuple:
        return ("shmdask-future", self.key)

    def __init__(self, key: Any, client: Client, status: KeyStatus | None = None):
        self.key = key
        self.client = client
        self._status = status if status is not None else client._hold(key)[0]

    @property
    def status(self) -> str:
        """``"pending"``, ``"finished"``, ``"error"`` or ``"cancelled"``."""
        return self._status.status

    def done(self) -> bool:
        return self._status.done

    def cancelled(self) -> bool:
        return self._status.status == "cancelled"

    def _wait(self, timeout: float | None) -> None:
        if not self._status.wait(timeout):
            raise TimeoutError(f"future {self.key!r} not done after {timeout} s")

    def _raise_if_failed(self) -> None:
        st = self._status
        if st.status == "error":
            raise st.exception
        if st.status == "cancelled":
            raise CancelledError(f"future {self.key!r} was cancelled: {st.exception}")

    def result(self, timeout: float | str | None = None) -> Any:
        """The value (copied to this process); raises the task's exception.

        With an asynchronous client, inside its event loop, returns an awaitable.
        """
        timeout = _seconds(timeout)
        if self.client.asynchronous:
            return self._result_async(timeout)
        self._wait(timeout)
        self._raise_if_failed()
        return self.client._fetch([self.key])[self.key]

    async def _result_async(self, timeout: float | None = None) -> Any:
        await _until_done(self._status, timeout)
        self._raise_if_failed()
        loop = asyncio.get_running_loop()
        values = await loop.run_in_executor(None, self.client._fetch, [self.key])
        return values[self.key]

    def __await__(self):
        return self._result_async().__await__()

    def exception(self, timeout: float | str | None = None) -> BaseException | None:
        """The exception the task raised, or None if it succeeded."""
        timeout = _seconds(timeout)
        if self.client.asynchronous:
            return self._exception_async(timeout)
        self._wait(timeout)
        return self._status.exception if self._status.status == "error" else None

    async def _exception_async(self, timeout: float | None) -> BaseException | None:
        await _until_done(self._status, timeout)
        return self._status.exception if self._status.status == "error" else None

    def traceback(self, timeout: float | str | None = None) -> types.TracebackType | None:
        """The traceback of the task's exception (of its own code, also when it
        ran in another process), for ``traceback.format_tb``; None if it
        succeeded."""
        timeout = _seconds(timeout)
        if self.client.asynchronous:
            return self._traceback_async(timeout)
        self._wait(timeout)
        return traceback_of(self._status.exception) if self._status.status == "error" else None

    async def _traceback_async(self, timeout: float | None) -> types.TracebackType | None:
        exc = await self._exception_async(timeout)
        return traceback_of(exc) if exc is not None else None

    def cancel(self) -> Any:
        """Stop computing this key (or drop its data); the future is cancelled."""
        return self.client.cancel([self])

    def retry(self) -> Any:
        """Run an erred task again (and what it needs that was released)."""
        return self.client.retry([self])

    def release(self) -> None:
        """Let go of the key now rather than when this object is collected."""
        status, self._status = self._status, KeyStatus()
        self._status.finish("cancelled", CancelledError("the future was released"))
        self.client._drop(self.key, status)

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` when the future finishes, errs or is cancelled; in
        a separate thread (one per client), never the scheduler's."""
        runner = self.client._callbacks

        def later(_status: KeyStatus) -> None:
            runner.call(fn, self)

        if not self._status.add_waiter(later):
            runner.call(fn, self)

    def __del__(self) -> None:
        try:
            self.client._drop(self.key, self._status)
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"<Future: {self.status}, key: {self.key!r}>"

    def _repr_html_(self) -> str:
        return f"<b>Future: {html.escape(str(self.key))}</b> status: {self.status}"

    def __reduce__(self) -> tuple:
        raise TypeError(
            "a Future cannot be pickled into a task; pass it as an argument to "
            "client.submit or a delayed function and it becomes its value"
        )


def _seconds(timeout: Any) -> float | None:
    """A timeout given as seconds or as dask's strings ("10 s", "2 minutes")."""
    if timeout is None:
        return None
    if isinstance(timeout, str):
        return parse_timedelta(timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            f"timeout= must be seconds or a string like '10 s', not {type(timeout).__name__} "
            "(to wait for several futures pass one list: wait([x, y, z]), not wait(x, y, z))"
        )
    return float(timeout)


# -- waiting for many -------------------------------------------------------------------

ALL_COMPLETED = "ALL_COMPLETED"
FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"


class DoneAndNotDoneFutures(NamedTuple):
    done: set
    not_done: set


class _Countdown:
    """A waiter for ``wait``: an event set once enough statuses finished."""

    def __init__(self, needed: int, return_when: str):
        self.needed = needed
        self.return_when = return_when
        self.event = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, status: KeyStatus) -> None:
        with self._lock:
            self.needed -= 1
            if (self.needed <= 0 or self.return_when == FIRST_COMPLETED
                    or (self.return_when == FIRST_EXCEPTION and status.status == "error")):
                self.event.set()


def _check_return_when(return_when: str) -> None:
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise ValueError(f"return_when must be {ALL_COMPLETED!r}, {FIRST_COMPLETED!r} or "
                         f"{FIRST_EXCEPTION!r}, not {return_when!r}")


def _satisfied(futures: list[Future], return_when: str) -> bool:
    if return_when == ALL_COMPLETED:
        return all(f.done() for f in futures)
    if return_when == FIRST_COMPLETED:
        return any(f.done() for f in futures) or not futures
    return all(f.done() for f in futures) or any(f.status == "error" for f in futures)


def _outcome(futures: list[Future]) -> DoneAndNotDoneFutures:
    done = {f for f in futures if f.done()}
    cancelled = [f.key for f in done if f.cancelled()]
    if cancelled:
        raise CancelledError(f"{len(cancelled)} of the futures waited for were cancelled: "
                             f"{cancelled[:5]}{' ...' if len(cancelled) > 5 else ''}")
    return DoneAndNotDoneFutures(done, set(futures) - done)


def wait(fs: Any, timeout: float | str | None = None,
         return_when: str = ALL_COMPLETED) -> Any:
    """Wait until all (or the first, or the first failed) of the futures in ``fs``
    finish; ``fs`` may be futures, lists of them or persisted collections.

    Returns ``(done, not_done)`` sets; raises TimeoutError after ``timeout``
    seconds, CancelledError if a future was cancelled.  With an asynchronous
    client inside its event loop, returns an awaitable.
    """
    timeout = _seconds(timeout)
    _check_return_when(return_when)
    futures = futures_of(fs)
    if futures and futures[0].client.asynchronous:
        return _wait_async(futures, timeout, return_when)
    if not _satisfied(futures, return_when):
        statuses = {id(f._status): f._status for f in futures}.values()
        waiter = _Countdown(len(statuses), return_when)
        registered = []
        for st in statuses:
            if st.add_waiter(waiter):
                registered.append(st)
            else:
                waiter(st)
        try:
            if not waiter.event.wait(timeout):
                left = sum(not f.done() for f in futures)
                raise TimeoutError(f"{left} of {len(futures)} futures not done after "
                                   f"{timeout} s")
        finally:
            for st in registered:
                st.remove_waiter(waiter)
    return _outcome(futures)


async def _wait_async(futures: list[Future], timeout: float | None,
                      return_when: str) -> DoneAndNotDoneFutures:
    waits = {asyncio.ensure_future(_until_done(f._status)) for f in futures}
    try:
        async with asyncio.timeout(timeout):
            pending = waits
            while pending and not _satisfied(futures, return_when):
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        left = sum(not f.done() for f in futures)
        raise TimeoutError(f"{left} of {len(futures)} futures not done after "
                           f"{timeout} s") from None
    finally:
        for w in waits:
            w.cancel()
    return _outcome(futures)


class as_completed:  # noqa: N801 - dask's name
    """Futures in the order they finish: ``for f in as_completed(fs)``, ``next(ac)``,
    ``async for f in ac``; ``.add``, ``.update``, ``.count()``, ``.batches()``.

    ``with_results=True`` yields ``(future, result)``; a failed future then
    raises its exception, or with ``raise_errors=False`` gives it as the result.
    ``timeout`` (seconds from creation) bounds the whole iteration.
    """

    def __init__(self, futures: Iterable | None = None, loop: Any = None,
                 with_results: bool = False, raise_errors: bool = True, *,
                 timeout: float | str | None = None):
        self._cond = threading.Condition()
        self._pending: dict[Future, int] = {}  # future -> times added, not yet done
        self._ready: deque[Future] = deque()
        self._loop_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self.with_results = with_results
        self.raise_errors = raise_errors
        timeout = _seconds(timeout)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        if futures is not None:
            self.update(futures)

    # -- adding -------------------------------------------------------------------

    def add(self, future: Future) -> None:
        """Also yield ``future`` (when it finishes)."""
        if not is_future(future):
            raise TypeError(f"as_completed takes Futures, not {type(future).__name__}")
        with self._cond:
            self._pending[future] = self._pending.get(future, 0) + 1
        if not future._status.add_waiter(partial(self._on_done, future)):
            self._on_done(future, future._status)

    def update(self, futures: Iterable) -> None:
        """Add several futures (each item a Future, or what :func:`futures_of` reads)."""
        for item in futures:
            for f in [item] if is_future(item) else futures_of(item):
                self.add(f)

    def _on_done(self, future: Future, _status: KeyStatus) -> None:
        with self._cond:
            n = self._pending.get(future)
            if n is None:  # cleared meanwhile
                return
            if n > 1:
                self._pending[future] = n - 1
            else:
                del self._pending[future]
            self._ready.append(future)
            self._cond.notify_all()
            waiters, self._loop_waiters = self._loop_waiters, []
        for loop, fut in waiters:
            resolve_soon(loop, fut)

    # -- state ---------------------------------------------------------------------

    def count(self) -> int:
        """Futures not yet yielded (still running, or finished and waiting)."""
        with self._cond:
            return sum(self._pending.values()) + len(self._ready)

    def is_empty(self) -> bool:
        return self.count() == 0

    def has_ready(self) -> bool:
        with self._cond:
            return bool(self._ready)

    def clear(self) -> None:
        """Forget every future not yet yielded."""
        with self._cond:
            self._pending.clear()
            self._ready.clear()

    # -- iterating -------------------------------------------------------------------

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(f"as_completed: futures still running after {self._timeout} s")

    def __iter__(self) -> Iterator:
        return self

    def __next__(self) -> Any:
        with self._cond:
            while not self._ready:
                if not self._pending:
                    raise StopIteration
                left = None if self._deadline is None else self._deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise self._timed_out()
                self._cond.wait(left)
            future = self._ready.popleft()
        return self._output(future)

    next = __next__

    def _output(self, future: Future) -> Any:
        if not self.with_results:
            return future
        st = future._status
        if st.status == "finished":
            return future, future.client._fetch([future.key])[future.key]
        if st.status == "error" and self.raise_errors:
            raise st.exception
        return future, st.exception

    def next_batch(self, block: bool = True) -> list:
        """Every future finished now; with ``block``, at least one (waiting for it)."""
        batch = [next(self)] if block else []
        while True:
            with self._cond:
                if not self._ready:
                    return batch
                future = self._ready.popleft()
            batch.append(self._output(future))

    def batches(self) -> Iterator[list]:
        """Lists of the futures finished since the last list."""
        while True:
            try:
                yield self.next_batch(block=True)
            except StopIteration:
                return

    def __aiter__(self) -> as_completed:
        return self

    async def __anext__(self) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if self._ready:
                    future = self._ready.popleft()
                    break
                if not self._pending:
                    raise StopAsyncIteration
                woken = loop.create_future()
                self._loop_waiters.append((loop, woken))
            left = None if self._deadline is None else self._deadline - time.monotonic()
            if left is not None and left <= 0:
                raise self._timed_out()
            try:
                await asyncio.wait_for(woken, left)
            except TimeoutError:
                raise self._timed_out() from None
        if not self.with_results:
            return future
        st = future._status
        if st.status == "error" and self.raise_errors:
            raise st.exception
        if st.status != "finished":
            return future, st.exception
        return future, await future._result_async()


# -- fire and forget ----------------------------------------------------------------------


def fire_and_forget(obj: Any) -> None:
    """Let the tasks behind these futures run to the end even when every Future
    for them is dropped (their results are released as soon as they finish)."""
    for future in futures_of(obj):
        future.client._fire_and_forget(future)


__all__ = ["CancelledError", "Future", "KeyStatus", "as_completed", "fire_and_forget",
           "futures_of", "wait", "ALL_COMPLETED", "FIRST_COMPLETED",
           "FIRST_EXCEPTION"]
