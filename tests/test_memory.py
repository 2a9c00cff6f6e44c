"""The memory budget, with real worker processes: shared memory charged to its
owner, spilling to disk, pausing, bounded peaks, and no leftovers on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest
from conftest import wait_for

import shmdask
import shmdask.array as da
from shmdask.client import Client, wait
from shmdask.cluster import shm
from shmdask.cluster.local_cluster import LocalCluster
from shmdask.cluster.spill import SpillDir, is_file_block, spill_directory
from shmdask.cluster.store import ShmStore

MB = 1_000_000
WORKTREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def filled(value, n):
    return np.full(n, value, dtype=float)


def plus_one_sum(x):
    return float((x + 1).sum())


def spill_files(cluster) -> list[str]:
    try:
        return os.listdir(cluster._runtime.spill_dir)
    except FileNotFoundError:
        return []


def metrics(cluster) -> dict:
    return {w: i["metrics"] for w, i in cluster.scheduler_info()["workers"].items()}


def chunks_on_workers(client, n: int) -> list:
    """``n`` futures of 8 MB arrays filled with 0, 1, ... (ready when returned)."""
    futures = [client.submit(filled, i, MB, pure=False) for i in range(n)]
    wait(futures, timeout=60)
    return futures


def wait_persisted(collection) -> None:
    wait(list(collection.__shmdask_graph__().values()), timeout=60)


# -- the spill folder on its own ------------------------------------------------------


def test_spill_files_map_read_only_and_zero_copy(tmp_path):
    spill = SpillDir(str(tmp_path / "spill"), "w")
    data = np.arange(10_000, dtype=float)
    (ref,) = spill.write([memoryview(data).cast("B")])
    assert is_file_block(ref) and ref[2] == data.nbytes
    assert not is_file_block(("shmdask-1p2-worker-0-3", 0, 10))
    cache = shm.MappingCache()
    view = cache.view(*ref)
    back = np.frombuffer(view, dtype=float)
    assert np.array_equal(back, data)
    with pytest.raises((TypeError, ValueError)):
        back[0] = 1.0  # read-only, like a shm block
    del back, view
    cache.forget([ref[0]])
    spill.close()
    assert not os.path.exists(spill.path)


def test_blocks_a_spill_swaps_out_wait_for_a_send_that_started_before(tmp_path):
    """A remote client's fetch sends views of shared memory after the reply is
    built: a spill meanwhile must not free (and so hand out again) those blocks."""
    store = ShmStore(f"t{os.getpid()}reads", spill_dir=str(tmp_path / "spill"))
    try:
        value = store.from_user(np.full(MB, 7.0))
        read = store.begin_read()  # as the fetch reply does, until it is sent
        out = store.outgoing(value)
        assert store.spill("client", 1) == 8 * MB
        assert store.shm_bytes == 0 and store.spilled_bytes == 8 * MB
        store.collect_frees()
        reused = store.from_user(np.full(MB, 9.0))  # would take the freed block
        assert np.array_equal(np.frombuffer(out.buffers[0], dtype=float), np.full(MB, 7.0))
        store.end_read(read)
        store.collect_frees()
        assert store._pending_frees == []  # now the old blocks went back
        assert np.array_equal(store.to_user(value), np.full(MB, 7.0))  # from the file
        del out
        store.release([value, reused])
    finally:
        store.close()


def test_config_thresholds_after_dask():
    assert [shmdask.config.get(f"memory.{n}") for n in ("target", "spill", "pause",
                                                        "terminate")] == [0.6, 0.7, 0.8, 0.95]
    with shmdask.config.set({"distributed.worker.memory.pause": 0.5}):
        assert shmdask.config.memory_fraction("pause") == 0.5
    with shmdask.config.set({"memory.target": False}):
        assert shmdask.config.memory_fraction("target") is None
    with pytest.raises(ValueError, match="memory.spill"):
        shmdask.config.set({"memory.spill": 1.5})
    with pytest.raises(TypeError, match="temporary_directory"):
        shmdask.config.set(temporary_directory=3)


# -- accounting -------------------------------------------------------------------------


def test_budget_counts_shared_memory_charged_to_its_owner():
    with LocalCluster(n_workers=2, memory_limit="2GB") as c, \
            Client(c, set_as_default=False) as client:
        futures = [client.submit(filled, i, 2 * MB, pure=False) for i in range(4)]  # 16 MB each
        wait(futures, timeout=60)
        m = metrics(c)
        assert sum(w["managed_bytes"] for w in m.values()) == 4 * 16 * MB
        for w in m.values():
            assert w["shm"] >= w["managed_bytes"]  # its segments (plus free cache)
            assert w["memory"] == w["shm"] + w["private"] > 0
            assert w["spilled_bytes"] == {"memory": w["managed_bytes"], "disk": 0}
        # a worker that reads another's block is not charged for it
        total = client.gather(client.submit(sum, [client.submit(plus_one_sum, f)
                                                  for f in futures]))
        assert total == sum((i + 1) * 2 * MB for i in range(4))
        assert sum(w["managed_bytes"] for w in metrics(c).values()) == 4 * 16 * MB
        # the client's own copy counts too
        [big] = client.scatter([np.ones(2 * MB)])
        info = c.scheduler_info()
        assert info["memory"]["client"]["managed_bytes"] == 16 * MB
        assert info["memory"]["client"]["shm"] >= 16 * MB
        assert info["memory"]["limit"] == 2 * 10**9
        del big, futures


# -- spilling ---------------------------------------------------------------------------


def test_spilling_keeps_a_worker_under_its_target_and_values_stay_right():
    with LocalCluster(n_workers=1, memory_limit="160MB") as c, \
            Client(c, set_as_default=False) as client:
        futures = chunks_on_workers(client, 30)
        (wid,) = c.workers

        def settled():
            m = metrics(c)[wid]
            return m["spilled_bytes"]["disk"] > 0 and m["memory"] <= 0.75 * 160 * MB

        wait_for(settled, 30, "spilling under the target")
        m = metrics(c)[wid]
        assert m["managed_bytes"] + m["spilled_bytes"]["disk"] == 30 * 8 * MB
        assert spill_files(c)
        # spilled values come back right, to tasks (mapped) and to the client (copied)
        sums = client.gather([client.submit(plus_one_sum, f) for f in futures])
        assert sums == [(i + 1) * MB for i in range(30)]
        values = client.gather(futures)
        assert all(np.array_equal(v, np.full(MB, i)) for i, v in enumerate(values))
        values[0][0] = -1.0  # what the user gets is private and writeable
        # releasing spilled keys deletes their files
        client.cancel(futures)
        del futures, values
        wait_for(lambda: not spill_files(c), 20, "spill files to go")
        assert c.store.spilled_bytes == 0


def test_lru_spills_what_was_read_least_recently():
    with LocalCluster(n_workers=1, memory_limit="4GB") as c, \
            Client(c, set_as_default=False) as client:
        futures = chunks_on_workers(client, 4)
        (wid,) = c.workers
        client.gather(client.submit(plus_one_sum, futures[0]))  # touch the oldest
        moved = c.store.spill(wid, 8 * MB)
        assert moved == 8 * MB
        keys = [f.key for f in futures]
        spilled = c.engine.call(lambda e: [all(is_file_block(b) for b in e.data[k].blocks)
                                           for k in keys])
        assert spilled == [False, True, False, False]
        assert client.gather(client.submit(plus_one_sum, futures[1])) == 2 * MB


# -- pause and terminate ----------------------------------------------------------------


def hold_private_memory(nbytes, seconds):
    """Take ``nbytes`` of private memory for ``seconds`` (a background thread lets go)."""
    import builtins

    builtins._shmdask_test_hold = np.ones(nbytes // 8)
    threading.Timer(seconds, lambda: delattr(builtins, "_shmdask_test_hold")).start()
    return os.getpid()


def nap(i):
    time.sleep(0.05)
    return i


def test_a_paused_worker_gets_no_new_tasks():
    config = {"memory.target": False, "memory.spill": False, "memory.pause": 0.5,
              "memory.terminate": False}
    with shmdask.config.set(config), LocalCluster(n_workers=2, memory_limit="300MB") as c, \
            Client(c, set_as_default=False) as client:
        pid = client.submit(hold_private_memory, 200 * MB, 4, pure=False).result(30)
        hog = next(w for w, h in c.workers.items() if h.pid == pid)
        wait_for(lambda: metrics(c)[hog]["paused"], 20, "the worker to pause")
        with client.get_task_stream() as ts:
            assert client.gather(client.map(nap, range(12))) == list(range(12))
        assert {r["worker"] for r in ts.data if r["key"][0].startswith("nap")} != {hog}
        assert hog not in {r["worker"] for r in ts.data}
        # once it is back under the pause threshold it works again
        wait_for(lambda: not metrics(c)[hog]["paused"], 20, "the worker to resume")
        seen = set()
        for _ in range(20):
            with client.get_task_stream() as ts:
                client.gather(client.map(nap, range(100, 108), pure=False))
            seen |= {r["worker"] for r in ts.data}
            if hog in seen:
                break
        assert hog in seen


def test_a_worker_above_its_target_is_marked_for_tasks_that_free_memory():
    # (which task the engine then picks first: test_engine, with fake workers)
    config = {"memory.target": 0.5, "memory.spill": False, "memory.pause": False,
              "memory.terminate": False}
    with shmdask.config.set(config), LocalCluster(n_workers=1, memory_limit="300MB") as c, \
            Client(c, set_as_default=False) as client:
        (handle,) = c.workers.values()
        assert not handle.above_target
        client.submit(hold_private_memory, 200 * MB, 3, pure=False).result(30)
        wait_for(lambda: handle.above_target, 20, "the worker to pass its target")
        wait_for(lambda: not handle.above_target, 30, "the worker to fall below it")


# -- larger than the budget -------------------------------------------------------------


class PeakSampler:
    """Peak of the workers' private memory plus the cluster's shared memory."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        procs = {}
        while not self._stop.wait(0.01):
            private = 0
            for h in list(self.cluster.workers.values()):
                try:
                    p = procs.setdefault(h.pid, psutil.Process(h.pid))
                    mem = p.memory_info()
                    private += mem.rss - mem.shared
                except psutil.Error:
                    pass
            shared = sum(shm.bytes_by_owner(self.cluster.id).values())
            self.peak = max(self.peak, private + shared)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_persist_four_times_the_budget_with_a_bounded_peak():
    limit = 128 * MB
    n = 4 * 2 * limit // 8  # float64 elements: 4x the budget of two workers
    with LocalCluster(n_workers=2, memory_limit=limit) as c, \
            Client(c, set_as_default=False) as client, PeakSampler(c) as peak:
        x = da.arange(n, chunks=MB, dtype=float)  # 8 MB chunks
        x = client.persist(x)
        wait_persisted(x)
        assert float(x.sum().compute(scheduler=client)) == n * (n - 1) / 2
        std = float((x + 1).std().compute(scheduler=client))
        assert std == pytest.approx(np.sqrt((n * n - 1) / 12), rel=1e-9)
        assert c.store.bytes_spilled_total + sum(
            i["metrics"]["spilled_bytes"]["disk"] for i in c.scheduler_info()["workers"].values()
        ) > 0
        del x
    assert peak.peak <= 1.25 * 2 * limit, f"peak {peak.peak / MB:.0f} MB"


