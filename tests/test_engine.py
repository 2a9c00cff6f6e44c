"""The engine loop with recording fake workers: dispatch policy, no processes."""

from __future__ import annotations

import threading

from shmdask.scheduler.engine import Engine
from shmdask.scheduler.interfaces import DataStore, TaskResult, WorkerHandle


class SizedStore(DataStore):
    """Values are ``(payload, nbytes)`` pairs, so tests choose input sizes."""

    def to_user(self, value):
        return value[0]

    def from_user(self, obj):
        return obj

    def nbytes(self, value):
        return value[1]


class RecordingWorker(WorkerHandle):
    def __init__(self, engine, worker_id, kind):
        self.id, self.kind, self.nthreads = worker_id, kind, 1
        self.engine = engine
        self.got = []

    def run(self, tasks):
        for spec in tasks:
            self.got.append(spec.key)
        results = [TaskResult(spec.key, (spec.key, 10), {"start": 0.0, "stop": 0.0})
                   for spec in tasks]
        self.engine.post(("done", self.id, results))


def make_engine():
    engine = Engine(SizedStore())
    local = RecordingWorker(engine, "local", "local")
    remote = RecordingWorker(engine, "remote", "remote")
    for w in (remote, local):
        engine.workers[w.id] = w
        engine.in_flight[w.id] = set()
    return engine, local, remote


def _tasks_on_inputs(input_size: int, n: int = 40):
    engine, local, remote = make_engine()
    engine.scatter({"big": ("x", input_size)})
    dsk = {f"t-{i}": (len, "big") for i in range(n)}
    deps = {k: {"big"} for k in dsk}
    done = set()
    engine.submit(dsk, deps, list(dsk), {k: i for i, k in enumerate(dsk)},
                  lambda k, s, e: done.add(k))
    engine.run_until(lambda: len(done) == n)
    return engine, local, remote


def test_remote_workers_get_no_tasks_with_large_inputs():
    engine, local, remote = _tasks_on_inputs(Engine.remote_input_limit + 1)
    assert len(local.got) == 40
    assert remote.got == []


def test_remote_workers_share_tasks_with_small_inputs():
    engine, local, remote = _tasks_on_inputs(100)
    assert remote.got and local.got
    assert len(local.got) + len(remote.got) == 40


def test_first_tasks_spread_one_per_worker():
    engine, local, remote = make_engine()
    dsk = {"a": (int,), "b": (int,)}
    done = set()
    engine.submit(dsk, {"a": set(), "b": set()}, ["a", "b"], {"a": 0, "b": 1},
                  lambda k, s, e: done.add(k))
    engine._step(block=True, timeout=1)  # handles the graph and dispatches once
    assert len(local.got) == 1 and len(remote.got) == 1


class AnsweringWorker(WorkerHandle):
    """Keeps the tasks it is given until the test answers them."""

    kind = "local"

    def __init__(self, engine, worker_id):
        self.id, self.nthreads, self.engine = worker_id, 1, engine
        self.held = []

    def run(self, tasks):
        self.held.extend(spec.key for spec in tasks)

    def answer(self, key):
        self.held.remove(key)
        self.engine.post(("done", self.id, [TaskResult(key, (key, 1), {"start": 0.0,
                                                                       "stop": 0.0})]))


def _answering_engine(n_tasks: int):
    engine = Engine(SizedStore())
    engine.target_batch = 1e-9  # one task per thread
    worker = AnsweringWorker(engine, "w")
    engine.add_worker(worker)
    dsk = {f"t-{i}": (len, "abc") for i in range(n_tasks)}
    done = set()
    engine.submit(dsk, {k: set() for k in dsk}, list(dsk), {k: i for i, k in enumerate(dsk)},
                  lambda k, s, e: done.add(k))
    engine.run_until(lambda: worker.held)
    return engine, worker, done


