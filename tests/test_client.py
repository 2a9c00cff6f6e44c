"""Client and Future semantics, on every kind of cluster the Client can drive."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest

import shmdask
from shmdask.distributed import CancelledError, Client, as_completed, wait
from shmdask.scheduler.local import ThreadCluster


@pytest.fixture(scope="module")
def cluster(each_cluster):
    return each_cluster


@pytest.fixture
def client(cluster):
    with Client(cluster) as c:
        yield c
    # Every test leaves the cluster as it found it.
    gc.collect()
    deadline = time.time() + 5
    while cluster.engine.data and time.time() < deadline:
        time.sleep(0.01)
    assert not cluster.engine.data, f"keys left in memory: {list(cluster.engine.data)[:5]}"


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def slow_inc(x, delay=0.2):
    time.sleep(delay)
    return x + 1


def fail(x):
    raise ValueError(f"bad value {x}")


def test_submit_result_and_key(client):
    f = client.submit(inc, 1)
    assert f.result(timeout=10) == 2
    assert f.done() and f.status == "finished"
    assert f.key.startswith("inc-")
    # pure by default: the same call has the same key
    assert client.submit(inc, 1).key == f.key
    assert client.submit(inc, 1, pure=False).key != f.key


def test_futures_as_arguments(client):
    a = client.submit(inc, 1)
    b = client.submit(add, a, 10)
    assert b.result(timeout=10) == 12
    d = shmdask.delayed(add)(a, 100)  # a Future inside a delayed call
    assert d.compute() == 102


def test_a_future_of_another_client_is_refused_by_name(client):
    other_cluster = ThreadCluster(1)
    try:
        with Client(other_cluster, set_as_default=False) as other:
            theirs = other.submit(inc, 1, key="theirs")
            assert theirs.result(timeout=10) == 2
            with pytest.raises(ValueError, match="'theirs' belongs to another client"):
                client.submit(add, theirs, 1)
            with pytest.raises(ValueError, match="belongs to another client"):
                client.map(add, [theirs], [1])
            with pytest.raises(ValueError, match="belongs to another client"):
                shmdask.delayed(add)(theirs, 1).compute(scheduler=client)
            assert client.submit(inc, 5).result(timeout=10) == 6  # still usable
            del theirs
    finally:
        other_cluster.close()


def test_map_gather_nested(client):
    futures = client.map(inc, range(20))
    assert client.gather(futures) == list(range(1, 21))
    nested = client.gather({"a": futures[0], "b": [futures[1], (futures[2],)]})
    assert nested == {"a": 1, "b": [2, (3,)]}


def test_exception_and_error_propagation(client):
    f = client.submit(fail, 3)
    with pytest.raises(ValueError, match="bad value 3") as info:
        f.result(timeout=10)
    assert any(f.key in note for note in info.value.__notes__)
    assert isinstance(f.exception(), ValueError)
    g = client.submit(inc, f)  # depends on a failed future
    with pytest.raises(ValueError):
        g.result(timeout=10)
    assert g.status == "error"


def test_result_timeout(client):
    f = client.submit(slow_inc, 1, 1.0, pure=False)
    with pytest.raises(TimeoutError):
        f.result(timeout=0.05)
    assert f.result(timeout=10) == 2


def test_cancel(client):
    f = client.submit(slow_inc, 1, 0.5, pure=False)
    f.cancel()
    assert f.cancelled()
    with pytest.raises(CancelledError):
        f.result(timeout=5)


def test_wait_and_as_completed(client):
    futures = [client.submit(slow_inc, i, 0.05 * (3 - i), pure=False) for i in range(3)]
    done, not_done = wait(futures, timeout=10)
    assert len(done) == 3 and not not_done
    seen = [f.result() for f in as_completed(futures)]
    assert sorted(seen) == [1, 2, 3]


def test_scatter_numpy_and_containers(client):
    x = np.arange(100_000, dtype="f8")
    fx = client.scatter(x)
    assert client.submit(np.sum, fx).result(timeout=10) == x.sum()
    fl = client.scatter([1, 2, 3])
    assert client.gather(fl) == [1, 2, 3]
    fd = client.scatter({"a": np.ones(3), "b": 5})
    assert client.gather(fd["b"]) == 5
    out = fx.result()
    assert out.flags.writeable and np.array_equal(out, x)


def test_compute_and_persist_collections(client):
    d = shmdask.delayed(inc)(1)
    f = client.compute(d)
    assert f.result(timeout=10) == 2
    p = client.persist(d + 1)
    assert any(shmdask.base.is_future(v) for v in p.dask.values())
    assert p.compute() == 3


def test_default_scheduler_switching(cluster):
    assert shmdask.config.get("scheduler") is None
    with Client(cluster) as c:
        assert shmdask.config.get("scheduler") is c
        names = shmdask.delayed(lambda: threading.current_thread().name)().compute()
        assert names != threading.current_thread().name
    assert shmdask.config.get("scheduler") is None
    with shmdask.config.set(scheduler="sync"):
        with Client(cluster):
            pass
        assert shmdask.config.get("scheduler") == "sync"


def test_shared_keys_are_released(client, cluster):
    futures = client.map(inc, range(50))
    assert sum(client.gather(futures)) == sum(range(1, 51))
    del futures
    gc.collect()
    deadline = time.time() + 5
    while cluster.engine.data and time.time() < deadline:
        time.sleep(0.01)
    assert not cluster.engine.data


def test_scheduler_info_and_repr(client):
    info = client.scheduler_info()
    for field in ("type", "id", "address", "started", "workers"):
        assert field in info
    assert len(info["workers"]) == 2
    for w in info["workers"].values():
        for field in ("name", "pid", "host", "nthreads", "memory_limit", "kind", "metrics"):
            assert field in w
        assert {"memory", "executing", "in_memory"} <= set(w["metrics"])
    assert "threads=2" in repr(client)
    assert "<table>" in client._repr_html_()


def test_restart_drops_data(client, cluster):
    f = client.submit(inc, 41)
    assert f.result(timeout=10) == 42
    client.restart()
    assert f.cancelled()
    assert client.submit(inc, 1, pure=False).result(timeout=10) == 2
    assert not [k for k in cluster.engine.data if k == f.key]


def test_closed_client_refuses_work(cluster):
    c = Client(cluster, set_as_default=False)
    c.close()
    with pytest.raises(CancelledError):
        c.submit(inc, 1)
    assert "closed" in repr(c)


def test_unfinished_tasks_counts_running_work(client):
    futures = [client.submit(slow_inc, i, 0.3, pure=False) for i in range(4)]
    assert client.connection.unfinished_tasks() >= 1
    client.gather(futures)
    assert client.connection.unfinished_tasks() == 0


def test_a_graph_waiter_counts_batches_and_single_keys_alike():
    from shmdask.client_graph_runs import GraphWaiter

    heard = []
    waiter = GraphWaiter(["a", "b", "c", "d"], also=lambda k, s, e: heard.append((k, s)))
    waiter.many(["a", "b"], "memory")
    waiter("c", "memory", None)
    assert not waiter.event.is_set()
    waiter.many(["d"], "memory")
    assert waiter.event.is_set() and waiter.error is None
    assert heard == [("a", "memory"), ("b", "memory"), ("c", "memory"), ("d", "memory")]

    batches = []  # with also_many, a batch in memory is heard in one call
    batched = GraphWaiter(["a", "b", "c"], also=lambda k, s, e: heard.append((k, s)),
                          also_many=lambda ks, s: batches.append((list(ks), s)))
    batched.many(["a", "b"], "memory")
    batched("c", "memory", None)
    assert batches == [(["a", "b"], "memory"), (["c"], "memory")]
    assert batched.event.is_set() and len(heard) == 4

    failing = GraphWaiter(["x", "y"])
    failing.many(["x"], "cancelled")  # not "memory": an error, as a single call makes it
    assert failing.event.is_set() and isinstance(failing.error, CancelledError)


def test_futures_and_a_run_of_the_same_keys_both_hear_the_results(client):
    import shmdask

    x = [shmdask.delayed(slow_inc)(i, 0.05, dask_key_name=f"run-and-future-{i}")
         for i in range(20)]
    futures = client.compute(x)  # Futures on the keys a run is about to compute
    forgotten = client.compute(x[0])
    del forgotten  # released while the run holds the key: let go once it is done
    assert list(shmdask.compute(*x, scheduler=client)) == list(range(1, 21))
    assert [f.result(10) for f in futures] == list(range(1, 21))
    assert all(f.status == "finished" for f in futures)
