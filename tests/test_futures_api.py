"""dask.distributed's Future API on shmdask: waiting, iterating, callbacks, retrying,
and the scheduling options of submit/map/compute/persist."""

from __future__ import annotations

import gc
import logging
import operator
import os
import threading
import time
import traceback

import numpy as np
import pytest

import shmdask
import shmdask.array as da
from shmdask import delayed
from shmdask.distributed import (
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    Client,
    as_completed,
    default_client,
    fire_and_forget,
    futures_of,
    wait,
)
from shmdask.scheduler.engine import Engine
from shmdask.scheduler.local import ThreadCluster, ThreadWorker
from tests.conftest import wait_for


def inc(x):
    return x + 1


def slow_inc(x, delay=0.2):
    time.sleep(delay)
    return x + 1


def fail(x):
    raise ValueError(f"bad value {x}")


def flaky(path, failures):
    """Fails ``failures`` times (counted in a file: works across processes)."""
    with open(path, "a+") as f:
        f.seek(0)
        count = len(f.read())
        f.write("x")
    if count < failures:
        raise RuntimeError(f"flaky failure {count + 1}")
    return count


@pytest.fixture(scope="module")
def threads():
    with ThreadCluster(2) as cluster:
        yield cluster


@pytest.fixture
def tclient(threads):
    with Client(threads, set_as_default=False) as c:
        yield c


@pytest.fixture(params=["threads", "processes"])
def client(request, threads):
    if request.param == "processes":
        return request.getfixturevalue("process_client")
    c = Client(threads, set_as_default=False)
    request.addfinalizer(c.close)
    return c


# -- finding futures: futures_of, wait, as_completed, progress ----------------------------


def test_futures_of_finds_futures_in_containers_and_collections(tclient):
    a, b, c = tclient.map(inc, [1, 2, 3])
    assert futures_of([a, (b, {"k": c}), 5, "text"]) == [a, b, c]
    assert futures_of(a) == [a]
    assert futures_of([a, a]) == [a]
    x = da.ones(10, chunks=5).persist(scheduler=tclient)
    assert len(futures_of(x)) == 2
    d = delayed(operator.add)(a, b)
    assert futures_of(d) == [a, b]
    assert shmdask.futures_of is futures_of


def test_wait_on_a_persisted_collection_waits(client):
    x = da.from_delayed(delayed(slow_inc)(np.zeros(4), 0.3), shape=(4,), dtype=float)
    y = (x + 1).persist(scheduler=client)
    futures = futures_of(y)
    assert futures and not all(f.done() for f in futures)
    done, not_done = wait(y, timeout=30)
    assert not not_done and done == set(futures)
    assert all(f.status == "finished" for f in futures)
    np.testing.assert_array_equal(y.compute(scheduler=client), np.full(4, 2.0))


def test_wait_first_completed_and_first_exception(tclient):
    gate = threading.Event()
    blocked = tclient.submit(gate.wait, 30, pure=False)
    quick = tclient.submit(inc, 1)
    done, not_done = wait([blocked, quick], return_when=FIRST_COMPLETED, timeout=30)
    assert quick in done and blocked in not_done
    bad = tclient.submit(fail, 1)
    done, not_done = wait([blocked, bad], return_when=FIRST_EXCEPTION, timeout=30)
    assert bad in done and blocked in not_done
    gate.set()
    assert wait([blocked, bad], timeout=30).not_done == set()


def test_wait_timeout_and_bad_arguments(tclient):
    gate = threading.Event()
    f = tclient.submit(gate.wait, 30, pure=False)
    with pytest.raises(TimeoutError, match="1 of 1 futures"):
        wait(f, timeout="10 ms")
    assert not f._status.waiters  # the waiter was taken off again
    with pytest.raises(TypeError, match=r"wait\(\[x, y, z\]\)"):
        wait(f, f)  # dask's classic mistake: the second future taken as the timeout
    with pytest.raises(ValueError, match="return_when"):
        wait(f, return_when="SOMETIMES")
    gate.set()
    wait(f)


def test_wait_raises_for_cancelled_futures(tclient):
    gate = threading.Event()
    f = tclient.submit(gate.wait, 30, pure=False)
    f.cancel()
    with pytest.raises(CancelledError):
        wait([f])
    gate.set()


def test_progress_finds_futures_like_wait(tclient):
    import io

    from shmdask.distributed import progress

    x = da.ones(6, chunks=2).persist(scheduler=tclient)
    stream = io.StringIO()
    progress(x, stream=stream, interval=0.01)
    assert "3/3" in stream.getvalue()


# -- as_completed --------------------------------------------------------------------------


