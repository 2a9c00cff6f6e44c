"""compute / persist / get on the in-process backends (sync and threads).

Covers results, sharing, errors, Ctrl-C and thread hygiene, plus the engine
loop driven by hand with a fake worker.
"""

from __future__ import annotations

import _thread
import re
import signal
import sys
import threading
import time
import traceback

import pytest

import shmdask
from shmdask import config, delayed
from shmdask.scheduler.engine import Engine
from shmdask.scheduler.interfaces import TaskResult, WorkerHandle
from shmdask.scheduler.state import KilledWorker, TaskExit

SCHEDULERS = ["sync", "threads"]


def inc(x):
    return x + 1


def add(x, y):
    return x + y


class Counter:
    """Thread-safe call counter."""

    def __init__(self):
        self.n = 0
        self._lock = threading.Lock()

    def __call__(self, value):
        with self._lock:
            self.n += 1
        return value


PURE_CALLS = Counter()


def counted_identity(x):
    return PURE_CALLS(x)


def shmdask_threads(ignore=()):
    """Threads of the local backends (a cluster another test module left for
    ``scheduler="processes"`` lives until exit and has its own names)."""
    return [t for t in threading.enumerate()
            if t.name.startswith(("shmdask-thread-", "shmdask-progress", "shmdask-sync"))
            and t not in ignore]


def wait_for_no_shmdask_threads(ignore=(), timeout=2.0):
    """shmdask threads still alive after ``timeout``, other than ``ignore``
    (threads that existed before the test, e.g. of a cluster other tests left)."""
    deadline = time.monotonic() + timeout
    while shmdask_threads(ignore) and time.monotonic() < deadline:
        time.sleep(0.02)
    return shmdask_threads(ignore)


# -- compute --------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_compute_returns_a_tuple_and_passes_other_values_through(scheduler):
    a = delayed(inc)(1)
    b = delayed(add)(a, 10)
    out = shmdask.compute(a, 5, b, "text", None, scheduler=scheduler)
    assert out == (2, 5, 12, "text", None)
    assert type(out) is tuple
    assert shmdask.compute(scheduler=scheduler) == ()
    assert shmdask.compute(1, [2], scheduler=scheduler) == (1, [2])


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_compute_containers_of_collections(scheduler):
    d1, d2 = delayed(inc)(1), delayed(inc)(2)
    assert shmdask.compute([d1, d2], scheduler=scheduler) == ([2, 3],)
    assert shmdask.compute({"a": d1, "b": [d2, 7]}, (d1,), scheduler=scheduler) == (
        {"a": 2, "b": [3, 7]},
        (2,),
    )
    assert shmdask.compute([[d1], 5], d2, scheduler=scheduler) == ([[2], 5], 3)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_same_collection_twice_and_traverse_false(scheduler):
    count = Counter()
    d = delayed(count)(5)
    assert shmdask.compute(d, d, [d, d], {"k": d}, scheduler=scheduler) == (
        5, 5, [5, 5], {"k": 5})
    assert count.n == 1
    (lst,) = shmdask.compute([d], traverse=False, scheduler=scheduler)
    assert lst == [d]  # containers are not looked into
    assert count.n == 1


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_shared_subgraphs_run_once(scheduler):
    count = Counter()
    shared = delayed(count)(10)
    left = delayed(inc)(shared)
    right = delayed(add)(shared, 5)
    both = delayed(add)(left, right)
    assert shmdask.compute(left, right, both, scheduler=scheduler) == (11, 15, 26)
    assert count.n == 1
    # identical pure calls in separate collections are one task
    before = PURE_CALLS.n
    x1 = delayed(counted_identity, pure=True)(3)
    x2 = delayed(counted_identity, pure=True)(3)
    assert x1.key == x2.key
    assert shmdask.compute(x1 + 1, x2 + 2, scheduler=scheduler) == (4, 5)
    assert PURE_CALLS.n == before + 1


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_wide_tree_reduction(scheduler):
    leaves = [delayed(inc)(i) for i in range(64)]
    while len(leaves) > 1:
        leaves = [delayed(add)(leaves[i], leaves[i + 1]) for i in range(0, len(leaves), 2)]
    assert leaves[0].compute(scheduler=scheduler) == sum(range(1, 65))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_persist_then_compute(scheduler):
    count = Counter()
    d = delayed(count)(7)
    (p,) = shmdask.persist(d, scheduler=scheduler)
    assert count.n == 1
    assert shmdask.compute(p, p + 1, scheduler=scheduler) == (7, 8)
    assert count.n == 1
    assert shmdask.persist(3, scheduler=scheduler) == (3,)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_get_with_nested_key_lists(scheduler):
    dsk = {("x", 0): 1, ("x", 1): (inc, ("x", 0)), "y": (add, ("x", 0), ("x", 1))}
    assert shmdask.get(dsk, "y", scheduler=scheduler) == 3
    out = shmdask.get(dsk, [[("x", 0), ("x", 1)], ["y"], "y"], scheduler=scheduler)
    assert out == ((1, 2), (3,), 3)  # nested tuples, like dask.get


