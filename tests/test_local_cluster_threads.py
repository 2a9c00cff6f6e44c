"""``LocalCluster(processes=False, ...)`` / ``Client(processes=False, ...)``: workers
of several threads in this process, with a memory limit, shaped and described
as dask.distributed does."""

from __future__ import annotations

import os
import re
import threading

import pytest

from shmdask.distributed import Client, LocalCluster

_REPR = re.compile(r"<Client: '(inproc|tcp)://[^']+' processes=(\d+) threads=(\d+), "
                   r"memory=([\d.]+ \w+)>")


def _wait_at(barrier):
    barrier.wait(timeout=30)  # returns only when all parties run at once
    return threading.current_thread().name


def test_one_worker_of_four_threads_with_a_memory_limit():
    with Client(processes=False, n_workers=1, threads_per_worker=4, memory_limit="2GB",
                set_as_default=False) as client:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 1
        [info] = workers.values()
        assert info["nthreads"] == 4 and info["memory_limit"] == 2_000_000_000
        assert client.nthreads() == {"thread-0": 4}
        m = _REPR.fullmatch(repr(client))
        assert m and m.groups()[1:] == ("1", "4", "1.86 GiB")
        barrier = threading.Barrier(4)
        names = client.gather(client.map(_wait_at, [barrier] * 4, pure=False))
        assert len(set(names)) == 4  # four threads, at the same time


def test_defaults_and_shapes_as_dask():
    cores = os.cpu_count() or 1
    with LocalCluster(processes=False) as cluster:  # dask: one worker, a thread per core
        info = cluster.scheduler_info()["workers"]
        assert [w["nthreads"] for w in info.values()] == [cores]
    with LocalCluster(processes=False, n_workers=2, threads_per_worker=1) as cluster:
        assert sorted(w["nthreads"] for w in cluster.scheduler_info()["workers"].values()) \
            == [1, 1]
    with pytest.raises(ValueError, match="threads_per_worker"):
        LocalCluster(processes=False, n_workers=1, threads_per_worker=0)
    with pytest.raises(TypeError, match=r"processes=False\) takes"):
        LocalCluster(processes=False, scheduler_file="x")


def test_same_description_as_dask_distributed():
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=4,
                            memory_limit="2GB", dashboard_address=":0") as theirs:
        expected = _REPR.fullmatch(repr(theirs)).groups()[1:]
        their_threads = list(theirs.nthreads().values())
    with Client(processes=False, n_workers=1, threads_per_worker=4, memory_limit="2GB",
                set_as_default=False) as ours:
        assert _REPR.fullmatch(repr(ours)).groups()[1:] == expected
        assert list(ours.nthreads().values()) == their_threads