def test_as_completed_is_an_iterator_with_add_update_and_count(tclient):
    gates = [threading.Event() for _ in range(3)]
    futures = [tclient.submit(g.wait, 30, pure=False) for g in gates]
    ac = as_completed(futures[:2])
    assert ac.count() == 2
    ac.add(futures[2])
    assert ac.count() == 3 and not ac.has_ready()
    gates[1].set()
    assert next(ac) is futures[1]
    assert ac.count() == 2
    gates[0].set()
    gates[2].set()
    rest = list(ac)
    assert set(rest) == {futures[0], futures[2]}
    assert ac.is_empty()
    ac.update([tclient.submit(inc, 5)])  # adding after exhaustion continues
    assert next(ac).result() == 6
    with pytest.raises(StopIteration):
        next(ac)


def test_as_completed_with_results_and_errors(client):
    futures = client.map(inc, range(5))
    results = sorted(r for _, r in as_completed(futures, with_results=True))
    assert results == [1, 2, 3, 4, 5]
    bad = client.submit(fail, 1)
    with pytest.raises(ValueError, match="bad value 1"):
        list(as_completed([bad], with_results=True))
    [(f, exc)] = list(as_completed([bad], with_results=True, raise_errors=False))
    assert f is bad and isinstance(exc, ValueError)


def test_as_completed_batches_and_timeout(tclient):
    futures = tclient.map(inc, range(10))
    wait(futures)
    batches = list(as_completed(futures).batches())
    assert sum(len(b) for b in batches) == 10
    assert len(batches) == 1  # all were ready: one batch
    gate = threading.Event()
    ac = as_completed([tclient.submit(gate.wait, 30, pure=False)], timeout=0.05)
    with pytest.raises(TimeoutError):
        next(ac)
    gate.set()


def test_as_completed_yields_the_same_future_twice_if_added_twice(tclient):
    f = tclient.submit(inc, 1)
    assert list(as_completed([f, f])) == [f, f]


# -- callbacks ---------------------------------------------------------------------------


def test_a_raising_callback_does_not_stop_other_futures(tclient, caplog):
    """Issue 11, defect 3: 20 results in one batch, one callback raises."""
    gate = threading.Event()
    blocker = tclient.submit(gate.wait, 30, pure=False)
    # all 20 wait on one future: they become ready, run and finish together
    futures = [tclient.submit(operator.add, blocker, i, pure=False) for i in range(20)]
    ran = []
    where = []

    def bad_callback(future):
        where.append(threading.current_thread().name)
        raise RuntimeError("callback failure")

    futures[3].add_done_callback(bad_callback)
    for f in futures:
        f.add_done_callback(lambda f: ran.append(f.key))
    with caplog.at_level(logging.ERROR, logger="shmdask.client"):
        gate.set()
        assert tclient.gather(futures, errors="raise") == [True + i for i in range(20)]
        wait_for(lambda: len(ran) == 20, what="20 callbacks")
    assert all(f.status == "finished" for f in futures)
    assert where and where[0].startswith("shmdask-callbacks-")  # not the engine's loop
    assert "callback failure" in caplog.text


def test_callbacks_run_off_the_engine_thread_and_on_done_futures(client):
    f = client.submit(inc, 1)
    f.result()
    seen = []
    done = threading.Event()
    f.add_done_callback(lambda fut: (seen.append((fut, threading.current_thread())),
                                     done.set()))
    assert done.wait(10)
    assert seen[0][0] is f
    assert seen[0][1] is not threading.current_thread()
    assert seen[0][1].name.startswith("shmdask-callbacks-")


def test_a_raising_listener_is_isolated_in_the_engine():
    engine = Engine(name="test-listeners")
    worker = ThreadWorker(engine, "w")
    engine.add_worker(worker)
    engine.start()
    heard = []

    def listener(key, status, exc):
        if key == "k3":
            raise RuntimeError("bad listener")
        heard.append(key)

    try:
        dsk = {f"k{i}": (inc, i) for i in range(20)}
        engine.submit(dsk, {k: [] for k in dsk}, list(dsk), None, listener)
        wait_for(lambda: len(heard) == 19, what="19 listeners")
    finally:
        engine.close()


# -- Future methods ------------------------------------------------------------------------


def test_status_exception_and_traceback(client):
    f = client.submit(fail, 3)
    wait(f)
    assert f.status == "error" and f.done()
    assert isinstance(f.exception(), ValueError)
    tb = f.traceback()
    text = "".join(traceback.format_tb(tb))
    assert "fail" in text and "bad value" in "".join(traceback.format_exception(
        type(f.exception()), f.exception(), tb))
    assert __file__.rstrip("c") in text  # the task's own file and line
    assert "shmdask/scheduler" not in text and "shmdask/cluster" not in text
    ok = client.submit(inc, 1)
    assert ok.exception() is None and ok.traceback() is None and ok.status == "finished"


