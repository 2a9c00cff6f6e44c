"""SchedulerState: the pure bookkeeping of which task may run and which result may go.

No threads, no I/O, no clocks: the engine (``engine.py``) feeds it events and
acts on what each method returns, so every policy here is unit-tested alone.

Life of a task::

    waiting ──(all dependencies in memory)──▶ ready ──pop_ready()──▶ processing
       │                                        ▲                    │
       │                            worker_lost()│          finished()│  erred()
       │                                        └────────────────────┤──────────▶ erred
       ▼                                                             ▼
    (cancelled: forgotten while nobody wants it)                  memory ──▶ released

Policy, in the spirit of dask/local.py:

- **What runs next.**  Ready tasks sit in a queue (``ready.py``) keyed by ``(-user priority,
  generation, graph order)``: a task the user gave a higher ``priority`` runs
  first; otherwise graphs run in the order they were submitted (a graph may
  join the previous graph's generation: ``new_generation=False``, which the
  engine asks for within dask's ``fifo_timeout``), and inside a graph by
  :func:`shmdask.graph.order`, which finishes a chain before it starts
  another so intermediates are freed early.
- **Under memory pressure.**  Ready tasks are kept in two queues of the same
  order: tasks that *free* memory (they read a result no client holds, which
  goes once its last reader is done: reductions, the next link of a chain)
  and tasks that only *make* it (roots, and tasks reading only what clients
  hold).  ``pop_ready(prefer_freeing=True)`` -- asked for a worker above its
  memory target -- takes the first freeing task before any making one,
  whatever their order; otherwise the earlier of the two heads runs.  A
  preference, not a ban: with only making tasks ready, they run (the worker's
  pause threshold is what stops it taking more).
- **When a result goes.**  A key stays in memory while some client wants it
  (``who_wants``: futures, persisted collections, the keys of a running
  ``compute``) or a dependent has not finished yet (``waiters``).  When both
  reach zero the key is *released*: the engine frees its data, and the key is
  forgotten here.  Released keys are returned in batches so the engine can
  free them in one message per worker.
- **Sharing.**  A graph whose keys are already known reuses them: a shared
  subgraph runs once, and a key already in memory is not recomputed.
- **Failure.**  A task that raises goes back to ready while it has
  ``retries`` left; after that it is *erred*, and so is everything waiting on
  it, with the same exception.  :meth:`SchedulerState.retry` runs erred tasks
  again (and what they need that was released meanwhile).  A task on a worker
  that died goes back to ready; after ``max_worker_deaths`` such deaths it errs
  with :class:`KilledWorker`.
  An erred key that a new graph brings again is retried.  A graph that names
  an unknown dependency is refused whole, before any of its tasks is added.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from shmdask.scheduler.ready import ReadyQueue


class KilledWorker(RuntimeError):
    """A task was running on workers that died too many times."""

    def __init__(self, key: Any, deaths: int, last_reason: str = ""):
        self.key = key
        reason = f" (last: {last_reason})" if last_reason else ""
        super().__init__(
            f"task {key!r} was running on {deaths} workers that died{reason}; "
            "it probably crashes its worker (segfault, os._exit, out of memory)"
        )


class TaskExit(RuntimeError):
    """A task raised SystemExit or KeyboardInterrupt: the task fails, the process
    that ran it (a worker, or the user's own) carries on."""


def as_task_error(key: Any, exc: BaseException) -> BaseException:
    """The error a task failed with, as the client should see it: an exception
    that ends processes (``sys.exit()``, ``KeyboardInterrupt``) raised by the
    task itself becomes a :class:`TaskExit` naming the key."""
    if isinstance(exc, Exception) or not isinstance(exc, SystemExit | KeyboardInterrupt):
        return exc
    args = ", ".join(map(repr, exc.args))
    err = TaskExit(f"task {key!r} raised {type(exc).__name__}({args}); a task cannot end "
                   "the process it runs in, so the task failed instead")
    err.__cause__ = exc
    return err


class TaskState:
    __slots__ = (
        "key",
        "computation",
        "dependencies",
        "dependents",
        "waiting_on",
        "waiters",
        "who_wants",
        "state",
        "priority",
        "exception",
        "deaths",
        "retries",
        "annotations",
    )

    def __init__(self, key: Any, computation: Any, priority: tuple,
                 annotations: Mapping | None = None):
        self.key = key
        self.computation = computation
        # Lists made when the first link comes: a wide graph's tasks have none,
        # and two empty lists per task were a third of what adding one allocated.
        self.dependencies: list[TaskState] | tuple = ()
        self.dependents: list[TaskState] | tuple = ()
        self.waiting_on = 0  # dependencies not yet in memory
        self.waiters = 0  # dependents not yet finished
        self.who_wants = 0  # client references
        self.state = "waiting"
        self.priority = priority
        self.exception: BaseException | None = None
        self.deaths = 0
        # dask's scheduling options (``priority``, ``retries``, ``workers``,
        # ...); one dict shared by the tasks of a graph, None for most tasks.
        # ``priority`` and ``retries`` are read here; the engine reads the rest.
        self.annotations = annotations
        self.retries = (annotations.get("retries") or 0) if annotations else 0

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state}>"


