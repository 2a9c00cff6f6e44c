"""Tasks that use the cluster: get_worker, get_client, worker_client, secede/rejoin."""

from __future__ import annotations

import pytest

from shmdask.client import Client
from shmdask.cluster.local_cluster import LocalCluster
from shmdask.distributed import (
    get_client,
    get_worker,
    rejoin,
    secede,
    worker_client,
)


def fib(n: int) -> int:
    if n < 2:
        return n
    with worker_client() as client:
        a = client.submit(fib, n - 1)
        b = client.submit(fib, n - 2)
        return a.result() + b.result()


def fib_plain(n: int) -> int:
    return n if n < 2 else fib_plain(n - 1) + fib_plain(n - 2)


def worker_facts() -> dict:
    w = get_worker()
    return {"address": w.address, "name": w.name, "nthreads": w.nthreads}


def submit_from_task(x: int) -> int:
    client = get_client()
    future = client.submit(lambda y: y * 10, x)
    # waiting while holding the only thread would deadlock (in dask too): leave the pool
    secede()
    value = future.result()
    rejoin()
    return value + 1


@pytest.fixture(scope="module")
def one_thread():
    """A cluster of one worker with one thread: any task that waits on others
    while holding its thread would deadlock it."""
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, \
            Client(cluster, set_as_default=False) as client:
        yield cluster, client


def test_recursive_fib_on_one_thread(one_thread):
    cluster, client = one_thread
    assert client.submit(fib, 9).result(timeout=90) == fib_plain(9) == 34
    # the engine counted seceded tasks as free, and forgot them once done
    assert cluster.engine.call(lambda e: sum(map(len, e.seceded.values()))) == 0


def test_get_client_in_a_task_reaches_the_same_cluster(one_thread):
    cluster, client = one_thread
    assert client.submit(submit_from_task, 4).result(timeout=60) == 41
    # the worker's client came in over a loopback listener started on demand
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    info = client.scheduler_info()
    assert info["clients"] >= 1


def test_get_worker_in_a_task(one_thread):
    cluster, client = one_thread
    facts = client.submit(worker_facts, pure=False).result()
    assert facts["address"] in cluster.workers
    assert facts["nthreads"] == 1


def test_outside_a_task():
    with pytest.raises(ValueError, match="worker"):
        get_worker()
    with pytest.raises(ValueError, match="worker"):
        secede()
    import shmdask

    shmdask.config.set(scheduler=None)
    with pytest.raises(ValueError, match="no client"):
        get_client()


def test_get_client_outside_a_task_is_the_default_client(one_thread):
    _, client = one_thread
    import shmdask

    with shmdask.config.set(scheduler=client):
        assert get_client() is client
        with worker_client() as c:  # nothing to secede here
            assert c is client


@pytest.mark.slow
def test_fib_side_by_side_with_dask_distributed():
    """The same recursive program on dask.distributed (1 worker, 1 thread)."""
    distributed = pytest.importorskip("distributed")

    def dask_fib(n):
        if n < 2:
            return n
        with distributed.worker_client() as c:
            a, b = c.submit(dask_fib, n - 1), c.submit(dask_fib, n - 2)
            return a.result() + b.result()

    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=":0") as dc:
        expected = dc.submit(dask_fib, 6).result(timeout=60)
    with LocalCluster(n_workers=1) as cluster, Client(cluster, set_as_default=False) as c:
        assert c.submit(fib, 6).result(timeout=60) == expected == 8


def test_recursive_fib_on_a_one_thread_threads_cluster():
    """The threads backend (LocalCluster(processes=False)) secedes the same way."""
    with LocalCluster(processes=False, n_workers=1, threads_per_worker=1) as cluster, \
            Client(cluster) as client:  # the default client: what get_client() finds
        assert client.submit(fib, 8).result(timeout=60) == 21
        facts = client.submit(worker_facts, pure=False).result()
        assert facts["address"] in client.scheduler_info()["workers"]
        # every seceded thread left the pool again: one thread per worker
        worker = next(iter(cluster.engine.workers.values()))
        assert worker._pooled == 1
        assert cluster.engine.call(lambda e: e.seceded) == {}


def test_secede_on_the_sync_scheduler_is_refused():
    import shmdask

    def try_secede():
        try:
            secede()
        except ValueError as exc:
            return str(exc)
        return "seceded"

    assert "no thread pool" in shmdask.delayed(try_secede)().compute(scheduler="sync")