def test_a_seceded_task_frees_its_thread():
    engine, worker, done = _answering_engine(4)
    assert worker.held == ["t-0", "t-1"]  # one thread: one task running, one queued
    engine.post(("secede", "w", "t-0"))
    engine.run_until(lambda: len(worker.held) == 3)
    assert worker.held == ["t-0", "t-1", "t-2"] and engine.busy("w") == 2
    engine.post(("rejoin", "w", "t-0"))  # back in the pool: three tasks on one thread
    engine.run_until(lambda: engine.busy("w") == 3)
    worker.answer("t-0")
    worker.answer("t-1")
    engine.run_until(lambda: worker.held == ["t-2", "t-3"])
    assert engine.seceded == {} and done == {"t-0", "t-1"}


def _next_task_after_a_reduction_becomes_ready(above_target: bool) -> str:
    engine = Engine(SizedStore())
    engine.target_batch = 1e-9  # one task per thread, one queued
    worker = AnsweringWorker(engine, "w")
    worker.above_target = above_target
    engine.add_worker(worker)
    dsk = {"x": (len, "ab"), "y": (len, "abc"), "total": (max, "x", "y")}
    engine.submit(dsk, {"x": set(), "y": set(), "total": {"x", "y"}}, ["total"],
                  {"x": 0, "y": 1, "total": 2}, lambda k, s, e: None)
    engine.run_until(lambda: worker.held == ["x", "y"])
    roots = {f"r{i}": (len, "a") for i in range(3)}
    engine.submit(roots, {k: set() for k in roots}, list(roots), {k: 0 for k in roots},
                  lambda k, s, e: None, annotations={"priority": 5})
    worker.answer("x")
    engine.run_until(lambda: worker.held == ["y", "r0"])
    worker.answer("y")  # now the sum of x and y is ready, beside r1 and r2
    engine.run_until(lambda: len(worker.held) == 2)
    return worker.held[1]


def test_a_worker_above_its_memory_target_gets_tasks_that_free_memory_first():
    assert _next_task_after_a_reduction_becomes_ready(above_target=False) == "r1"
    assert _next_task_after_a_reduction_becomes_ready(above_target=True) == "total"


def test_a_retiring_worker_finishes_its_tasks_then_goes():
    engine, worker, done = _answering_engine(3)
    gone = []
    engine.retire_worker("w", gone.append)
    engine.run_until(lambda: "w" not in engine.workers)
    assert gone == [] and worker.held == ["t-0", "t-1"]  # still holding its tasks
    worker.answer("t-0")
    engine.run_until(lambda: "t-0" in done)
    assert gone == [] and worker.held == ["t-1"]  # room again, but no new task
    worker.answer("t-1")
    engine.run_until(lambda: gone)
    assert gone == ["w"] and done == {"t-0", "t-1"}
    assert worker.held == []  # t-2 was never sent to it
    idle = AnsweringWorker(engine, "idle")
    engine.add_worker(idle)
    engine.run_until(lambda: idle.held)  # t-2 goes to the next worker
    engine.retire_worker("other", gone.append)  # unknown and idle: at once
    engine.run_until(lambda: len(gone) == 2)


class HoldingWorker(WorkerHandle):
    """Keeps what it is sent (answers only when told), so in-flight counts stay put."""

    def __init__(self, worker_id, nthreads=1):
        self.id, self.kind, self.nthreads = worker_id, "local", nthreads
        self.messages = []

    def run(self, tasks):
        self.messages.append([spec.key for spec in tasks])


def _holding_engine(n_workers=2, mean_duration=None):
    engine = Engine(SizedStore())
    workers = [HoldingWorker(f"w{i}") for i in range(n_workers)]
    for w in workers:
        engine.workers[w.id] = w
        engine.in_flight[w.id] = set()
    if mean_duration is not None:
        engine._mean_duration, engine._measured = mean_duration, True
    return engine, workers


def _submit(engine, n):
    dsk = {f"t-{i}": (int,) for i in range(n)}
    engine.submit(dsk, {k: set() for k in dsk}, list(dsk), {k: i for i, k in enumerate(dsk)})
    engine._step(block=True, timeout=1)