def test_get_rejects_non_mappings():
    with pytest.raises(TypeError, match="mapping"):
        shmdask.get([("x", 1)], "x")


def test_ten_thousand_noop_tasks_on_threads():
    tasks = [delayed(inc, pure=True)(i) for i in range(10_000)]
    total = delayed(sum)(tasks)
    assert total.compute(scheduler="threads") == sum(range(1, 10_001))
    dsk = {("n", i): (inc, i) for i in range(10_000)}
    out = shmdask.get(dsk, [("n", i) for i in range(10_000)], scheduler="threads")
    assert out == tuple(range(1, 10_001))


# -- errors ----------------------------------------------------------------------------


class CustomError(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code


def explode(x):
    raise CustomError(x, "detail of the failure")


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_task_error_reaches_the_caller_with_key_and_traceback(scheduler):
    bad = delayed(explode)(41, dask_key_name="exploding-task")
    with pytest.raises(CustomError) as info:
        shmdask.compute(bad, scheduler=scheduler)
    exc = info.value
    assert exc.code == 41 and exc.args == (41, "detail of the failure")
    assert any("exploding-task" in note for note in exc.__notes__)
    frames = [f.name for f in traceback.extract_tb(exc.__traceback__)]
    assert "explode" in frames


def exits(code):
    sys.exit(code)


def interrupts(_):
    raise KeyboardInterrupt


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("task, raised", [(exits, "SystemExit(3)"),
                                          (interrupts, "KeyboardInterrupt()")])
def test_a_task_that_exits_fails_like_any_other_task(scheduler, task, raised):
    """sys.exit() or KeyboardInterrupt inside a task fails that task, naming its
    key; it never ends or interrupts the caller."""
    bad = delayed(task)(3, dask_key_name="leaving-task")
    with pytest.raises(TaskExit, match=rf"task 'leaving-task' raised {re.escape(raised)}"):
        shmdask.compute(bad, scheduler=scheduler)
    assert shmdask.compute(delayed(sum)([1, 2]), scheduler=scheduler) == (3,)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_error_in_a_dependency(scheduler):
    bad = delayed(explode)(1, dask_key_name="bad-dep")
    fan_in = delayed(add)(bad, delayed(inc)(1))
    with pytest.raises(CustomError) as info:
        fan_in.compute(scheduler=scheduler)
    assert any("bad-dep" in note for note in info.value.__notes__)
    # and without graph optimisation (the dependency stays its own task)
    chain = delayed(inc)(delayed(explode)(2, dask_key_name="bad-link"))
    with pytest.raises(CustomError) as info:
        shmdask.compute(chain, scheduler=scheduler, optimize_graph=False)
    assert any("bad-link" in note for note in info.value.__notes__)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_scheduler_is_usable_after_an_error(scheduler):
    with pytest.raises(CustomError):
        delayed(explode)(0).compute(scheduler=scheduler)
    assert delayed(inc)(1).compute(scheduler=scheduler) == 2


class StartLog:
    def __init__(self):
        self.started = []
        self._lock = threading.Lock()

    def sleeper(self, i):
        with self._lock:
            self.started.append(i)
        time.sleep(0.2)
        return i


def fail_first():
    raise RuntimeError("early failure")


def _fail_early_graph(log, n=20):
    # key names make the failing task first in priority order
    tasks = [delayed(fail_first)(dask_key_name="a-fails")]
    tasks += [delayed(log.sleeper)(i, dask_key_name=f"b-sleeps-{i:02d}") for i in range(n)]
    return tasks


def test_no_further_tasks_start_after_an_error_threads():
    before = set(threading.enumerate())
    log = StartLog()
    with config.set(num_workers=2), pytest.raises(RuntimeError, match="early failure"):
        shmdask.compute(*_fail_early_graph(log), scheduler="threads")
    time.sleep(0.5)  # anything still queued would start by now
    # at most what the two threads had begun before hearing of the failure
    assert len(log.started) <= 2, log.started
    assert wait_for_no_shmdask_threads(before) == []


def test_no_further_tasks_start_after_an_error_sync():
    log = StartLog()
    with pytest.raises(RuntimeError, match="early failure"):
        shmdask.compute(*_fail_early_graph(log, n=6), scheduler="sync")
    assert log.started == []


# -- Ctrl-C ------------------------------------------------------------------------------


def busy(seconds):
    """Pure-Python busy loop: holds the GIL between bytecodes, no C sleep."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def _interrupt_main_after(delay, how="signal"):
    if how == "signal":  # a real SIGINT, as a terminal's Ctrl-C sends
        main = threading.main_thread().ident
        timer = threading.Timer(delay, signal.pthread_kill, (main, signal.SIGINT))
    else:
        timer = threading.Timer(delay, _thread.interrupt_main)
    timer.daemon = True
    timer.start()
    return timer


def _compute_interrupted(scheduler, delay=0.3, how="signal"):
    tasks = [delayed(busy)(10.0, dask_key_name=f"busy-{i}") for i in range(6)]
    timer = _interrupt_main_after(delay, how)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            shmdask.compute(*tasks, scheduler=scheduler)
    finally:
        timer.cancel()
    return time.monotonic() - started - delay


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="SIGINT is delivered to the main thread")
@pytest.mark.parametrize("how", ["signal", "interrupt_main"])
def test_ctrl_c_on_threads_returns_promptly_and_stops_workers(how):
    before = set(threading.enumerate())
    with config.set(num_workers=2):
        late = _compute_interrupted("threads", how=how)
    # tasks would run 10 s each; control must come back within about a second
    assert late < 3.0, late  # waiting for the tasks would take 10 s
    assert wait_for_no_shmdask_threads(before, timeout=2.0) == []
    # and the next compute works
    assert delayed(inc)(1).compute(scheduler="threads") == 2


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="SIGINT is delivered to the main thread")
def test_ctrl_c_on_threads_with_tasks_blocked_in_c_returns_promptly():
    tasks = [delayed(time.sleep)(2.5, dask_key_name=f"sleep-{i}") for i in range(6)]
    timer = _interrupt_main_after(0.3)
    started = time.monotonic()
    try:
        with config.set(num_workers=3), pytest.raises(KeyboardInterrupt):
            shmdask.compute(*tasks, scheduler="threads")
    finally:
        timer.cancel()
    assert time.monotonic() - started - 0.3 < 2.0  # a thread per second would take 3 s


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="SIGINT is delivered to the main thread")
def test_ctrl_c_on_sync_returns_promptly():
    # busy tasks of 0.7 s: the current behaviour costs about two seconds
    tasks = [delayed(busy)(0.7, dask_key_name=f"busy-{i}") for i in range(3)]
    timer = _interrupt_main_after(0.3)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            shmdask.compute(*tasks, scheduler="sync")
    finally:
        timer.cancel()
    assert time.monotonic() - started - 0.3 < 1.0  # finishing the batch would take 2 s


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="SIGINT is delivered to the main thread")
def test_ctrl_c_on_sync_interrupts_the_running_task():
    # whatever else happens, the interrupt surfaces as KeyboardInterrupt
    tasks = [delayed(busy)(0.6, dask_key_name="busy-only")]
    timer = _interrupt_main_after(0.2)
    try:
        with pytest.raises(KeyboardInterrupt):
            shmdask.compute(*tasks, scheduler="sync")
    finally:
        timer.cancel()
    assert delayed(inc)(1).compute(scheduler="sync") == 2


# -- batching across threads ----------------------------------------------------------


def test_ready_tasks_spread_over_idle_threads():
    barrier = threading.Barrier(2, timeout=2)

    def meet(i):
        barrier.wait()  # completes only if both tasks run at the same time
        return i

    with config.set(num_workers=2):
        assert shmdask.compute(delayed(meet)(0), delayed(meet)(1), scheduler="threads") == (0, 1)


# -- the engine driven by hand ------------------------------------------------------------


class FakeWorker(WorkerHandle):
    """Records batches; the test plays the worker's part by posting events."""

    def __init__(self, worker_id):
        self.id = worker_id
        self.batches = []

    def run(self, tasks):
        self.batches.append(tasks)


def _record(key):
    now = time.time()
    return {"key": key, "group": "g", "worker": "w", "lane": "w/0", "start": now,
            "stop": now, "nbytes": 0, "where": "memory", "kind": "compute", "remote": False}


def _drive(engine, until):
    engine.run_until(until, poll=0.01)


def test_engine_runs_a_graph_with_a_fake_worker():
    engine = Engine()
    heard = []
    engine.submit({"a": (inc, 1), "b": (inc, "a")}, {"a": set(), "b": {"a"}}, ["b"], None,
                  lambda key, status, exc: heard.append((key, status)))
    worker = FakeWorker("w0")
    engine.add_worker(worker)
    _drive(engine, lambda: len(worker.batches) == 1)
    (spec,) = worker.batches[0]
    assert spec.key == "a" and spec.deps == {}
    engine.post(("done", "w0", [TaskResult("a", 2, _record("a"))]))
    _drive(engine, lambda: len(worker.batches) == 2)
    (spec,) = worker.batches[1]
    assert spec.key == "b" and spec.deps == {"a": 2}
    engine.post(("done", "w0", [TaskResult("b", 3, _record("b"))]))
    _drive(engine, lambda: bool(heard))
    assert heard == [("b", "memory")]
    assert engine.data == {"b": 3}  # "a" was freed once "b" had it
    assert len(engine.records) == 2
    engine.close()


def test_engine_worker_lost_reschedules_then_kills():
    engine = Engine()
    heard = []
    engine.submit({"a": (inc, 1)}, {"a": set()}, ["a"], None,
                  lambda key, status, exc: heard.append((key, status, exc)))
    for death in range(3):
        worker = FakeWorker(f"w{death}")
        engine.add_worker(worker)
        _drive(engine, lambda w=worker: len(w.batches) == 1)
        engine.post(("worker-lost", worker.id, "killed by test"))
    _drive(engine, lambda: bool(heard))
    key, status, exc = heard[0]
    assert (key, status) == ("a", "erred") and isinstance(exc, KilledWorker)
    engine.close()


def test_engine_frees_dependencies_of_a_killed_task():
    engine = Engine()
    heard = []
    engine.submit({"a": (inc, 1), "b": (inc, "a")}, {"a": set(), "b": {"a"}}, ["b"], None,
                  lambda key, status, exc: heard.append((key, status)))
    first = FakeWorker("first")
    engine.add_worker(first)
    _drive(engine, lambda: len(first.batches) == 1)
    engine.post(("done", "first", [TaskResult("a", 2, _record("a"))]))
    _drive(engine, lambda: len(first.batches) == 2)
    engine.post(("worker-lost", "first", "killed by test"))
    for death in range(1, 3):
        worker = FakeWorker(f"w{death}")
        engine.add_worker(worker)
        _drive(engine, lambda w=worker: len(w.batches) == 1)
        engine.post(("worker-lost", worker.id, "killed by test"))
    _drive(engine, lambda: bool(heard))
    assert heard == [("b", "erred")]
    assert "a" not in engine.data
    engine.close()