# -- cleanup ----------------------------------------------------------------------------


SPILLING_SCRIPT = """
import os, signal, sys, time
import numpy as np
import shmdask
from shmdask.distributed import Client, LocalCluster

shmdask.config.set(temporary_directory=sys.argv[1])
cluster = LocalCluster(n_workers=1, memory_limit="64MB")
client = Client(cluster)
chunks = [client.submit(np.full, 1_000_000, i, pure=False) for i in range(12)]
print(client.gather([client.submit(np.sum, c) for c in chunks]))
spill = cluster.scheduler_info()["memory"]["spill_directory"]
while not os.listdir(spill):
    time.sleep(0.05)
print("spill", spill, cluster.id, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
client.close()
cluster.close()
print("closed", os.path.exists(spill), flush=True)
"""


@pytest.mark.parametrize("ending", ["close", "kill"])
def test_spill_folder_is_gone_after_close_and_after_a_killed_client(tmp_path, ending):
    script = tmp_path / "spilling.py"
    script.write_text(SPILLING_SCRIPT)
    env = {**os.environ, "PYTHONPATH": WORKTREE}
    out = subprocess.run([sys.executable, str(script), str(tmp_path), ending], env=env,
                         capture_output=True, text=True, timeout=90)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("spill ")), None)
    assert line, out.stderr
    _, spill, cluster_id = line.split()
    assert spill == spill_directory(cluster_id, tmp_path)
    if ending == "close":
        assert out.returncode == 0, out.stderr
        assert "closed False" in out.stdout
    else:
        assert out.returncode == -signal.SIGKILL
        wait_for(lambda: not os.path.exists(spill), 15, "the janitor to remove the spill folder")
        wait_for(lambda: not shm.list_segments(shm.cluster_prefix(cluster_id)), 15,
                 "the janitor to sweep shm")