def test_short_tasks_go_in_batches_with_a_second_batch_queued():
    engine, (a, b) = _holding_engine(mean_duration=Engine.target_batch / 10)
    _submit(engine, 1000)
    # each worker: one batch for its thread and one queued behind it, in one
    # message -- every worker got work before any got a queued batch
    assert a.messages == [[f"t-{i}" for i in [*range(10), *range(20, 30)]]]
    assert b.messages == [[f"t-{i}" for i in [*range(10, 20), *range(30, 40)]]]
    assert engine.batch_size(a) == 20 and engine.batch_size(a, queued=False) == 10


def test_a_batch_holds_at_least_target_batch_of_work():
    # tasks of 0.6 target_batch go two to a batch, not one: the worker reports
    # a batch's results (every FLUSH_INTERVAL of work) while the queued one runs
    engine, (a, b) = _holding_engine(mean_duration=Engine.target_batch * 0.6)
    assert engine.batch_size(a, queued=False) == 2 and engine.batch_size(a) == 4
    engine._mean_duration = Engine.target_batch  # a task is a batch
    assert engine.batch_size(a, queued=False) == 1 and engine.batch_size(a) == 2


def test_tiny_tasks_are_capped_per_message_by_the_engine_or_by_the_worker():
    engine, (a, b) = _holding_engine(mean_duration=1e-7)  # a million a batch, uncapped
    b.max_batch = Engine.max_batch * 4  # a transport whose messages cost more
    _submit(engine, 4000)
    # a batch and the queued one: a full batch each, so a message each
    assert [len(m) for m in a.messages] == [Engine.max_batch] * 2
    assert [len(m) for m in b.messages] == [Engine.max_batch * 4] * 2


def test_a_small_graph_of_tiny_tasks_is_shared_between_the_workers():
    engine, (a, b) = _holding_engine(mean_duration=1e-7)
    a.max_batch = b.max_batch = 512  # room for the whole graph in one message
    _submit(engine, 300)
    assert [len(m) for m in a.messages] == [150] and [len(m) for m in b.messages] == [150]


def test_a_worker_is_topped_up_only_when_a_whole_batch_has_room():
    engine, (a, b) = _holding_engine(mean_duration=Engine.target_batch / 10)
    _submit(engine, 1000)
    sent = a.messages[0]
    results = [TaskResult(k, (k, 1), {"start": 0.0, "stop": Engine.target_batch / 10})
               for k in sent]
    engine.post(("done", "w0", results[:5]))  # half a batch back: no new message yet
    engine._step(block=True, timeout=1)
    assert len(a.messages) == 1
    engine.post(("done", "w0", results[5:10]))  # a whole batch of room: one message
    engine._step(block=True, timeout=1)
    assert len(a.messages) == 2 and len(a.messages[1]) == 10
    assert len(engine.in_flight["w0"]) == 20


def test_long_tasks_go_one_per_thread_plus_one_queued():
    engine, (a, b) = _holding_engine()  # nothing measured yet: assumed long
    _submit(engine, 10)
    assert a.messages == [["t-0", "t-2"]] and b.messages == [["t-1", "t-3"]]
    assert len(engine.in_flight["w0"]) == 2


def test_tasks_waiting_for_a_busy_resource_are_set_aside_until_it_is_free():
    engine, (a, b) = _holding_engine()
    a.resources, b.resources = {"GPU": 1}, {}
    dsk = {f"g-{i}": (int,) for i in range(50)}
    engine.submit(dsk, {k: set() for k in dsk}, list(dsk), {k: i for i, k in enumerate(dsk)},
                  annotations={"resources": {"GPU": 1}})
    engine._step(block=True, timeout=1)
    assert a.messages == [["g-0"]] and b.messages == []
    # the other 49 wait beside the queue, not in it: dispatches do not scan them
    assert len(engine.placement.no_slot) == 49 and not engine.state.has_ready()
    engine.post(("done", "w0", [TaskResult("g-0", ("g-0", 1), {"start": 0.0, "stop": 0.1})]))
    engine._step(block=True, timeout=1)
    assert a.messages == [["g-0"], ["g-1"]] and b.messages == []
    assert len(engine.placement.no_slot) == 48
    assert engine.placement.used == {"w0": {"GPU": 1}}


