"""The cluster object and the client verbs that manage it: scale, adapt, retire_workers,
run, upload_file, logs, scheduler views, shutdown."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time

import numpy as np
import pytest
from conftest import wait_for

from shmdask.client import Client
from shmdask.cluster import shm
from shmdask.cluster.local_cluster import LocalCluster


def slow_square(x: float) -> float:
    time.sleep(0.3)
    return x * x


def pid() -> int:
    return os.getpid()


# -- scale / retire ---------------------------------------------------------------------


def test_scale_up_and_down_keeps_data():
    with LocalCluster(n_workers=1) as cluster, Client(cluster, set_as_default=False) as c:
        cluster.scale(3)
        assert len(cluster.workers) == 3
        assert len(c.scheduler_info()["workers"]) == 3
        # data made on every worker, in shared memory
        futures = c.map(lambda i: np.full(50_000, i), range(12))
        c.gather(futures)
        keys = [f.key for f in futures]
        owners = cluster.engine.call(lambda e: {e.data[k].owner for k in keys})
        assert len(owners) >= 2
        cluster.scale(1)
        assert len(cluster.workers) == 1
        assert list(cluster.workers) == ["worker-0"]  # the newest went first
        # the retired workers' results are still there, and still right
        values = c.gather(futures)
        assert [int(v[0]) for v in values] == list(range(12))
        assert c.submit(lambda: 7).result() == 7
        # the note is written once the retired process has exited, a moment later
        wait_for(lambda: "retired worker-2" in cluster.get_logs()["Cluster"],
                 what="the retirement in the cluster's log")
        # once released, the retired workers' segments are unlinked (cluster still up)
        retired = tuple(shm.cluster_prefix(cluster.id, w) for w in ("worker-1", "worker-2"))
        del futures, values
        gc.collect()
        wait_for(lambda: not [n for n in os.listdir(shm.SHM_DIR) if n.startswith(retired)],
                 what="the retired workers' segments to go")
        with pytest.raises(ValueError):
            cluster.scale(-1)
        with pytest.raises(TypeError):
            cluster.scale("3")


def test_scale_down_lets_busy_workers_finish():
    with LocalCluster(n_workers=2) as cluster, Client(cluster, set_as_default=False) as c:
        futures = c.map(slow_square, range(4))
        wait_for(lambda: all(cluster.engine.busy(w) for w in cluster.workers), what="busy")
        cluster.scale(1)  # both busy: one retires after its tasks, none is lost
        assert sorted(c.gather(futures)) == [0, 1, 4, 9]
        wait_for(lambda: len(cluster.workers) == 1, what="one worker left")
        # nothing counted as a crash
        assert cluster._runtime.replacements == 0


def test_retire_workers_from_the_client():
    with LocalCluster(n_workers=3) as cluster, Client(cluster, set_as_default=False) as c:
        info = c.retire_workers(workers=["worker-1"])
        assert list(info) == ["worker-1"] and info["worker-1"]["nthreads"] == 1
        assert sorted(cluster.workers) == ["worker-0", "worker-2"]
        info = c.retire_workers(n=1)
        assert len(info) == 1 and len(cluster.workers) == 1
        with pytest.raises(KeyError, match="no worker"):
            c.retire_workers(workers=["worker-9"])
        assert c.submit(lambda: 1).result() == 1


def test_adapt_scales_up_under_load_and_down_when_idle():
    with LocalCluster(n_workers=0) as cluster, Client(cluster, set_as_default=False) as c:
        adaptive = cluster.adapt(minimum=1, maximum=3, interval="100ms", wait_count=2,
                                 target_duration="200ms")
        wait_for(lambda: len(cluster.workers) == 1, what="the minimum")
        futures = c.map(slow_square, range(30))
        wait_for(lambda: len(cluster.workers) == 3, what="scaling up")
        assert len(cluster.workers) <= 3
        assert sum(c.gather(futures)) == sum(i * i for i in range(30))
        wait_for(lambda: len(cluster.workers) == 1, what="scaling down")
        assert [d for _, d, _ in adaptive.log][:1] == ["up"] and "down" in \
            [d for _, d, _ in adaptive.log]
        with pytest.raises(ValueError, match="above maximum"):
            cluster.adapt(minimum=3, maximum=1)
    assert not adaptive.running  # stopped with the cluster


# -- run / upload_file / logs ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pair():
    with LocalCluster(n_workers=2) as cluster, Client(cluster, set_as_default=False) as c:
        yield cluster, c


def test_run_on_every_worker(pair):
    cluster, c = pair
    pids = c.run(pid)
    assert pids == {wid: h.pid for wid, h in cluster.workers.items()}
    assert c.run(lambda x, y=0: x + y, 1, y=2) == {w: 3 for w in cluster.workers}
    assert c.run(lambda dask_worker: dask_worker.address) == {w: w for w in cluster.workers}
    assert list(c.run(pid, workers=["worker-1"])) == ["worker-1"]
    with pytest.raises(ZeroDivisionError):
        c.run(lambda: 1 / 0)
    errors = c.run(lambda: 1 / 0, on_error="return")
    assert all(isinstance(e, ZeroDivisionError) for e in errors.values())
    assert c.run(lambda: 1 / 0, on_error="ignore") == {}
    with pytest.raises(KeyError, match="no worker"):
        c.run(pid, workers=["nope"])
    with pytest.raises(TypeError):
        c.run(3)


def test_run_on_scheduler(pair):
    cluster, c = pair
    assert c.run_on_scheduler(pid) == os.getpid()  # a LocalCluster's scheduler is here
    assert c.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.workers)) == \
        sorted(cluster.workers)
    with pytest.raises(ZeroDivisionError):
        c.run_on_scheduler(lambda: 1 / 0)


def test_upload_file_reaches_current_and_later_workers(pair, tmp_path):
    cluster, c = pair
    module = tmp_path / "shmdask_uploaded_mod.py"
    module.write_text("VALUE = 1\ndef f(x):\n    return x + VALUE\n")
    assert set(c.upload_file(str(module))) == set(cluster.workers)

    def use(x):
        import shmdask_uploaded_mod

        return shmdask_uploaded_mod.f(x)

    assert c.submit(use, 1, pure=False).result() == 2
    module.write_text("VALUE = 10\ndef f(x):\n    return x + VALUE\n")
    c.upload_file(str(module))  # a new version replaces the old one
    assert set(c.run(use, 1).values()) == {11}
    cluster.scale(3)
    try:
        assert c.run(use, 1)["worker-2"] == 11
    finally:
        cluster.scale(2)
    assert "shmdask_uploaded_mod" not in sys.modules  # only the workers load it
    with pytest.raises(FileNotFoundError):
        c.upload_file(str(tmp_path / "missing.py"))
    bad = tmp_path / "data.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match=".py"):
        c.upload_file(str(bad))


def test_logs(pair):
    cluster, c = pair
    c.run(lambda: __import__("logging").getLogger("shmdask.test").warning("hello from worker"))
    logs = cluster.get_logs()
    assert {"Cluster", "Scheduler", *cluster.workers} <= set(logs)
    assert "started" in logs["Cluster"]
    assert all("hello from worker" in logs[w] for w in cluster.workers)
    worker_logs = c.get_worker_logs()
    assert all(any("hello from worker" in line for _, line in lines)
               for lines in worker_logs.values())
    assert isinstance(c.get_scheduler_logs(), list)
    assert set(cluster.get_logs(cluster=False, scheduler=False, workers=["worker-0"])) \
        == {"worker-0"}


def test_cluster_views(pair):
    cluster, c = pair
    info = cluster.scheduler_info
    assert set(info["workers"]) == set(cluster.workers)  # dask's attribute...
    assert cluster.scheduler_info() == info  # ...and shmdask's call
    workers = cluster.scheduler.workers
    assert set(workers) == set(cluster.workers)
    assert all(w.nthreads == 1 and w.pid for w in workers.values())
    assert cluster.scheduler.address == cluster.address
    held = c.submit(lambda: 5)
    held.result()
    assert held.key in cluster.scheduler.tasks
    assert cluster.dashboard_link.startswith("http://127.0.0.1:")  # served by default
    assert cluster.dashboard_link.endswith("/status")
    assert c.cluster is cluster
    c.wait_for_workers(2, timeout=5)
    with pytest.raises(TimeoutError):
        c.wait_for_workers(5, timeout=0.2)


# -- over TCP, and shutting down ---------------------------------------------------------------


def test_remote_client_verbs_and_shutdown():
    cluster = LocalCluster(n_workers=1, listen=True)
    try:
        with Client(cluster.scheduler_address, set_as_default=False) as remote:
            assert remote.cluster is None
            assert remote.run(pid) == {"worker-0": cluster.workers["worker-0"].pid}
            assert remote.run_on_scheduler(pid) == os.getpid()
            cluster.scale(2)
            assert len(remote.retire_workers(n=1)) == 1
            remote.shutdown()
            assert remote.closed
        wait_for(lambda: cluster.closed, what="the cluster to close")
    finally:
        cluster.close()


def test_shutdown_closes_a_cluster_the_client_does_not_own():
    cluster = LocalCluster(n_workers=1)
    client = Client(cluster, set_as_default=False)
    client.shutdown()
    assert client.closed and cluster.closed


@pytest.mark.slow
def test_scale_side_by_side_with_dask_distributed():
    """scale() up then down: the same worker counts as dask's LocalCluster."""
    distributed = pytest.importorskip("distributed")
    counts = []
    dc = distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=":0")
    try:
        with distributed.Client(dc) as dclient:
            for n in (3, 1):
                dc.scale(n)
                dclient.wait_for_workers(n)
                wait_for(lambda n=n: len(dc.scheduler_info["workers"]) == n, timeout=60,
                         what="dask")
                counts.append(len(dc.scheduler_info["workers"]))
    finally:
        # distributed's close may hear of a worker it has dropped already and
        # raise KeyError in SpecCluster._update_worker_status: a race of its
        # own teardown, not part of what this test compares.
        with contextlib.suppress(KeyError):
            dc.close()
    ours = []
    with LocalCluster(n_workers=1) as cluster:
        for n in (3, 1):
            cluster.scale(n)
            ours.append(len(cluster.scheduler_info["workers"]))
    assert ours == counts == [3, 1]


def test_shutdown_stops_a_scheduler_served_by_the_command_line():
    import threading

    from shmdask.cli.cluster import serve_scheduler

    ready = threading.Event()
    where: list = []

    def on_ready(address):
        where.append(address)
        ready.set()

    server = threading.Thread(target=serve_scheduler,
                              kwargs={"port": 0, "n_workers": 1, "ready_callback": on_ready},
                              daemon=True)
    server.start()
    assert ready.wait(60)
    client = Client(where[0], set_as_default=False)
    assert client.submit(pid).result(timeout=30) != os.getpid()
    client.shutdown()
    server.join(30)
    assert not server.is_alive()