def test_retry_reruns_an_erred_future(client, tmp_path):
    path = str(tmp_path / "count")
    f = client.submit(flaky, path, 1, pure=False)
    g = client.submit(inc, f)
    with pytest.raises(RuntimeError, match="flaky failure 1"):
        g.result()
    assert f.status == "error"
    g.retry()  # reruns g and the erred f it needs
    assert g.result(timeout=30) == 2
    assert f.result() == 1


def test_retries_option_reruns_failures_on_the_scheduler(client, tmp_path):
    path = str(tmp_path / "count")
    assert client.submit(flaky, path, 2, retries=2, pure=False).result(timeout=30) == 2
    path2 = str(tmp_path / "count2")
    with pytest.raises(RuntimeError, match="flaky failure 3"):
        client.submit(flaky, path2, 5, retries=2, pure=False).result(timeout=30)


def test_scheduling_keywords_never_reach_the_function(client):
    assert client.submit(operator.getitem, [10, 20, 30], 1, priority=1).result() == 20

    def kwargs_of(**kwargs):
        return kwargs

    f = client.submit(kwargs_of, retries=5, priority=2, workers=None, resources=None,
                      fifo_timeout="100 ms", allow_other_workers=False, pure=False, x=1)
    assert f.result() == {"x": 1}
    assert [f.result() for f in client.map(kwargs_of, retries=1, priority=1, x=[1])] == []
    assert [f.result() for f in client.map(operator.neg, [1, 2], retries=1, priority=3)] == [
        -1, -2]
    with pytest.raises(ValueError, match="retries"):
        client.submit(inc, 1, retries=-1)
    with pytest.raises(NotImplementedError, match="actors"):
        client.submit(inc, 1, actor=True)


def test_key_and_pure(tclient):
    a = tclient.submit(inc, 1)
    b = tclient.submit(inc, 1)
    assert a.key == b.key  # pure by default: same call, same key
    c = tclient.submit(inc, 1, pure=False)
    assert c.key != a.key
    d = tclient.submit(inc, 1, key="my-key")
    assert d.key == "my-key" and d.result() == 2
    keys = [f.key for f in tclient.map(inc, [1, 2], key="m")]
    assert keys == ["m-0", "m-1"]


def test_release_and_cancel(tclient):
    g = tclient.submit(inc, 1)
    g.result()
    g.release()
    assert g.cancelled()
    gate = threading.Event()
    f = tclient.submit(gate.wait, 30, pure=False)
    f.cancel()
    assert f.cancelled() and f.status == "cancelled"
    with pytest.raises(CancelledError):
        f.result()
    gate.set()


# -- priority, workers, resources -----------------------------------------------------------


def _record(log, name):
    log.append(name)
    return name


def _priority_run_order(client, log, gate):
    blocker = client.submit(gate.wait, 30, pure=False, priority=100)
    engine = client.cluster.engine
    wait_for(lambda: engine.where, what="blocker to start")
    # Priority orders tasks that are ready together.  Submitted one by one, a
    # low task could reach the engine alone and be queued on the worker before
    # "high" exists (it did on a loaded machine): hold the loop until all four
    # graphs are in its inbox, so one step reads them all before dispatching.
    submitted = threading.Event()
    engine.post(("call", lambda _engine: submitted.wait(30)))
    low = [client.submit(_record, log, f"low-{i}", pure=False) for i in range(3)]
    high = client.submit(_record, log, "high", pure=False, priority=10)
    submitted.set()
    gate.set()
    wait([blocker, *low, high])
    return log


def test_priority_changes_the_order_tasks_run_in():
    log: list = []
    with ThreadCluster(1) as cluster, Client(cluster, set_as_default=False) as c:
        order = _priority_run_order(c, log, threading.Event())
    assert order[0] == "high" and order[1:] == ["low-0", "low-1", "low-2"]


_DASK_GATE = threading.Event()
_DASK_LOG: list = []


def _dask_block():
    return _DASK_GATE.wait(30)


def _dask_record(name):
    _DASK_LOG.append(name)
    return name


@pytest.mark.slow
def test_priority_order_matches_dask_distributed():
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=":0") as c:
        blocker = c.submit(_dask_block, pure=False, priority=100)
        while not any(c.processing().values()):
            time.sleep(0.01)
        low = [c.submit(_dask_record, f"low-{i}", pure=False) for i in range(20)]
        high = c.submit(_dask_record, "high", pure=False, priority=10)
        time.sleep(0.2)  # let dask's scheduler place every task before the gate opens
        _DASK_GATE.set()
        distributed.wait([blocker, *low, high])
    # dask sends a worker a few tasks beyond its threads ahead of time (how many
    # depends on timing); the rest wait on the scheduler, where the high
    # priority goes first.  shmdask keeps everything on the scheduler while
    # tasks are long: there "high" is first.
    assert _DASK_LOG.index("high") < 10


