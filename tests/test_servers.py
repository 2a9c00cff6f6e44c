"""Scheduler, Worker and Nanny: a cluster assembled by hand, as in dask's tutorial."""

from __future__ import annotations

import asyncio

import pytest

from shmdask.client import Client
from shmdask.cluster.local_cluster import LocalCluster
from shmdask.distributed import Nanny, Scheduler, Worker, worker_client


def inc(x: int) -> int:
    return x + 1


def fib(n: int) -> int:
    if n < 2:
        return n
    with worker_client() as client:
        return sum(client.gather([client.submit(fib, n - 1), client.submit(fib, n - 2)]))


def test_async_with_scheduler_and_workers():
    async def main():
        async with Scheduler() as s:
            assert s.address.startswith("tcp://127.0.0.1:")
            async with Worker(s.address) as w1, Nanny(s.address, nthreads=2) as w2:
                assert set(s.workers) == {w1.address, w2.address}
                assert s.workers[w2.address].nthreads == 2
                with Client(s.address, set_as_default=False) as client:
                    # the event loop keeps running while the client waits
                    result = await asyncio.get_running_loop().run_in_executor(
                        None, lambda: client.submit(inc, 10).result())
                    assert result == 11
                    # local workers of an in-process scheduler share its memory
                    assert all(w["kind"] == "local"
                               for w in client.scheduler_info()["workers"].values())
            assert s.workers == {} or not s.workers
        assert s.status == "closed"

    asyncio.run(main())


def test_sync_with_and_explicit_close():
    with Scheduler() as s:
        w = Worker(s.address).start()
        try:
            with Client(s.address, set_as_default=False) as client:
                assert client.submit(inc, 1).result() == 2
        finally:
            w.close()
        assert w.address not in s.workers
    assert s.cluster.closed


def test_worker_joins_a_scheduler_of_another_process_over_tcp():
    with LocalCluster(n_workers=0, listen=True) as cluster:
        with Worker(cluster.scheduler_address, name="by-hand") as w:
            info = cluster.scheduler_info["workers"][w.address]
            assert info["kind"] == "remote" and info["name"] == "by-hand"
            with Client(cluster, set_as_default=False) as client:
                assert client.submit(inc, 2).result() == 3
                # the TCP worker runs functions, and its tasks reach the scheduler too
                assert client.run(lambda dask_worker: (dask_worker.address,
                                                       dask_worker.name)) == \
                    {w.address: (w.address, "by-hand")}
                assert client.submit(fib, 5).result(timeout=60) == 5
        assert w.address not in cluster.scheduler_info["workers"]


def test_bad_arguments():
    with pytest.raises(TypeError, match="address"):
        Worker()
    with pytest.raises(ValueError):
        Worker("not an address:xyz")
    with pytest.raises(ValueError, match="nthreads"):
        Worker("tcp://127.0.0.1:1", nthreads=0)
    with pytest.raises(TypeError, match="unexpected"):
        Scheduler(bogus=1)
    with pytest.raises(RuntimeError, match="not started"):
        Scheduler().address  # noqa: B018


@pytest.mark.slow
def test_tutorial_snippet_side_by_side_with_dask_distributed():
    """dask's hand-assembled cluster, with only the import changed."""
    distributed = pytest.importorskip("distributed")
    import shmdask.distributed as ours

    def run(mod):
        async def main():
            async with mod.Scheduler(dashboard_address=":0") as s:
                async with mod.Worker(s.address) as w:
                    async with mod.Worker(s.address):
                        n = len(s.workers)
                        assert w.address in s.workers
            return n

        return asyncio.run(main())

    assert run(ours) == run(distributed) == 2