# -- a small /dev/shm -------------------------------------------------------------------


SMALL_SHM_SCRIPT = """
import os, threading, time
import numpy as np
import psutil
import shmdask.array as da
from shmdask.distributed import Client, LocalCluster

assert os.statvfs("/dev/shm").f_blocks * os.statvfs("/dev/shm").f_frsize <= 64 << 20
me = psutil.Process()
base = me.memory_info()
peak = [0]
stop = threading.Event()

def sample():
    while not stop.wait(0.01):
        m = me.memory_info()
        peak[0] = max(peak[0], (m.rss - m.shared) - (base.rss - base.shared))

with LocalCluster(n_workers=2, memory_limit="1GB") as cluster, Client(cluster) as client:
    threading.Thread(target=sample, daemon=True).start()
    x = da.ones((4000, 4000), chunks=500)  # 128 MB in 2 MB chunks: twice /dev/shm
    x = x + da.arange(4000, chunks=500)
    y = client.persist(x + x.T)
    total = float(y.sum().compute())
    spilled = sum(i["metrics"]["spilled_bytes"]["disk"]
                  for i in cluster.scheduler_info()["workers"].values())
    stop.set()
    print("result", total, spilled, peak[0], flush=True)
"""


def test_a_small_dev_shm_spills_to_disk_not_into_the_client(tmp_path):
    if sys.platform != "linux":
        pytest.skip("mount namespaces are Linux only")
    script = tmp_path / "small_shm.py"
    script.write_text(SMALL_SHM_SCRIPT)
    env = {**os.environ, "PYTHONPATH": WORKTREE}
    command = (f"mount -t tmpfs -o size=64m tmpfs /dev/shm && "
               f"exec {sys.executable} {script}")
    try:
        out = subprocess.run(["unshare", "-m", "sh", "-c", command], env=env,
                             capture_output=True, text=True, timeout=110)
    except FileNotFoundError:
        pytest.skip("no unshare here")
    if out.returncode != 0 and ("unshare" in out.stderr or "mount" in out.stderr) \
            and "result" not in out.stdout:
        pytest.skip(f"cannot make a private /dev/shm here: {out.stderr.strip()[:200]}")
    assert out.returncode == 0, out.stderr
    _, total, spilled, peak = next(ln for ln in out.stdout.splitlines()
                                   if ln.startswith("result")).split()
    expected = 2 * (4000 * 4000 + 4000 * 3999 / 2 * 4000)  # sum(x + x.T) = 2 sum(x)
    assert float(total) == expected
    assert int(spilled) >= 128 * MB - (64 << 20)  # what /dev/shm cannot hold is on disk ...
    assert int(peak) < 48 << 20  # ... and none of it in the client