def test_workers_restricts_where_tasks_run(tclient):
    names = tclient.map(lambda i: threading.current_thread().name, range(8),
                        workers="thread-1", pure=False)
    assert {f.result() for f in names} == {"shmdask-thread-1"}
    anywhere = tclient.submit(inc, 1, workers=["no-such-worker"], allow_other_workers=True)
    assert anywhere.result(timeout=10) == 2


def test_a_task_for_an_absent_worker_waits_until_it_joins(tclient, threads):
    f = tclient.submit(inc, 41, workers="late-worker")
    with pytest.raises(TimeoutError):
        f.result(timeout=0.2)
    late = ThreadWorker(threads.engine, "late-worker")
    threads.engine.add_worker(late)
    try:
        assert f.result(timeout=10) == 42
    finally:
        threads.engine.post(("worker-lost", "late-worker", "test over"))
        late.close()


def _count_concurrent(state, lock):
    with lock:
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
    time.sleep(0.05)
    with lock:
        state["now"] -= 1
    return True


def test_resources_limit_concurrency_as_declared():
    state = {"now": 0, "max": 0}
    lock = threading.Lock()
    cluster = shmdask.LocalCluster(processes=False, n_workers=1, threads_per_worker=4,
                                   resources={"GPU": 1})
    with cluster, Client(cluster, set_as_default=False) as c:
        assert c.scheduler_info()["workers"]["thread-0"]["resources"] == {"GPU": 1}
        futures = [c.submit(_count_concurrent, state, lock, resources={"GPU": 1}, pure=False)
                   for _ in range(6)]
        wait(futures)
        assert state["max"] == 1
        state["max"] = 0
        free = [c.submit(_count_concurrent, state, lock, pure=False) for _ in range(8)]
        wait(free)
        assert state["max"] > 1


def test_fifo_timeout_groups_graphs_into_one_generation(threads):
    engine = threads.engine
    gate = threading.Event()
    with Client(threads, set_as_default=False) as c:
        blocker = c.submit(gate.wait, 30, pure=False, workers="thread-0")
        other = c.submit(gate.wait, 30, pure=False, workers="thread-1")
        a = c.submit(inc, 1, fifo_timeout="1 hour", pure=False)
        b = c.submit(inc, 2, fifo_timeout="1 hour", pure=False)
        d = c.submit(inc, 3, pure=False)
        gens = engine.call(lambda e: [e.state.tasks[f.key].priority[1] for f in (a, b, d)])
        assert gens[0] == gens[1] != gens[2]
        gate.set()
        wait([blocker, other, a, b, d])


# -- fire_and_forget, default_client -----------------------------------------------------------


def _touch_later(path, delay):
    time.sleep(delay)
    with open(path, "w") as f:
        f.write("done")
    return path


def _check_fire_and_forget(client, engine, path: str, delay: float) -> None:
    """A forgotten future's task runs to the end, and then its result is released."""
    f = client.submit(_touch_later, path, delay, pure=False)
    key = f.key
    fire_and_forget(f)
    del f
    gc.collect()
    wait_for(lambda: os.path.exists(path), what="the forgotten task")
    wait_for(lambda: key not in engine.data and key not in engine.state.tasks,
             what="its result to be released")


def test_fire_and_forget_runs_to_the_end_and_releases(client, tmp_path):
    _check_fire_and_forget(client, client.cluster.engine, str(tmp_path / "flag"), 0.3)


def test_default_client():
    with ThreadCluster(1) as cluster:
        c = Client(cluster)
        try:
            assert default_client() is c
            assert Client.current() is c
            assert default_client(c) is c
        finally:
            c.close()
    shmdask.config.set(scheduler=None)
    with pytest.raises(ValueError, match="No clients found"):
        default_client()


# -- the same through a remote Client (TCP) ----------------------------------------------------


def test_options_retry_and_fire_and_forget_through_a_remote_client(tmp_path):
    from shmdask.cluster.tcp_server import attach_listener

    with ThreadCluster(1, threads_per_worker=2) as cluster:
        listener = attach_listener(cluster, "tcp://127.0.0.1:0")
        with Client(listener.address, set_as_default=False) as remote:
            path = str(tmp_path / "count")
            assert remote.submit(flaky, path, 1, retries=1, priority=5,
                                 pure=False).result(timeout=30) == 1
            f = remote.submit(flaky, str(tmp_path / "count2"), 1, pure=False)
            g = remote.submit(inc, f)
            with pytest.raises(RuntimeError, match="flaky failure 1"):
                g.result(timeout=30)
            g.retry()
            assert g.result(timeout=30) == 2 and f.result(timeout=30) == 1
            _check_fire_and_forget(remote, cluster.engine, str(tmp_path / "flag"), 0.2)
