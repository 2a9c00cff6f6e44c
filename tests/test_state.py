"""SchedulerState alone: no threads, no engine, events fed by hand."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shmdask.graph import cull, dependencies_of, order
from shmdask.scheduler.state import KilledWorker, SchedulerState


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def submit(state, dsk, wanted, priorities=True):
    # dependencies may be keys already known to the state, not only keys of dsk
    known = {k: None for k in state.tasks}
    deps = {k: v for k, v in dependencies_of({**known, **dsk}).items() if k in dsk}
    prio = order(dsk, deps) if priorities else None
    return state.update_graph(dsk, deps, wanted, prio)


def run_one(state, expect=None):
    """Start the next ready task and finish it; returns (key, released)."""
    ts = state.pop_ready()
    assert ts is not None, "nothing ready"
    if expect is not None:
        assert ts.key == expect
    released, keep = state.finished(ts.key)
    assert keep
    return ts.key, released


def run_all(state):
    order_run = []
    while state.has_ready():
        order_run.append(run_one(state)[0])
    return order_run


CHAIN = {"a": (inc, 1), "b": (inc, "a"), "c": (inc, "b")}


def test_lifecycle_of_a_chain():
    s = SchedulerState()
    assert submit(s, CHAIN, ["c"]) == []
    assert [s.state_of(k) for k in "abc"] == ["ready", "waiting", "waiting"]
    ts = s.pop_ready()
    assert ts.key == "a" and s.state_of("a") == "processing"
    assert s.pop_ready() is None  # b waits for a
    released, keep = s.finished("a")
    assert keep and released == []
    assert s.state_of("a") == "memory" and s.state_of("b") == "ready"
    assert s.pop_ready().key == "b"
    released, _ = s.finished("b")
    assert released == ["a"]  # nobody needs a any more
    assert s.state_of("a") == "released" and "a" not in s.tasks
    assert s.pop_ready().key == "c"
    released, _ = s.finished("c")
    assert released == ["b"]
    assert s.state_of("c") == "memory"  # requested: kept until unwanted
    assert s.counts() == {"memory": 1}
    assert s.unwant(["c"]) == ["c"]
    assert s.unwant(["c"]) == []  # unknown by now: ignored
    assert s.tasks == {}


def test_requested_intermediate_is_kept():
    s = SchedulerState()
    submit(s, CHAIN, ["b", "c"])
    run_all(s)
    assert s.state_of("b") == "memory" and s.state_of("c") == "memory"
    assert s.state_of("a") == "released"


def test_shared_dependency_released_after_last_dependent():
    dsk = {"x": (inc, 1), "y": (inc, "x"), "z": (inc, "x"), "w": (add, "y", "z")}
    s = SchedulerState()
    submit(s, dsk, ["w"])
    released_when = {}
    while s.has_ready():
        key, released = run_one(s)
        for r in released:
            released_when[r] = key
    assert released_when["x"] in ("y", "z")
    assert {released_when["y"], released_when["z"]} == {"w"}
    assert s.state_of("w") == "memory"


def test_ready_tasks_run_in_priority_order():
    chains = {}
    for name in "pq":
        chains[f"{name}0"] = (inc, 0)
        for i in range(1, 4):
            chains[f"{name}{i}"] = (inc, f"{name}{i - 1}")
    s = SchedulerState()
    submit(s, chains, ["p3", "q3"])
    ran = run_all(s)
    first = ran[0][0]
    # with one worker, the chain that started is finished before the other starts
    assert ran[:4] == [f"{first}{i}" for i in range(4)]


def test_explicit_priorities_choose_the_next_task():
    dsk = {"lo": (inc, 1), "hi": (inc, 2), "mid": (inc, 3)}
    s = SchedulerState()
    deps = dependencies_of(dsk)
    s.update_graph(dsk, deps, list(dsk), {"lo": 2, "hi": 0, "mid": 1})
    assert [s.pop_ready().key for _ in range(3)] == ["hi", "mid", "lo"]


def test_earlier_graphs_run_first():
    s = SchedulerState()
    s.update_graph({"first": (inc, 1)}, {"first": set()}, ["first"], {"first": 5})
    s.update_graph({"second": (inc, 1)}, {"second": set()}, ["second"], {"second": 0})
    assert s.pop_ready().key == "first"


def test_error_propagates_to_dependents():
    dsk = {"a": (inc, 1), "b": (inc, "a"), "c": (inc, "b"), "other": (inc, 5),
           "d": (add, "other", "b")}
    s = SchedulerState()
    submit(s, dsk, ["c", "d"])
    started = {s.pop_ready().key, s.pop_ready().key}
    assert started == {"a", "other"}
    s.finished("other")
    exc = ValueError("boom")
    erred, released = s.erred("a", exc)
    assert set(erred) == {"a", "b", "c", "d"}
    assert released == ["other"]  # its only dependent failed
    assert s.state_of("c") == "erred" and s.exception_of("c") is exc
    assert s.state_of("d") == "erred" and s.exception_of("d") is exc
    # unwanted erred tasks are forgotten; wanted ones stay until unwanted
    assert "a" not in s.tasks and "b" not in s.tasks
    assert not s.has_ready() or s.pop_ready() is None
    s.unwant(["c", "d"])
    assert s.tasks == {}


def test_error_in_wanted_leaf_keeps_exception():
    s = SchedulerState()
    submit(s, {"a": (inc, 1)}, ["a"])
    s.pop_ready()
    exc = KeyError("k")
    assert s.erred("a", exc) == (["a"], [])
    assert s.exception_of("a") is exc
    # a later graph that needs the erred key is erred at once
    done = submit(s, {"b": (inc, "a")}, ["b"])
    assert done == ["b"] and s.exception_of("b") is exc


def test_erred_key_resubmitted_is_retried_and_keeps_its_clients():
    s = SchedulerState()
    submit(s, {"a": (inc, 1)}, ["a"])
    s.pop_ready()
    s.erred("a", ValueError())
    submit(s, {"a": (inc, 1)}, ["a"])  # a second client retries it
    assert s.state_of("a") == "ready"
    run_one(s, "a")
    assert s.unwant(["a"]) == []  # the first client still holds it
    assert s.unwant(["a"]) == ["a"]


def test_error_walk_does_not_release_data_twice():
    # Erring t8 (a dependent of the failed t1) cancels t6, whose dependency t0
    # is let go of then; erring t6 afterwards must not let go of t0 again,
    # or t0 is freed while the wanted t5 still needs it.  Dict and list order
    # fix the walk order.
    dsk = {"t0": (inc, 0), "t1": (inc, 1), "t6": (add, "t0", "t1"), "t4": (inc, "t1"),
           "t5": (inc, "t0"), "t8": (sum, ["t4", "t5", "t6"])}
    deps = {"t0": [], "t1": [], "t6": ["t0", "t1"], "t4": ["t1"], "t5": ["t0"],
            "t8": ["t4", "t5", "t6"]}
    s = SchedulerState()
    s.update_graph(dsk, deps, ["t1", "t5", "t8"])
    assert {s.pop_ready().key, s.pop_ready().key} == {"t0", "t1"}
    s.finished("t0")
    erred, released = s.erred("t1", ValueError("t1"))
    assert set(erred) >= {"t1", "t4", "t8"}
    assert released == []  # t5 still needs t0
    assert s.state_of("t0") == "memory"
    assert run_one(s, "t5")[1] == ["t0"]


def test_independent_work_continues_after_an_error():
    s = SchedulerState()
    submit(s, {"bad": (inc, 1), "good": (inc, 2), "after": (inc, "good")}, ["bad", "after"])
    ts = s.pop_ready()
    if ts.key != "bad":
        s.finished(ts.key)
        ts = s.pop_ready()
    s.erred("bad", RuntimeError())
    run_all(s)
    assert s.state_of("after") == "memory"


def test_worker_lost_reschedules_then_kills():
    s = SchedulerState(max_worker_deaths=3)
    submit(s, {"a": (inc, 1), "b": (inc, "a")}, ["b"])
    for death in (1, 2):
        assert s.pop_ready().key == "a"
        assert s.worker_lost(["a"], "segfault") == (["a"], [])
        assert s.state_of("a") == "ready"
        assert s.tasks["a"].deaths == death
    assert s.pop_ready().key == "a"
    released = []
    rescheduled, killed = s.worker_lost(["a"], "segfault", released)
    assert rescheduled == [] and set(killed) == {"a", "b"} and released == []
    exc = s.exception_of("b")
    assert isinstance(exc, KilledWorker) and isinstance(exc, RuntimeError)
    assert "'a'" in str(exc) and "segfault" in str(exc)


def test_killed_task_releases_its_inputs():
    s = SchedulerState(max_worker_deaths=1)
    submit(s, {"a": (inc, 1), "b": (inc, "a")}, ["b"])
    run_one(s, "a")
    assert s.pop_ready().key == "b"
    released = []
    assert s.worker_lost(["b"], "oom", released) == ([], ["b"])
    assert released == ["a"]
    assert s.state_of("b") == "erred" and "a" not in s.tasks


def test_worker_lost_ignores_tasks_not_processing():
    s = SchedulerState()
    submit(s, CHAIN, ["c"])
    assert s.worker_lost(["a", "b", "nope"]) == ([], [])
    run_one(s, "a")
    assert s.worker_lost(["a"]) == ([], [])
    assert s.state_of("a") == "memory"


def test_finished_after_worker_lost_is_stale():
    s = SchedulerState()
    submit(s, {"a": (inc, 1)}, ["a"])
    s.pop_ready()
    s.worker_lost(["a"])
    assert s.finished("a") == ([], False)  # the answer of the dead worker
    run_one(s, "a")


def test_unwant_cancels_unfinished_work():
    s = SchedulerState()
    submit(s, CHAIN, ["c"])
    assert s.unwant(["c"]) == []
    assert s.tasks == {}
    assert s.pop_ready() is None


def test_unwant_while_processing_releases_on_finish():
    s = SchedulerState()
    submit(s, CHAIN, ["c"])
    run_one(s, "a")
    assert s.pop_ready().key == "b"
    assert s.unwant(["c"]) == []  # c cancelled; b is running
    assert "c" not in s.tasks
    released, keep = s.finished("b")
    assert set(released) == {"a", "b"}
    assert s.tasks == {}


def test_unwant_keeps_what_another_client_needs():
    s = SchedulerState()
    submit(s, CHAIN, ["c"])
    submit(s, {"d": (inc, "b")}, ["d"])
    s.unwant(["c"])
    assert "c" not in s.tasks
    assert set(run_all(s)) == {"a", "b", "d"}
    assert s.state_of("d") == "memory"


def test_shared_keys_across_two_graphs_run_once():
    s = SchedulerState()
    shared = {"s": (inc, 1)}
    submit(s, {**shared, "x": (inc, "s")}, ["x"])
    assert s.pop_ready().key == "s"  # running when the second graph arrives
    done = submit(s, {**shared, "y": (inc, "s")}, ["y"])
    assert done == []
    assert len([k for k in s.tasks if k == "s"]) == 1
    s.finished("s")
    ran = run_all(s)
    assert sorted(ran) == ["x", "y"]
    assert "s" not in s.tasks  # released after both dependents


def test_key_already_in_memory_is_not_recomputed():
    s = SchedulerState()
    submit(s, {"a": (inc, 1)}, ["a"])
    run_one(s, "a")
    done = submit(s, {"a": (inc, 1), "b": (inc, "a")}, ["a", "b"])
    assert done == ["a"]
    assert run_all(s) == ["b"]
    assert s.unwant(["a"]) == []  # still wanted once more
    assert s.unwant(["a"]) == ["a"]


def test_add_data_marks_scattered_keys_in_memory():
    s = SchedulerState()
    s.add_data(["x"])
    assert s.state_of("x") == "memory"
    submit(s, {"y": (inc, "x")}, ["y"])
    assert run_all(s) == ["y"]
    assert s.unwant(["x"]) == ["x"]


def test_unknown_dependency_is_an_error():
    s = SchedulerState()
    with pytest.raises(KeyError, match="'missing'"):
        s.update_graph({"a": (inc, "missing")}, {"a": {"missing"}}, ["a"])


def test_many_tasks_random_order_of_finishing():
    # a wide reduction whose tasks finish in an order other than started
    dsk = {f"x{i}": (inc, i) for i in range(20)}
    dsk["total"] = (sum, [f"x{i}" for i in range(20)])
    s = SchedulerState()
    submit(s, dsk, ["total"])
    running = []
    while s.has_ready():
        ts = s.pop_ready()
        if ts is None:
            break
        running.append(ts.key)
    assert len(running) == 20
    for key in reversed(running):
        s.finished(key)
    key, released = run_one(s, "total")
    assert sorted(released) == sorted(f"x{i}" for i in range(20))
    assert s.counts() == {"memory": 1}


# -- random simulations ------------------------------------------------------------------


@st.composite
def dags(draw, max_size=25):
    n = draw(st.integers(1, max_size))
    dsk, deps = {}, {}
    for i in range(n):
        ds = sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=3)))) if i else []
        key = f"t{i}"
        deps[key] = {f"t{d}" for d in ds}
        dsk[key] = (sum, [f"t{d}" for d in ds])
    return dsk, deps


class Simulation:
    """Plays engine and workers: holds data, runs tasks in a random order."""

    def __init__(self, state, data):
        self.state = state
        self.rng = data
        self.processing = []
        self.memory = set()
        self.started = []
        self.lose_workers = False
        self.killed = set()

    def step(self, fail=frozenset()):
        s = self.state
        can_start = s.has_ready()
        if can_start and (not self.processing or self.rng.draw(st.booleans())):
            ts = s.pop_ready()
            if ts is None:
                return bool(self.processing)
            for dep in ts.dependencies:  # inputs are there when a task starts
                assert dep.key in self.memory, (ts.key, dep.key)
            self.started.append(ts.key)
            self.processing.append(ts.key)
            return True
        if not self.processing:
            return False
        key = self.processing.pop(self.rng.draw(st.integers(0, len(self.processing) - 1)))
        if self.lose_workers and self.rng.draw(st.integers(0, 4)) == 0:
            released = []
            rescheduled, killed = s.worker_lost([key], "simulated", released)
            assert rescheduled == [key] or key in killed
            self.killed.update(killed)
            for r in released:
                assert r not in self.processing
                self.memory.discard(r)
            return True
        if key in fail:
            erred, released = s.erred(key, ValueError(key))
            assert key in erred
        else:
            released, keep = s.finished(key)
            if keep and key not in released:
                self.memory.add(key)
        for r in released:
            assert r not in self.processing
            self.memory.discard(r)
        return True

    def run(self, fail=frozenset()):
        for _ in range(10_000):
            if not self.step(fail):
                return
        raise AssertionError("simulation did not finish")


def _descendants(deps, roots):
    out = set(roots)
    changed = True
    while changed:
        changed = False
        for k, ds in deps.items():
            if k not in out and ds & out:
                out.add(k)
                changed = True
    return out


@settings(max_examples=80, deadline=None, derandomize=True)
@given(dags(), st.data())
def test_random_graphs_run_each_task_once_and_keep_only_wanted(graph, data):
    dsk, deps = graph
    wanted = data.draw(st.lists(st.sampled_from(sorted(dsk)), min_size=1, max_size=4,
                                unique=True))
    dsk, deps = cull(dsk, wanted, deps)  # as compute() does
    s = SchedulerState()
    s.update_graph(dsk, deps, wanted, order(dsk, deps))
    sim = Simulation(s, data)
    sim.run()
    needed = set(wanted)
    for k in wanted:  # everything the wanted keys depend on, transitively
        stack = [k]
        while stack:
            for d in deps[stack.pop()]:
                if d not in needed:
                    needed.add(d)
                    stack.append(d)
    assert sorted(sim.started) == sorted(needed)  # each needed task exactly once
    assert sim.memory == set(wanted)
    assert set(s.tasks) == set(wanted)
    assert all(s.state_of(k) == "memory" for k in wanted)
    assert s.unwant(wanted) and s.tasks == {}


@settings(max_examples=80, deadline=None, derandomize=True)
@given(dags(), st.data())
def test_random_graphs_with_a_failure(graph, data):
    dsk, deps = graph
    keys = sorted(dsk)
    wanted = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=4, unique=True))
    failing = data.draw(st.sampled_from(keys))
    dsk, deps = cull(dsk, wanted, deps)
    s = SchedulerState()
    s.update_graph(dsk, deps, wanted, order(dsk, deps))
    sim = Simulation(s, data)
    sim.run(fail={failing})
    doomed = _descendants(deps, {failing})
    for k in wanted:
        if k in doomed and failing in sim.started:
            assert s.state_of(k) == "erred"
            assert str(s.exception_of(k)) == failing
        else:
            assert s.state_of(k) == "memory"
    assert not sim.processing
    assert sim.memory == {k for k in wanted if s.state_of(k) == "memory"}
    assert {k for k in s.tasks} == set(wanted)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(dags(), st.data())
def test_random_second_graph_and_unwant_midway(graph, data):
    dsk, deps = graph
    keys = sorted(dsk)
    first = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))
    second = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))
    s = SchedulerState()
    sub1, deps1 = cull(dsk, first, deps)
    s.update_graph(sub1, deps1, first, order(sub1, deps1))
    sim = Simulation(s, data)
    for _ in range(data.draw(st.integers(0, 2 * len(dsk)))):
        if not sim.step():
            break
    # a second client submits (part of) the same graph; the first one leaves
    # before that, after that, or stays
    sub = {}
    stack = list(second)
    while stack:
        k = stack.pop()
        if k not in sub:
            sub[k] = dsk[k]
            stack.extend(deps[k])
    leaves = data.draw(st.sampled_from(["before", "after", "stays"]))

    def first_leaves():
        for key in s.unwant(first):
            assert key not in sim.processing
            sim.memory.discard(key)

    if leaves == "before":
        first_leaves()
    sub_deps = {k: deps[k] for k in sub}
    s.update_graph(sub, sub_deps, second, order(sub, sub_deps))
    if leaves == "after":
        first_leaves()
    expected = set(second) if leaves != "stays" else set(first) | set(second)
    sim.run()
    assert sim.memory == expected
    assert set(s.tasks) == expected


@settings(max_examples=60, deadline=None, derandomize=True)
@given(dags(), st.data())
def test_random_graphs_with_lost_workers(graph, data):
    dsk, deps = graph
    wanted = data.draw(st.lists(st.sampled_from(sorted(dsk)), min_size=1, max_size=4,
                                unique=True))
    dsk, deps = cull(dsk, wanted, deps)
    s = SchedulerState(max_worker_deaths=3)
    s.update_graph(dsk, deps, wanted, order(dsk, deps))
    sim = Simulation(s, data)
    sim.lose_workers = True
    sim.run()
    assert not sim.processing
    for k in wanted:
        if s.state_of(k) == "erred":
            assert isinstance(s.exception_of(k), KilledWorker)
            assert sim.killed
        else:
            assert s.state_of(k) == "memory"
    assert sim.memory == {k for k in wanted if s.state_of(k) == "memory"}
    assert set(s.tasks) == set(wanted)


def test_task_unwanted_while_running_is_kept_for_a_new_dependent():
    s = SchedulerState()
    submit(s, {"x": (inc, 1)}, ["x"])
    assert s.pop_ready().key == "x"
    assert s.unwant(["x"]) == []  # running: released when it finishes...
    # ...unless a new graph needs it meanwhile
    submit(s, {"x": (inc, 1), "y": (inc, "x")}, ["y"])
    released, keep = s.finished("x")
    assert keep and released == []
    assert s.state_of("x") == "memory"
    key, released = run_one(s, "y")
    assert released == ["x"]


def test_a_bad_graph_leaves_no_half_added_tasks():
    s = SchedulerState()
    dsk = {"a": (inc, 1), "b": (inc, "a"), "c": (inc, "gone")}
    deps = {"a": set(), "b": {"a"}, "c": {"gone"}}
    with pytest.raises(KeyError, match="'gone'"):
        s.update_graph(dsk, deps, ["b", "c"])
    assert s.tasks == {} and not s.has_ready()
    with pytest.raises(KeyError, match="'nope'"):
        s.update_graph({"a": (inc, 1)}, {"a": set()}, ["a", "nope"])
    assert s.tasks == {} and not s.has_ready()
    # the same keys submitted correctly afterwards run
    submit(s, {"a": (inc, 1), "b": (inc, "a")}, ["b"])
    assert run_all(s) == ["a", "b"]
    assert s.state_of("b") == "memory"


def test_many_ready_tasks_at_once_pop_in_the_same_order_as_one_at_a_time():
    import random

    rng = random.Random(5)

    def pops(state):
        out = []
        while (ts := state.pop_ready()) is not None:
            out.append(ts.key)
        return out

    def fill(state):
        # a small graph first (pushed one by one), then big ones (heap rebuilt
        # or pushed into, depending on what is queued), all in one generation
        for n, tag in ((10, "a"), (300, "b"), (100, "c")):
            keys = [f"{tag}{i}" for i in range(n)]
            prio = {k: rng.randrange(50) for k in keys}  # ties: seq decides
            state.update_graph({k: (inc, 1) for k in keys}, {k: [] for k in keys}, keys,
                               prio, new_generation=tag == "a")
        return state

    rng.seed(5)
    bulk = pops(fill(SchedulerState()))
    rng.seed(5)
    one_by_one = SchedulerState()
    one_by_one._make_ready_many = lambda tasks: [one_by_one._make_ready(t) for t in tasks]
    assert bulk == pops(fill(one_by_one)) and len(bulk) == 410


# -- memory pressure: tasks that free memory first ------------------------------


def _roots_and_a_reduction(s):
    """Two roots done, their sum ready; then four fresh roots of a later graph."""
    submit(s, {"x": (inc, 1), "y": (inc, 2), "total": (add, "x", "y")}, ["total"])
    run_one(s)
    run_one(s)  # x and y in memory; only total reads them
    s.update_graph({f"r{i}": (inc, i) for i in range(4)}, {f"r{i}": [] for i in range(4)},
                   [f"r{i}" for i in range(4)], {f"r{i}": i for i in range(4)},
                   annotations={"priority": 5})  # these outrank the sum


def test_without_pressure_the_order_decides():
    s = SchedulerState()
    _roots_and_a_reduction(s)
    assert [s.pop_ready().key for _ in range(5)] == ["r0", "r1", "r2", "r3", "total"]


def test_under_pressure_a_task_that_frees_memory_goes_first():
    s = SchedulerState()
    _roots_and_a_reduction(s)
    assert s.pop_ready(prefer_freeing=True).key == "total"
    # then the making tasks still run, in their order: a preference, not a ban
    assert [s.pop_ready(prefer_freeing=True).key for _ in range(4)] == ["r0", "r1", "r2", "r3"]
    assert s.pop_ready(prefer_freeing=True) is None and not s.has_ready()


def test_a_task_reading_only_held_data_makes_memory():
    s = SchedulerState()
    submit(s, {"x": (inc, 1)}, ["x"])
    run_one(s)  # x is held by its client: reading it frees nothing
    s.update_graph({"y": (inc, "x")}, {"y": ["x"]}, ["y"], {"y": 1})
    s.update_graph({"r": (inc, 0)}, {"r": []}, ["r"], {"r": 0}, new_generation=False)
    assert s.pop_ready(prefer_freeing=True).key == "r"  # order decides between makers
    assert s.pop_ready(prefer_freeing=True).key == "y"


def test_a_requeued_or_retried_task_keeps_its_kind():
    s = SchedulerState()
    _roots_and_a_reduction(s)
    total = s.pop_ready(prefer_freeing=True)
    s.requeue(total)
    assert s.pop_ready(prefer_freeing=True) is total


# -- scheduling options: user priority, retries, generations, retry() --------------


def test_user_priority_outranks_submission_order_and_graph_order():
    s = SchedulerState()
    s.update_graph({"early": (inc, 1)}, {"early": []}, ["early"], {"early": 0})
    s.update_graph({"low": (inc, 2)}, {"low": []}, ["low"], {"low": 0},
                   annotations={"priority": -1})
    s.update_graph({"urgent": (inc, 3)}, {"urgent": []}, ["urgent"], {"urgent": 9},
                   annotations={"priority": 10})
    assert [s.pop_ready().key for _ in range(3)] == ["urgent", "early", "low"]


def test_same_generation_orders_by_graph_priority():
    s = SchedulerState()
    s.update_graph({"a": (inc, 1)}, {"a": []}, ["a"], {"a": 5})
    s.update_graph({"b": (inc, 1)}, {"b": []}, ["b"], {"b": 1}, new_generation=False)
    assert [s.pop_ready().key for _ in range(2)] == ["b", "a"]
    s.update_graph({"c": (inc, 1)}, {"c": []}, ["c"], {"c": 0})
    s.update_graph({"d": (inc, 1)}, {"d": []}, ["d"], {"d": 0}, new_generation=True)
    assert [s.pop_ready().key for _ in range(2)] == ["c", "d"]


def test_retries_put_an_erred_task_back_to_ready():
    s = SchedulerState()
    dsk = {"a": (inc, 1), "b": (inc, "a")}
    s.update_graph(dsk, {"a": [], "b": ["a"]}, ["b"], {"a": 0, "b": 1},
                   annotations={"retries": 2})
    ts = s.pop_ready()
    assert ts.key == "a"
    for _ in range(2):  # two failures are retried ...
        assert s.erred("a", ValueError("flaky")) == ([], [])
        assert s.state_of("a") == "ready"
        assert s.pop_ready().key == "a"
    erred, _ = s.erred("a", ValueError("again"))  # ... the third is final
    assert sorted(erred) == ["a", "b"]
    assert s.state_of("b") == "erred"


def test_retries_then_success_runs_the_dependents():
    s = SchedulerState()
    s.update_graph({"a": (inc, 1), "b": (inc, "a")}, {"a": [], "b": ["a"]}, ["b"],
                   annotations={"retries": 1})
    assert s.pop_ready().key == "a"
    s.erred("a", ValueError("flaky"))
    assert s.pop_ready().key == "a"
    s.finished("a")
    assert s.pop_ready().key == "b"
    s.finished("b")
    assert s.state_of("b") == "memory"


def test_retry_reruns_erred_tasks_and_their_released_inputs():
    s = SchedulerState()
    dsk = {"x": (inc, 1), "y": (inc, "x"), "z": (inc, "y")}
    s.update_graph(dsk, {"x": [], "y": ["x"], "z": ["y"]}, ["z"], {"x": 0, "y": 1, "z": 2},
                   annotations={"priority": 3})
    assert run_one(s, "x") == ("x", [])
    assert s.pop_ready().key == "y"
    erred, released = s.erred("y", ValueError("boom"))
    assert sorted(erred) == ["y", "z"] and released == ["x"]
    assert s.state_of("z") == "erred" and s.state_of("x") == "released"
    assert sorted(s.retry(["z"])) == ["x", "y", "z"]
    assert s.tasks["z"].who_wants == 1  # the client still holds it
    assert s.tasks["z"].priority[0] == -3  # options survive the retry
    assert run_all(s) == ["x", "y", "z"]
    assert s.state_of("z") == "memory"
    assert s.retry(["z"]) == []  # not erred: nothing to do


def test_retry_keeps_inputs_still_in_memory():
    s = SchedulerState()
    s.update_graph({"x": (inc, 1)}, {"x": []}, ["x"])
    run_one(s, "x")
    s.update_graph({"y": (inc, "x")}, {"y": ["x"]}, ["y"])
    s.pop_ready()
    s.erred("y", ValueError("boom"))
    assert s.retry(["y"]) == ["y"]
    assert s.state_of("x") == "memory" and s.tasks["x"].waiters == 1
    assert run_all(s) == ["y"]