# -- uploads over TCP -------------------------------------------------------------------


def test_uploads_from_a_remote_client_stay_inside_the_budget():
    # a small budget, to keep the upload small: the worker's own baseline would
    # pass its pause and terminate thresholds, so those are off here
    small = {"memory.pause": False, "memory.terminate": False}
    with shmdask.config.set(small), LocalCluster(n_workers=1, memory_limit="64MB",
                                                 listen=True) as c, \
            Client(c.scheduler_address, set_as_default=False) as remote:
        arrays = [np.full(MB, float(i)) for i in range(8)]  # 64 MB: the whole budget
        futures = remote.scatter(arrays)
        wait(futures, timeout=30)
        held = c.store.memory_by_owner()["client"]
        assert held["managed"] + held["spilled"] == 64 * MB
        assert held["managed"] <= 0.7 * 64 * MB  # the rest went to spill files as it came
        assert held["spilled"] > 0
        assert c.store.allocator.spilled_results > 0  # written to disk as they arrived
        sums = remote.gather([remote.submit(plus_one_sum, f) for f in futures])
        assert sums == [(i + 1) * MB for i in range(8)]
        back = remote.gather(futures)
        assert all(np.array_equal(a, b) for a, b in zip(arrays, back, strict=True))
        remote.cancel(futures)


def hog(nbytes):
    block = np.ones(nbytes // 8)  # private memory, not shm
    time.sleep(2)
    return float(block.sum())


def test_a_restarted_worker_leaves_its_data_readable_and_it_goes_to_disk():
    from shmdask.cluster.local_cluster import WorkerMemoryWarning
    from shmdask.scheduler.state import KilledWorker

    with LocalCluster(n_workers=1, memory_limit="200MB") as c, \
            Client(c, set_as_default=False) as client:
        futures = chunks_on_workers(client, 4)
        (old,) = c.workers
        with pytest.warns(WorkerMemoryWarning, match="exceeded its memory limit"), \
                pytest.raises(KilledWorker):
            client.submit(hog, 400 * MB, pure=False).result(60)
        wait_for(lambda: c.workers and old not in c.workers, 30, "a replacement")
        # the dead worker's values are moved out of its shared memory ...
        wait_for(lambda: c.store.memory_by_owner()[old]["managed"] == 0, 20, "spilling")
        wait_for(lambda: not shm.list_segments(shm.cluster_prefix(c.id, old)), 20,
                 "its segments to go")
        # ... and stay right
        sums = client.gather([client.submit(plus_one_sum, f) for f in futures])
        assert sums == [(i + 1) * MB for i in range(4)]
        client.cancel(futures)