def test_a_resource_task_goes_to_the_worker_with_a_free_slot():
    engine, (a, b) = _holding_engine()
    a.resources, b.resources = {"GPU": 1}, {"GPU": 1}
    dsk = {f"g-{i}": (int,) for i in range(3)}
    engine.submit(dsk, {k: set() for k in dsk}, list(dsk), {k: i for i, k in enumerate(dsk)},
                  annotations={"resources": {"GPU": 1}})
    engine._step(block=True, timeout=1)
    assert sorted(a.messages + b.messages) == [["g-0"], ["g-1"]]
    assert [ts.key for ts in engine.placement.no_slot] == ["g-2"]
    engine.post(("worker-lost", "w1", "test"))  # its slot is gone; g-1 runs again
    engine._step(block=True, timeout=1)
    assert sorted(ts.key for ts in engine.placement.no_slot) == ["g-1", "g-2"]


class BatchListener:
    """Takes the engine's batch form; plain calls are recorded apart."""

    def __init__(self, fail_many=False):
        self.batches, self.single, self.fail_many = [], [], fail_many

    def many(self, keys, status):
        if self.fail_many:
            raise RuntimeError("listener bug")
        self.batches.append((list(keys), status))

    def __call__(self, key, status, exc):
        self.single.append((key, status))


def test_listeners_with_many_hear_a_batch_of_results_in_one_call():
    engine, local, remote = make_engine()
    del engine.workers["remote"]
    batch, plain, broken = BatchListener(), [], BatchListener(fail_many=True)
    dsk = {f"t-{i}": (len, "abc") for i in range(6)}
    engine.submit(dsk, {k: set() for k in dsk}, list(dsk), {k: i for i, k in enumerate(dsk)},
                  batch)
    engine.submit({}, {}, ["t-0", "t-1"], None, lambda k, s, e: plain.append((k, s)))
    engine.submit({}, {}, ["t-2"], None, broken)  # raises: logged, others still hear
    engine.run_until(lambda: sum(len(k) for k, _ in batch.batches) + len(batch.single) == 6)
    # the worker answers each batch in one message: fewer calls than keys, keys in order
    assert len(batch.batches) < 6 and not batch.single
    assert [k for keys, _ in batch.batches for k in keys] == list(dsk)
    assert {s for _, s in batch.batches} == {"memory"}
    assert plain == [("t-0", "memory"), ("t-1", "memory")]
    assert not broken.single and not engine.listeners


def test_an_event_that_raises_on_the_loop_thread_still_lets_ready_tasks_run(caplog):
    engine, local, remote = make_engine()
    handled = engine._on_update_graph

    def handle_then_fail(*args):  # a bug after the graph's tasks became ready
        handled(*args)
        raise RuntimeError("a bug in an event handler")

    engine._on_update_graph = handle_then_fail
    engine.start()
    try:
        done = threading.Event()
        engine.submit({"a": (int,)}, {"a": set()}, ["a"], None, lambda k, s, e: done.set())
        assert done.wait(10), "the task made ready by the failed step never ran"
    finally:
        engine.close()
    assert "an event failed" in caplog.text


def test_a_task_stream_callback_that_raises_does_not_stop_the_run(caplog):
    engine, local, remote = make_engine()
    engine.record_callbacks.append(lambda records: records[0]["no such field"])
    heard = []
    engine.record_callbacks.append(lambda records: heard.extend(records))
    dsk = {f"t-{i}": (len, "abc") for i in range(300)}
    done = set()
    engine.submit(dsk, {k: set() for k in dsk}, list(dsk), None,
                  lambda k, s, e: done.add(k))
    engine.run_until(lambda: len(done) == 300)
    assert len(heard) == 300  # the callbacks after the bad one still heard every batch
    assert "a task-stream callback raised" in caplog.text