def _frees_memory(ts: TaskState) -> bool:
    """Whether running ``ts`` lets some result go: it reads one no client holds."""
    for dep in ts.dependencies:
        if not dep.who_wants:
            return True
    return False


class SchedulerState:
    """Task states for one scheduler; see the module docstring for the policy."""

    def __init__(self, max_worker_deaths: int = 3):
        self.tasks: dict[Any, TaskState] = {}
        self.max_worker_deaths = max_worker_deaths
        self._ready = ReadyQueue()  # tasks that free memory when done
        self._ready_making = ReadyQueue()  # tasks that only make more
        self._generation = itertools.count()
        self._gen: int | None = None  # the generation of the last graph
        self._seq = itertools.count()

    # -- adding work ---------------------------------------------------------

    def update_graph(
        self,
        dsk: Mapping,
        dependencies: Mapping,
        wanted: Iterable,
        priorities: Mapping | None = None,
        annotations: Mapping | None = None,
        new_generation: bool = True,
    ) -> list:
        """Add the tasks of ``dsk`` and mark ``wanted`` as wanted by a client.

        ``dependencies[k]`` lists the keys ``dsk[k]`` needs; they must be in
        ``dsk`` or already known here.  ``annotations`` (dask's scheduling
        options: ``priority``, ``retries``, ...) apply to every task added.
        Returns keys already finished among ``wanted`` (in memory or erred),
        whose clients can be told at once.
        """
        tasks = self.tasks
        get = tasks.get
        wanted = list(wanted)
        # Check everything before changing anything: a bad graph must not
        # leave half-linked tasks behind (they would never run).
        adding = []
        for key in dsk:
            old = get(key)
            if old is None or old.state == "erred":
                adding.append(key)
        for key in adding:
            for dep_key in dependencies[key]:
                if dep_key not in dsk and dep_key not in tasks:
                    raise KeyError(f"task {key!r} depends on unknown key {dep_key!r}")
        for key in wanted:
            if key not in tasks and key not in dsk:
                raise KeyError(f"wanted key {key!r} is neither in the graph nor known")
        gen = next(self._generation) if new_generation or self._gen is None else self._gen
        self._gen = gen
        annotations = annotations or None
        user = -(annotations.get("priority") or 0) if annotations else 0
        new = [self._new_task(key, dsk[key], (user, gen, priorities[key] if priorities else 0),
                              annotations)
               for key in adding]
        on_erred = self._link(new, dependencies)  # new tasks that need an erred key
        for key in wanted:
            tasks[key].who_wants += 1
        # A new task waiting on an erred one errs too (after counting the
        # clients above, so that wanted ones keep their exception).
        for ts, failed in on_erred:
            if ts.state == "waiting":
                self._err_tree(ts, failed.exception)
        return [key for key in wanted if tasks[key].state in ("memory", "erred")]

    def _new_task(self, key: Any, computation: Any, priority: tuple,
                  annotations: Mapping | None) -> TaskState:
        ts = TaskState(key, computation, priority, annotations)
        old = self.tasks.get(key)
        if old is not None:  # an erred key is run again; its clients still hold it
            ts.who_wants = old.who_wants
        self.tasks[key] = ts
        return ts

    def _link(self, new: list[TaskState], dependencies: Mapping) -> list[tuple]:
        """Connect new tasks to their (known) dependencies; ready ones are queued.

        Returns ``(task, erred dependency)`` pairs: new tasks that can never run
        because an input erred (the caller errs them once clients are counted).
        """
        tasks = self.tasks
        on_erred = []
        ready = []
        for ts in new:
            dep_keys = dependencies[ts.key]
            mine = ts.dependencies = [] if dep_keys else ()
            for dep_key in dep_keys:
                dep = tasks[dep_key]
                mine.append(dep)
                users = dep.dependents
                if users:
                    users.append(ts)
                else:
                    dep.dependents = [ts]
                dep.waiters += 1
                if dep.state != "memory":
                    ts.waiting_on += 1
                    if dep.state == "erred":
                        on_erred.append((ts, dep))
            if ts.waiting_on == 0:
                ready.append(ts)
        self._make_ready_many(ready)
        return on_erred

    def retry(self, keys: Iterable) -> list:
        """Run erred ``keys`` again, with the erred or released tasks they need.

        The tasks are rebuilt from the links erred tasks keep (computation,
        priority, annotations), so retrying needs no graph from the client.
        Returns the keys of the tasks added again.
        """
        tasks = self.tasks
        todo: dict[Any, TaskState] = {}
        stack = [ts for k in keys if (ts := tasks.get(k)) is not None and ts.state == "erred"]
        while stack:
            ts = stack.pop()
            if ts.key in todo:
                continue
            todo[ts.key] = ts
            for dep in ts.dependencies:
                now = tasks.get(dep.key)
                if now is None:  # released meanwhile: computed again
                    if dep.computation is None:
                        raise KeyError(f"cannot retry {ts.key!r}: its input {dep.key!r} was "
                                       "scattered data that has been released")
                    stack.append(dep)
                elif now.state == "erred":
                    stack.append(now)
        new = [self._new_task(k, ts.computation, ts.priority, ts.annotations)
               for k, ts in todo.items()]
        self._link(new, {k: [d.key for d in ts.dependencies] for k, ts in todo.items()})
        return list(todo)

    def add_data(self, keys: Iterable) -> None:
        """Keys whose data the client put in the store (scatter): wanted, in memory."""
        gen = next(self._generation)
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None:
                ts = self.tasks[key] = TaskState(key, None, (0, gen, 0))
            ts.state = "memory"
            ts.who_wants += 1

    def _make_ready(self, ts: TaskState) -> None:
        ts.state = "ready"
        (self._ready if _frees_memory(ts) else self._ready_making).push(
            (ts.priority, next(self._seq), ts))

    def _make_ready_many(self, tasks: list[TaskState]) -> None:
        """:meth:`_make_ready` for a graph's ready tasks, handed to the queues
        in bulk (see ``ready.py``: the same order, cheaper pops)."""
        seq = self._seq
        freeing: list[tuple] = []
        making: list[tuple] = []
        for ts in tasks:
            ts.state = "ready"
            entries = freeing if _frees_memory(ts) else making
            entries.append((ts.priority, next(seq), ts))
        if freeing:
            self._ready.extend(freeing)
        if making:
            self._ready_making.extend(making)

    # -- running -------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(self._ready or self._ready_making)

    def n_ready(self) -> int:
        """How many tasks are ready: at most, since a task cancelled while
        ready leaves its entry behind until it comes up."""
        return len(self._ready) + len(self._ready_making)

    def requeue(self, ts: TaskState) -> None:
        """Give back a task taken by :meth:`pop_ready` but not started."""
        if ts.state == "processing":
            self._make_ready(ts)

    def pop_ready(self, prefer_freeing: bool = False) -> TaskState | None:
        """The next task to run, now ``processing``; None when nothing is ready.
        ``prefer_freeing``: a task that frees memory first, if any is ready."""
        freeing, making = self._ready, self._ready_making
        while freeing or making:
            if not making or (freeing and (prefer_freeing
                                           or freeing.first() < making.first())):
                ts = freeing.pop()[2]
            else:
                ts = making.pop()[2]
            if ts.state == "ready":  # skip entries of cancelled tasks
                ts.state = "processing"
                return ts
        return None

    def finished(self, key: Any, released: list | None = None) -> tuple[list, bool]:
        """``key`` computed.  Returns ``(released_keys, keep)``: keys whose data
        may be freed now, and whether to keep this result (False when the task
        was cancelled while running; the caller then frees it).  Pass
        ``released`` to collect the keys of many calls in one list."""
        if released is None:
            released = []
        ts = self.tasks.get(key)
        if ts is None or ts.state != "processing":
            return released, False
        ts.state = "memory"
        for dep in ts.dependents:
            dep.waiting_on -= 1
            if dep.waiting_on == 0 and dep.state == "waiting":
                self._make_ready(dep)
        for dep in ts.dependencies:
            dep.waiters -= 1
            if not dep.waiters and not dep.who_wants:
                self._maybe_release(dep, released)
        if ts.who_wants == 0 and ts.waiters == 0:
            self._release(ts, released)
        return released, True

    def erred(self, key: Any, exception: BaseException) -> tuple[list, list]:
        """``key`` raised.  Returns ``(erred_keys, released_keys)``: the task and
        every task that waited on it, and dependency data no longer needed;
        both empty when the task had retries left and is ready again."""
        ts = self.tasks.get(key)
        if ts is None or ts.state not in ("processing", "ready", "waiting"):
            return [], []
        if ts.retries > 0 and ts.state == "processing":
            ts.retries -= 1
            self._make_ready(ts)
            return [], []
        return self._err_tree(ts, exception)

    def _err_tree(self, root: TaskState, exception: BaseException) -> tuple[list, list]:
        erred: list[TaskState] = []
        released: list = []
        stack = [root]
        while stack:
            ts = stack.pop()
            # skip tasks erred already, and ones cancelled during this walk
            # (their dependencies were let go of then)
            if ts.state not in ("waiting", "ready", "processing"):
                continue
            ts.state = "erred"
            ts.exception = exception
            erred.append(ts)
            for dep in ts.dependencies:
                # may forget an erred task met earlier in this walk: fine, it is
                # still reported below
                dep.waiters -= 1
                self._maybe_release(dep, released)
            stack.extend(d for d in ts.dependents if d.state in ("waiting", "ready"))
        for ts in erred:
            if ts.who_wants == 0 and ts.state == "erred":
                self._forget(ts)
        return [ts.key for ts in erred], released

    def worker_lost(self, keys: Iterable, reason: str = "",
                    released: list | None = None) -> tuple[list, list]:
        """These tasks were processing on a worker that died.  Returns
        ``(rescheduled_keys, killed_keys)``; killed ones are now erred.

        Killing a task lets go of its inputs: keys whose data may now be freed
        are appended to ``released`` (pass a list, then free them).
        """
        rescheduled, killed = [], []
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or ts.state != "processing":
                continue
            ts.deaths += 1
            if ts.deaths >= self.max_worker_deaths:
                erred, freed = self._err_tree(ts, KilledWorker(key, ts.deaths, reason))
                killed.extend(erred)
                if released is not None:
                    released.extend(freed)
            else:
                self._make_ready(ts)
                rescheduled.append(key)
        return rescheduled, killed

    # -- releasing -----------------------------------------------------------

    def unwant(self, keys: Iterable) -> list:
        """A client dropped its reference to ``keys``.  Returns released keys.

        Unfinished tasks that nobody needs any more are cancelled (forgotten);
        one already running is released as soon as it finishes, unless a new
        graph needs it by then (``finished`` checks the counts again).
        """
        released: list = []
        tasks = self.tasks
        get = tasks.get
        for key in keys:
            ts = get(key)
            if ts is None:
                continue
            wants = ts.who_wants = max(0, ts.who_wants - 1)
            if wants or ts.waiters:
                continue
            if ts.state == "memory":
                # The common end of a run: _release and _forget inline, once per key.
                released.append(key)
                ts.state = "released"
                del tasks[key]
            else:
                self._maybe_release(ts, released)
        return released

    def _maybe_release(self, ts: TaskState, released: list) -> None:
        if ts.who_wants or ts.waiters:
            return
        if ts.state == "memory":
            self._release(ts, released)
        elif ts.state in ("waiting", "ready"):
            self._cancel(ts, released)
        elif ts.state == "erred":
            self._forget(ts)

    def _release(self, ts: TaskState, released: list) -> None:
        released.append(ts.key)
        self._forget(ts)

    def _cancel(self, ts: TaskState, released: list) -> None:
        dependencies = ts.dependencies
        self._forget(ts)
        for dep in dependencies:
            dep.waiters -= 1
            self._maybe_release(dep, released)

    def _forget(self, ts: TaskState) -> None:
        # Links from other tasks stay: every walk over them checks ``state``,
        # and unlinking would cost O(dependents) per task.  This task's own
        # links stay too: :meth:`retry` rebuilds released inputs from them.
        ts.state = "released"
        if self.tasks.get(ts.key) is ts:  # not a newer task under the same key
            del self.tasks[ts.key]

    # -- queries -------------------------------------------------------------

    def state_of(self, key: Any) -> str:
        ts = self.tasks.get(key)
        return ts.state if ts is not None else "released"

    def exception_of(self, key: Any) -> BaseException | None:
        ts = self.tasks.get(key)
        return ts.exception if ts is not None else None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for ts in self.tasks.values():
            out[ts.state] = out.get(ts.state, 0) + 1
        return out
