"""LocalCluster end to end, with real worker processes."""

import contextlib
import gc
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import mapped_file, wait_for

import shmdask
from shmdask.cluster import shm
from shmdask.cluster.local_cluster import (
    LocalCluster,
    WorkerMemoryWarning,
    parse_memory_limit,
)
from shmdask.scheduler.state import KilledWorker, TaskExit

WORKTREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def leftover_segments(prefix: str = shm.PREFIX) -> list[str]:
    return [n for n in os.listdir(shm.SHM_DIR) if n.startswith(prefix)]


# (tests/conftest.py checks after every module that no segment of a cluster made
# by this process is left in /dev/shm)


class EngineScheduler:
    """The smallest scheduler object over a cluster's engine (``run_graph``)."""

    def __init__(self, cluster: LocalCluster):
        self.engine = cluster.engine

    def run_graph(self, dsk, dependencies, keys, priorities):
        done = threading.Event()
        status: dict = {}
        remaining = set(keys)

        def listener(key, st, exc):
            status[key] = (st, exc)
            remaining.discard(key)
            if not remaining:
                done.set()

        self.engine.submit(dsk, dependencies, keys, priorities, listener)
        assert done.wait(60), "graph did not finish"
        try:
            for st, exc in status.values():
                if st == "erred":
                    raise exc
            return self.engine.call(lambda e: {k: e.store.to_user(e.data[k]) for k in keys})
        finally:
            self.engine.unwant(keys)


def get(cluster, dsk, keys, optimize_graph=True):
    """shmdask.get on the cluster's engine (nested tuples for key lists, like dask.get)."""
    return shmdask.get(dsk, keys, scheduler=EngineScheduler(cluster),
                       optimize_graph=optimize_graph)


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=None) as c:
        yield c


# -- tasks (module level: importable in the workers) ----------------------------------


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def ones(n, fill=1.0):
    return np.full(n, fill)


def total(x):
    return float(x.sum())


def pid_and_total(x):
    return os.getpid(), float(x.sum())


def write_into(x):
    x[0] = 99
    return x


def boom(x):
    raise ValueError(f"boom {x}")


def die(x):
    os._exit(3)


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return os.getpid()


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


# -- basics -------------------------------------------------------------------------


def test_chains_and_small_values(cluster):
    dsk = {("a", i): (inc, i) for i in range(50)}
    dsk.update({("b", i): (add, ("a", i), ("a", (i + 1) % 50)) for i in range(50)})
    dsk["s"] = (sum, [("b", i) for i in range(50)])
    assert get(cluster, dsk, "s") == sum(2 * (i + 1) for i in range(50))
    assert get(cluster, dsk, [("a", 3), ["s"]]) == (4, (2550,))  # like dask.get


def as_bytes(x):
    return str(x).encode()


def test_small_immutable_results_are_held_as_themselves(cluster):
    """A number or a short string travels and is held without a Stored around
    it; it feeds a task on either worker and comes back as the same value."""
    from shmdask.cluster.protocol import Stored
    from shmdask.graph import dependencies_of

    dsk = {("n", i): (inc, i) for i in range(20)}  # spread over both workers
    dsk.update({("s", i): (as_bytes, ("n", i)) for i in range(20)})
    dsk["f"] = (np.float64, 0.5)
    dsk["long"] = (str, "x" * 1000)
    dsk["arr"] = (ones, 3)
    dsk["all"] = (sum, [("n", i) for i in range(20)])
    keys = [("n", 0), ("s", 7), "f", "long", "arr", "all"]
    engine = cluster.engine
    done = threading.Event()
    engine.submit(dsk, dependencies_of(dsk), keys, {},
                  lambda key, status, exc: done.set() if key == "all" else None)
    try:
        assert done.wait(30)
        held = engine.call(lambda e: {k: e.data[k] for k in keys})
        assert held[("n", 0)] == 1 and type(held[("n", 0)]) is int
        assert held[("s", 7)] == b"8" and held["f"] == 0.5
        assert type(held["f"]) is np.float64
        assert held["all"] == sum(range(1, 21))
        assert type(held["long"]) is Stored and type(held["arr"]) is Stored
        records = {r["key"]: r for r in engine.task_stream.records_since(0)}
        assert records[("n", 0)]["where"] == "inline" and records[("n", 0)]["nbytes"] > 0
    finally:
        engine.unwant(keys)
    assert get(cluster, dsk, [("s", 19), "f", "long"]) == (b"20", 0.5, "x" * 1000)


def test_large_results_live_in_shm_and_come_back_writeable(cluster):
    dsk = {"x": (ones, 1_000_000, 2.0), "y": (add, "x", 1.0), "t": (total, "y")}
    y, t = get(cluster, dsk, ["y", "t"])
    assert t == 3.0 * 1_000_000
    assert y.flags.writeable
    y[0] = -1  # a private copy: nothing shared changes
    records = {r["key"]: r for r in cluster.engine.records}
    assert records["y"]["where"] == "shm" and records["y"]["nbytes"] >= 8_000_000
    assert records["t"]["where"] == "inline"
    rec = records["y"]  # x was fused into y
    assert rec["worker"] in cluster.workers or rec["worker"].startswith("worker-")
    assert rec["lane"] == rec["worker"] + "/0"
    assert rec["kind"] == "compute" and rec["remote"] is False
    assert rec["group"] == "y" and rec["start"] <= rec["stop"]


def test_task_inputs_are_read_only(cluster):
    dsk = {"x": (ones, 100_000), "y": (write_into, "x")}
    with pytest.raises(ValueError, match="read-only"):
        get(cluster, dsk, "y", optimize_graph=False)  # no fusing: x arrives from the store
    # small (inline) inputs are read-only too: one rule for every input
    dsk = {"x": (ones, 10), "y": (write_into, "x")}
    with pytest.raises(ValueError, match="read-only"):
        get(cluster, dsk, "y", optimize_graph=False)


def test_exceptions_carry_type_message_and_traceback(cluster):
    dsk = {"a": (inc, 1), "b": (boom, "a"), "c": (inc, "b")}
    with pytest.raises(ValueError, match="boom 2") as info:
        get(cluster, dsk, "c")
    assert "boom" in str(info.value.__cause__)  # the remote traceback text


def leave(how):
    if how == "exit":
        sys.exit(3)
    raise KeyboardInterrupt


@pytest.mark.parametrize("how, raised", [("exit", "SystemExit(3)"),
                                         ("interrupt", "KeyboardInterrupt()")])
def test_a_task_that_exits_fails_and_its_worker_lives_on(cluster, how, raised):
    pids = {h.pid for h in cluster.workers.values()}
    with pytest.raises(TaskExit, match=rf"task 'b' raised {re.escape(raised)}"):
        get(cluster, {"a": (inc, 1), "b": (leave, how)}, "b")
    assert get(cluster, {"c": (inc, 1)}, "c") == 2
    assert {h.pid for h in cluster.workers.values()} == pids


def test_unpicklable_task_fails_alone(cluster):
    lock = threading.Lock()
    dsk = {"ok": (inc, 1), "bad": (id, lock)}
    with pytest.raises(TypeError, match="cannot be sent to a worker"):
        get(cluster, dsk, ["ok", "bad"])
    assert get(cluster, {"ok": (inc, 1)}, "ok") == 2


def test_lambdas_and_closures_run(cluster):
    k = 10
    dsk = {("f", i): (lambda v: v * k, i) for i in range(20)}
    assert get(cluster, dsk, [("f", i) for i in range(20)]) == tuple(i * k for i in range(20))


# -- the data plane -----------------------------------------------------------------


def test_large_arrays_never_cross_the_pipes(cluster):
    handles = list(cluster.workers.values())
    sent0 = sum(h.bytes_sent for h in handles)
    received0 = sum(h.bytes_received for h in handles)
    n = 2_000_000  # 16 MB per chunk
    dsk = {("x", i): (ones, n, float(i)) for i in range(4)}
    dsk.update({("t", i): (total, ("x", i)) for i in range(4)})
    keys = [("t", i) for i in range(4)]
    # not fused: the chunks are written by one task and read by another
    assert get(cluster, dsk, keys, optimize_graph=False) == tuple(float(i * n) for i in range(4))
    assert {r["where"] for r in cluster.engine.records[-8:] if r["key"][0] == "x"} == {"shm"}
    moved = (sum(h.bytes_sent for h in handles) - sent0
             + sum(h.bytes_received for h in handles) - received0)
    assert moved < 100_000  # vs 64 MB of chunks written and read


def test_second_reader_maps_the_same_segment(cluster):
    a, b = sorted(cluster.workers.values(), key=lambda h: h.id)
    before = {h.id: h.stats() for h in (a, b)}
    # Many readers of one chunk: whichever worker runs them, the chunk is
    # written once and everybody else maps it, never copies it.
    dsk = {"x": (ones, 1_000_000, 3.0)}
    dsk.update({("r", i): (pid_and_total, "x") for i in range(8)})
    dsk.update({("s", i): (spin, 0.02) for i in range(8)})  # keep both workers busy
    out = get(cluster, dsk, [("r", i) for i in range(8)] + [("s", i) for i in range(8)])
    pids = {pid for pid, _ in out[:8]}
    assert {t for _, t in out[:8]} == {3_000_000.0}
    after = {h.id: h.stats() for h in (a, b)}
    created = sum(after[w]["segments_created"] - before[w]["segments_created"] for w in after)
    assert created <= 1  # the chunk's block (or none: a free slab was reused)
    if len(pids) == 2:  # both workers read it: the non-owner attached the owner's segment
        attached = sum(after[w]["segments_attached"] - before[w]["segments_attached"]
                       for w in after)
        assert attached <= 1


def test_pipeline_reuses_blocks(cluster):
    # A steady pipeline of equal chunks: released blocks are rewritten, not recreated.
    n = 5_000_000  # 40 MB chunks
    dsk = {}
    for i in range(12):
        dsk[("x", i)] = (ones, n, float(i))
        dsk[("t", i)] = (total, ("x", i))
    before = sum(h.stats()["segments_created"] for h in cluster.workers.values())
    keys = [("t", i) for i in range(12)]
    # not fused: every chunk goes through shm
    assert get(cluster, dsk, keys, optimize_graph=False) == tuple(float(i * n) for i in range(12))
    created = sum(h.stats()["segments_created"] for h in cluster.workers.values()) - before
    assert 1 <= created < 12  # as many as chunks alive at once, not one per chunk
    # run it again: every chunk lands in a block that is already there
    wait_for(lambda: cluster.store.shm_bytes == 0, 10, "blocks to be released")
    assert get(cluster, dsk, keys, optimize_graph=False) == tuple(float(i * n) for i in range(12))
    again = sum(h.stats()["segments_created"] for h in cluster.workers.values()) - before
    assert again - created <= 2  # (the engine may spread chunks a little differently)
    # ... and when nothing is wanted any more, no block is live
    wait_for(lambda: cluster.store.shm_bytes == 0, 10, "blocks to be released")


def test_functions_are_pickled_once_per_worker(cluster):
    def scaled(v, _factor=7):
        return v * _factor

    dsk = {("m", i): (scaled, i) for i in range(200)}
    dsk.update({("n", i): (add, ("m", i), 1) for i in range(200)})
    keys = [("n", i) for i in range(200)]
    before = {h.id: h.stats()["functions_loaded"] for h in cluster.workers.values()}
    assert get(cluster, dsk, keys) == tuple(7 * i + 1 for i in range(200))
    assert get(cluster, dsk, keys)[-1] == 7 * 199 + 1  # second run: tokens only
    for h in cluster.workers.values():
        loaded = h.stats()["functions_loaded"] - before[h.id]
        assert loaded <= 2  # scaled and add, each at most once, over both runs


def test_scatter_puts_user_data_in_shm(cluster):
    x = np.arange(1_000_000.0)
    stored = cluster.store.from_user(x)
    assert stored.where == "shm" and stored.owner == "client"
    back = cluster.store.to_user(stored)
    x[0] = 5  # the store took a copy
    assert back[0] == 0 and back.flags.writeable
    cluster.store.release([stored])


def test_scheduler_info_and_repr(cluster):
    info = cluster.scheduler_info()
    assert info["type"] == "Scheduler" and info["id"].startswith("Scheduler-")
    assert isinstance(info["started"], float) and info["address"]
    assert sorted(info["workers"]) == sorted(cluster.workers)
    for wid, w in info["workers"].items():
        assert w["name"] == wid and w["nthreads"] == 1 and w["kind"] == "local"
        assert w["pid"] != os.getpid() and w["host"]
        assert w["memory_limit"] is None
        assert w["metrics"]["memory"] > 1_000_000
        assert w["metrics"]["executing"] >= 0 and w["metrics"]["in_memory"] >= 0
    text = repr(cluster)
    assert "LocalCluster(" in text and "workers=2" in text and "threads=2" in text


# -- construction and options ---------------------------------------------------------


def test_computed_arrays_are_copied_out_of_shared_memory_once(cluster, monkeypatch):
    """The chunks of an array reach finalize as read-only views of shared
    memory (no private copy each); the result is the one copy, writeable and
    independent of the cluster's memory.  Other collections get private copies."""
    import shmdask.array as da
    from shmdask.distributed import Client

    copies = []
    to_user = cluster.store.to_user
    monkeypatch.setattr(cluster.store, "to_user", lambda v: copies.append(v) or to_user(v))
    with Client(cluster, set_as_default=False) as client:
        x = da.arange(600_000, chunks=100_000) * 2.0  # six 800 kB chunks, in shm
        out = x.compute(scheduler=client)
        assert copies == []
        assert np.array_equal(out, np.arange(600_000) * 2.0)
        assert out.flags.writeable and out.flags.owndata
        one = (da.arange(300_000, chunks=300_000) + 1).compute(scheduler=client)
        assert copies == [] and one.flags.writeable
        one[:] = -1  # no view of a block that the cluster recycles
        assert (da.arange(300_000, chunks=300_000) + 1).compute(scheduler=client)[0] == 1
        d = shmdask.delayed(np.ones)(200_000)
        assert d.compute(scheduler=client).flags.writeable
        assert len(copies) == 1  # a Delayed keeps its value as it is: a private copy


def test_bad_arguments_are_clear():
    with pytest.raises(TypeError, match="n_workers"):
        LocalCluster(n_workers="2")
    with pytest.raises(ValueError, match="threads_per_worker"):
        LocalCluster(threads_per_worker=0)
    with pytest.raises(TypeError, match="unexpected keyword.*bogus"):
        LocalCluster(bogus=1)
    with pytest.raises(ValueError, match="memory_limit"):
        LocalCluster(memory_limit="lots")


def test_processes_false_gives_thread_workers():
    from shmdask.distributed import Client

    with LocalCluster(n_workers=2, processes=False) as c, Client(c) as client:
        assert not isinstance(c, LocalCluster)
        info = client.scheduler_info()["workers"]
        assert len(info) == 2 and {w["kind"] for w in info.values()} == {"thread"}
        assert client.submit(inc, 1).result() == 2


def test_parse_memory_limit():
    assert parse_memory_limit(None, 2) is None and parse_memory_limit(0, 2) is None
    assert parse_memory_limit("2GB", 1) == 2_000_000_000
    assert parse_memory_limit("512 MiB", 1) == 512 * 2**20
    assert parse_memory_limit(1234, 1) == 1234
    total = parse_memory_limit("auto", 1)
    assert parse_memory_limit("auto", 4) == total // 4
    assert parse_memory_limit(0.5, 1) == total // 2
    with pytest.raises(ValueError):
        parse_memory_limit("12 parsecs", 1)
    with pytest.raises(TypeError):
        parse_memory_limit([1], 1)


def test_threads_per_worker_run_side_by_side():
    with LocalCluster(n_workers=1, threads_per_worker=2, memory_limit="auto") as c:
        assert c.memory_limit > 0
        dsk = {("s", i): (sleep_then, 0.2, i) for i in range(4)}
        assert get(c, dsk, [("s", i) for i in range(4)]) == (0, 1, 2, 3)
        lanes = {r["lane"] for r in c.engine.records}
        assert lanes == {"worker-0/0", "worker-0/1"}
        info = c.scheduler_info()["workers"]["worker-0"]
        assert info["nthreads"] == 2
    assert c.closed
    c.close()  # idempotent
    assert "closed" in repr(c)


def test_zero_workers_then_tasks_wait():
    with LocalCluster(n_workers=0) as c:
        assert c.workers == {}
        assert c.scheduler_info()["workers"] == {}


# -- through the Client -----------------------------------------------------------------


def test_client_on_a_local_cluster():
    from shmdask.distributed import Client

    with LocalCluster(n_workers=2, memory_limit=None) as c, Client(c) as client:
        x = shmdask.delayed(ones)(1_000_000, 2.0)
        parts = [shmdask.delayed(total)(shmdask.delayed(add)(x, i)) for i in range(4)]
        assert shmdask.compute(*parts, scheduler=client) == tuple(
            2_000_000.0 + i * 1_000_000 for i in range(4))
        # futures: results stay in shm until the last Future goes
        fut = client.submit(ones, 500_000, 3.0)
        arr = fut.result()
        assert arr.flags.writeable and arr.sum() == 1_500_000.0
        assert client.submit(total, fut).result() == 1_500_000.0
        assert c.store.shm_bytes > 0
        del fut
        gc.collect()  # a Future used as an argument sits in a reference cycle
        wait_for(lambda: c.store.shm_bytes == 0, 10, "the future's data to be released")
        # scatter: user data in the client's own shm slabs, read by workers in place
        [big] = client.scatter([np.arange(1_000_000.0)])
        assert client.submit(total, big).result() == float(sum(range(1_000_000)))
        info = client.scheduler_info()
        assert sum(w["metrics"]["in_memory"] for w in info["workers"].values()) >= 0
        with pytest.raises(ValueError, match="boom"):
            client.submit(boom, 1).result()
    assert leftover_segments(shm.cluster_prefix(c.id)) == []


def test_client_restart_replaces_workers_and_drops_data():
    from shmdask.distributed import Client

    with LocalCluster(n_workers=2, memory_limit=None) as c, Client(c) as client:
        fut = client.submit(ones, 1_000_000)
        fut.result()
        pids = {h.pid for h in c.workers.values()}
        client.restart()
        del fut
        wait_for(lambda: len(c.workers) == 2, 30, "new workers")
        assert not pids & {h.pid for h in c.workers.values()}
        assert c.store.shm_bytes == 0
        assert client.submit(inc, 41).result() == 42
    assert leftover_segments(shm.cluster_prefix(c.id)) == []


def test_client_makes_and_closes_its_own_cluster():
    from shmdask.distributed import Client

    with Client(n_workers=2, threads_per_worker=1, memory_limit=None) as client:
        cluster = client.cluster
        assert isinstance(cluster, LocalCluster) and len(cluster.workers) == 2
        assert client.submit(inc, 1).result() == 2
    assert cluster.closed
    assert leftover_segments(shm.cluster_prefix(cluster.id)) == []


# -- failure --------------------------------------------------------------------------


def test_killed_worker_is_replaced_and_its_task_rescheduled():
    with LocalCluster(n_workers=2, memory_limit=None) as c:
        # keep x in memory (wanted) while its owner dies: data in shm survives it
        done = threading.Event()
        c.engine.submit({"x": (ones, 1_000_000, 2.0)}, {"x": set()}, ["x"], None,
                        lambda *a: done.set())
        assert done.wait(30)
        owner = next(r["worker"] for r in c.engine.records if r["key"] == "x")
        victim = c.workers[owner]
        os.kill(victim.pid, signal.SIGKILL)
        wait_for(lambda: owner not in c.workers and len(c.workers) == 2, 30, "replacement")
        assert victim.proc.poll() == -signal.SIGKILL
        assert leftover_segments(shm.cluster_prefix(c.id, owner))  # x's segment stays
        x = c.engine.call(lambda e: e.store.to_user(e.data["x"]))
        assert x.sum() == 2_000_000.0
        # ... and workers still read it
        out = EngineScheduler(c).run_graph({"y": (total, "x")}, {"y": {"x"}}, ["y"], None)
        assert out == {"y": 2_000_000.0}

        # a task running on a worker that dies is rescheduled elsewhere
        result = {}
        t = threading.Thread(target=lambda: result.setdefault(
            "pid", get(c, {"t": (spin, 1.0)}, "t")))
        t.start()
        wait_for(lambda: any(h.processing for h in c.workers.values()), 20, "task start")
        running_on = next(h for h in c.workers.values() if h.processing)
        os.kill(running_on.pid, signal.SIGKILL)
        t.join(60)
        assert result["pid"] not in (running_on.pid, None)

        # the dead owner's segment goes once its last block is released
        c.engine.unwant(["x"])
        wait_for(lambda: not leftover_segments(shm.cluster_prefix(c.id, owner)), 10,
                 "orphan segment to be unlinked")
    assert leftover_segments(shm.cluster_prefix(c.id)) == []


def test_task_that_kills_workers_fails_with_killed_worker():
    with LocalCluster(n_workers=2, memory_limit=None) as c:
        with pytest.raises(KilledWorker, match="deadly"):
            get(c, {"deadly": (die, 1)}, "deadly")
        wait_for(lambda: len(c.workers) == 2, 30, "replacements")
        assert get(c, {"a": (inc, 1)}, "a") == 2  # the cluster still works


def test_memory_limit_restarts_worker_with_a_warning():
    def hog(n):
        block = np.ones(n // 8)  # private memory, not shm
        time.sleep(2)
        return float(block.sum())

    with LocalCluster(n_workers=1, memory_limit="150MB") as c:
        first_pid = next(iter(c.workers.values())).pid
        with pytest.warns(WorkerMemoryWarning, match="'hog-1'.*restarting") as w:
            with pytest.raises(KilledWorker):
                get(c, {"hog-1": (hog, 400_000_000)}, "hog-1")
        assert "exceeded its memory limit" in str(w[0].message)
        wait_for(lambda: len(c.workers) == 1, 30, "replacement")
        assert next(iter(c.workers.values())).pid != first_pid
        assert get(c, {"a": (inc, 1)}, "a") == 2


def test_close_during_work_leaves_nothing():
    c = LocalCluster(n_workers=2, memory_limit=None)
    dsk = {("x", i): (ones, 1_000_000) for i in range(6)}
    dsk.update({("s", i): (spin, 0.5) for i in range(2)})
    c.engine.submit(dsk, {k: set() for k in dsk}, list(dsk), None, lambda *a: None)
    wait_for(lambda: leftover_segments(shm.cluster_prefix(c.id)), 20, "some shm use")
    pids = [h.pid for h in c.workers.values()]
    c.close()
    assert leftover_segments(shm.cluster_prefix(c.id)) == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# -- whole programs ------------------------------------------------------------------


def run_script(tmp_path, body: str, timeout: float = 90, **kwargs):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": WORKTREE}
    return subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_guardless_script(tmp_path):
    # No `if __name__ == "__main__":` guard: workers must never re-import it.
    (tmp_path / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    proc = run_script(tmp_path, """
        import numpy as np
        import shmdask
        from shmdask.distributed import Client, LocalCluster
        from helper import double

        print("script body ran")
        cluster = LocalCluster()  # defaults: one worker per core
        client = Client(cluster)
        total = shmdask.delayed(np.sum)(shmdask.delayed(double)(np.arange(100_000)))
        print("result", total.compute())
        client.close()
        cluster.close()
    """)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert out.count("script body ran") == 1
    assert f"result {2 * sum(range(100_000))}" in out


def _start_computing_script(tmp_path, tail: str):
    return run_script(tmp_path, textwrap.dedent("""
        import os, signal, sys, time
        import numpy as np
        import shmdask
        from shmdask.distributed import Client, LocalCluster

        def spin(s):
            end = time.time() + s
            while time.time() < end:
                pass
            return s

        cluster = LocalCluster(n_workers=2)
        client = Client(cluster)
        chunks = [client.submit(np.ones, 1_000_000, pure=False) for _ in range(4)]
        print(client.gather([client.submit(np.sum, c) for c in chunks]))
        # the chunks stay alive in shm (their Futures are held), then misbehave
        print("cluster", cluster.id, *[h.pid for h in cluster.workers.values()], flush=True)
    """) + textwrap.dedent(tail))


def _cluster_id_from(proc) -> str:
    for line in proc.stdout:
        if line.startswith("cluster "):
            proc.worker_pids = [int(p) for p in line.split()[2:]]
            return line.split()[1]
    raise AssertionError("script never printed its cluster id: " + proc.stderr.read())


def test_sigkilled_client_leaves_no_shm(tmp_path):
    proc = _start_computing_script(tmp_path, """
        assert [n for n in os.listdir("/dev/shm") if cluster.id in n]
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    cid = _cluster_id_from(proc)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    wait_for(lambda: not leftover_segments(shm.cluster_prefix(cid)), 10, "the janitor")
    # orphaned workers see their pipe close and exit
    assert len(proc.worker_pids) == 2
    wait_for(lambda: not any(_alive(pid) for pid in proc.worker_pids), 10, "workers to exit")


def test_janitor_ends_workers_stuck_in_a_gil_holding_task(tmp_path):
    """The client is SIGKILLed while both workers run a C loop that never lets
    go of the GIL (so they cannot notice their pipe closing): the janitor ends
    them, and only them."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                  "--cluster"])  # not a worker of this cluster
    proc = _start_computing_script(tmp_path, """
        stuck = [client.submit(sum, range(1 << 62), pure=False) for _ in range(2)]
        time.sleep(1.0)  # both are running now
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    try:
        cid = _cluster_id_from(proc)
        # wait(), not communicate(): the stuck workers hold the script's stdout open
        assert proc.wait(timeout=60) == -signal.SIGKILL
        wait_for(lambda: not any(_alive(pid) for pid in proc.worker_pids), 15,
                 "the janitor to end the workers")
        wait_for(lambda: not leftover_segments(shm.cluster_prefix(cid)), 10, "the janitor")
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        proc.stdout.close()
        proc.stderr.close()
        for pid in getattr(proc, "worker_pids", []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_ctrl_c_during_compute_leaves_no_shm(tmp_path):
    proc = _start_computing_script(tmp_path, """
        print("computing", flush=True)
        client.submit(spin, 30).result()
    """)
    cid = _cluster_id_from(proc)
    assert proc.stdout.readline().startswith("computing")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "KeyboardInterrupt" in err
    # cleaned up by the interpreter's exit hook, not by the janitor's grace
    assert leftover_segments(shm.cluster_prefix(cid)) == []


def test_exception_in_script_leaves_no_shm(tmp_path):
    proc = _start_computing_script(tmp_path, """
        client.submit(int, "not a number").result()
    """)
    cid = _cluster_id_from(proc)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "invalid literal" in err
    assert leftover_segments(shm.cluster_prefix(cid)) == []


# -- one worker process, driven by hand -------------------------------------------------


class WorkerPeer:
    """The scheduler's end of one worker's connection, played by hand: the
    protocol without engine or store.  RawWorker puts a worker process behind
    it, SocketWorker a Worker on a thread of this process."""

    def __init__(self, conn):
        from shmdask.cluster.protocol import ConnectionState

        self.conn = conn
        self.state = ConnectionState()
        self.messages = 0
        assert self.recv()[0][0] == "hello"

    def recv(self):
        from shmdask.cluster.protocol import decode_message, loads_message

        assert self.conn.poll(30), "worker did not answer"
        header, frames = decode_message(self.conn.recv_bytes())
        self.messages += 1
        return header, (loads_message(frames) if frames else None)

    def send(self, header, body=None):
        from shmdask.cluster.protocol import encode_message

        self.conn.send_bytes(encode_message(header, body, self.state if body else None))

    def send_tasks(self, keys: list, computations: list, inputs: list | None = None) -> None:
        """One "run" message; no input values unless given."""
        self.send(("run", tuple(keys)), (tuple(computations), tuple(inputs or [{}] * len(keys))))

    def results(self):
        """The next message's finished tasks (a ResultColumns)."""
        from shmdask.cluster.result_batch import read_columns

        header, body = self.recv()
        assert header[0] == "results"
        return read_columns(body)

    def run(self, tasks) -> dict:
        """Send tasks; -> {key: ("done", key, value, stamps) or ("erred", key,
        pickled exception, traceback, stamps)}, stamps (lane, start, stop, ...)."""
        keys, computations, inputs = zip(*tasks, strict=True)
        self.send_tasks(keys, computations, inputs)
        from shmdask.cluster.result_batch import read_columns

        out = {}
        while len(out) < len(tasks):
            header, body = self.recv()
            if header[0] != "results":
                continue
            results = read_columns(body)
            for key, value, *stamps in zip(results.keys, results.values, *results.stamps,
                                           strict=True):
                out[key] = ("done", key, value, tuple(stamps))
            for key, exc_bytes, tb, *stamps in results.errors:
                out[key] = ("erred", key, exc_bytes, tb, tuple(stamps))
        return out

    def stats(self) -> dict:
        self.send(("stats",))
        header, _ = self.recv()
        return header[1]


class RawWorker(WorkerPeer):
    """A worker process and its pipe, driven by hand."""

    def __init__(self, worker_id: str, cluster_id: str, nthreads: int = 1):
        import socket
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shmdask.cluster.worker", "--fd", str(theirs.fileno()),
             "--id", worker_id, "--cluster", cluster_id, "--nthreads", str(nthreads)],
            pass_fds=(theirs.fileno(),),
            env={**os.environ, "PYTHONPATH": WORKTREE, "SHMDASK_SYS_PATH": json.dumps(sys.path)})
        theirs.close()
        super().__init__(Connection(ours.detach()))

    def close(self):
        self.conn.close()
        return self.proc.wait(10)


def where_is(x):
    """The file mapped at x's memory (None if anonymous)."""
    return mapped_file(x.__array_interface__["data"][0])


@pytest.fixture
def two_raw_workers():
    cid = shm.new_cluster_id()
    a, b = RawWorker("worker-a", cid), RawWorker("worker-b", cid)
    yield a, b, cid
    a.close()
    b.close()
    shm.sweep(shm.cluster_prefix(cid))


def test_a_second_reader_maps_the_writers_segment(two_raw_workers):
    from shmdask.cluster.protocol import deserialize_value

    a, b, cid = two_raw_workers
    made = a.run([("x", (ones, 1_000_000, 4.0), {}), ("z", (ones, 1_000_000, 5.0), {})])
    x, z = made["x"][2], made["z"][2]
    assert x.where == "shm" and x.owner == "worker-a"
    segment = x.blocks[0][0]
    assert segment.startswith(shm.cluster_prefix(cid, "worker-a"))
    # worker b reads x in place: its array lives in a's segment, mapped read-only
    out = b.run([("w", (where_is, "x"), {"x": x}), ("t", (total, "x"), {"x": x}),
                 ("u", (total, "z"), {"z": z})])
    assert deserialize_value(out["w"][2]) == f"/dev/shm/{segment}"
    assert deserialize_value(out["t"][2]) == 4_000_000.0
    assert deserialize_value(out["u"][2]) == 5_000_000.0
    stats = b.stats()
    # one mapping per segment, however many chunks and reads
    assert stats["segments_attached"] == len({x.blocks[0][0], z.blocks[0][0]})
    assert stats["bytes_received"] < 10_000  # the chunks never crossed the pipe
    # the owner itself reads through its own mapping
    mine = a.run([("w2", (where_is, "x"), {"x": x})])
    assert deserialize_value(mine["w2"][2]) == f"/dev/shm/{segment}"
    assert a.stats()["segments_attached"] == 0


def test_freed_blocks_are_reused_by_the_owner(two_raw_workers):
    a, _, _ = two_raw_workers
    first = a.run([("x", (ones, 2_000_000), {})])["x"][2]
    a.send(("free", first.blocks))
    second = a.run([("y", (ones, 2_000_000, 2.0), {})])["y"][2]
    assert second.blocks == first.blocks  # the very same block
    assert a.stats()["segments_created"] == 1


def test_results_come_back_in_batches(two_raw_workers):
    a, _, _ = two_raw_workers
    before = a.messages
    out = a.run([(("i", i), (inc, i), {}) for i in range(300)])
    assert len(out) == 300
    assert a.messages - before < 30  # not one message per task
    assert a.stats()["functions_loaded"] == 1


def test_what_cannot_be_unpickled_fails_only_what_needs_it(two_raw_workers, tmp_path,
                                                         monkeypatch):
    from shmdask.cluster.protocol import deserialize_value, load_exception

    a, _, _ = two_raw_workers
    # a module the client can import and the worker cannot
    (tmp_path / "only_here.py").write_text(
        "class Thing:\n    pass\n\ndef f(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here

    def error_of(entry):
        kind, key, exc_bytes, tb, (lane, start, stop) = entry
        assert kind == "erred" and lane.startswith("worker-a/") and stop >= start
        return load_exception(exc_bytes, tb)

    # a function that cannot be loaded fails the tasks that call it, no others
    out = a.run([("k1", (only_here.f, 1), {}), ("k2", (inc, 1), {})])
    assert isinstance(error_of(out["k1"]), ModuleNotFoundError)
    assert deserialize_value(out["k2"][2]) == 2
    # an argument that cannot be loaded fails its whole batch (keys from the header)
    out = a.run([("k3", (id, only_here.Thing()), {}), ("k4", (add, 1, 2), {})])
    assert all(isinstance(error_of(out[k]), ModuleNotFoundError) for k in ("k3", "k4"))
    # ... and the connection's function table is still in step: add was loaded
    out = a.run([("k5", (add, 2, 3), {}), ("k6", (inc, 1), {})])
    assert [deserialize_value(out[k][2]) for k in ("k5", "k6")] == [5, 2]


def test_worker_exits_when_its_pipe_closes(two_raw_workers):
    a, _, _ = two_raw_workers
    a.send(("run", ["s"]), [("s", (spin, 30), {})])
    time.sleep(0.2)
    assert a.close() == 0  # mid-task: it does not finish the task first


class SocketWorker(WorkerPeer):
    """A Worker without shared memory serving one end of a socket pair on a
    thread of this process (what a worker on another host sees, minus the
    network); ``with`` closes it."""

    def __init__(self, worker_id: str, cluster_id: str | None = None):
        import socket
        from multiprocessing.connection import Connection

        from shmdask.cluster.worker import Worker

        ours, theirs = socket.socketpair()
        self.worker = Worker(Connection(theirs.detach()), worker_id,
                             cluster_id or f"{worker_id}{os.getpid()}", use_shm=False)
        self.serving = threading.Thread(target=self.worker.serve, daemon=True)
        self.serving.start()
        super().__init__(Connection(ours.detach()))

    def __enter__(self) -> "SocketWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.conn.close()
        self.serving.join(10)
        assert not self.serving.is_alive()


def test_worker_without_shm_and_inlined_values(cluster):
    # What a worker on another host does: everything inline, both ways.
    from shmdask.cluster.protocol import deserialize_value

    with SocketWorker("remote-0", cluster.id) as w:
        x = cluster.store.from_user(np.arange(100_000.0))
        assert x.where == "shm"
        x_inline = cluster.store.outgoing(x)  # what the TCP listener sends a remote worker
        assert x_inline.where == "inline" and x_inline.nbytes == x.nbytes
        w.send_tasks(["y"], [(add, "x", 1.0)], [{"x": x_inline}])
        results = w.results()
        assert results.keys == ("y",) and not results.errors
        (y,) = results.values
        assert y.where == "inline" and results.wheres == ("inline",) and results.stored_at == [0]
        np.testing.assert_array_equal(deserialize_value(y), np.arange(100_000.0) + 1)
        assert w.worker.stats()["segments_created"] == 0
    wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("shmdask-exec")],
             10, "executor threads to stop")
    cluster.store.release([x])


def test_workers_import_the_clients_heavy_modules_while_idle():
    import shmdask.array  # noqa: F401 - the client uses it, so workers should warm it

    with LocalCluster(n_workers=1, memory_limit=None) as c:
        (handle,) = c.workers.values()
        wait_for(lambda: handle.stats()["warm_imported"] == ["shmdask.array"], 30,
                 "shmdask.array to be imported in the worker")


def test_store_releases_a_value_once(cluster):
    store = cluster.store
    x = store.from_user(np.ones(1_000_000))
    before = store.shm_bytes
    store.adopt(x)  # adopting twice counts once
    store.release([x])
    store.release([x])  # releasing twice frees once
    assert store.shm_bytes == before - x.blocks[0][2]


def test_close_stops_the_clusters_threads():
    def threads_of(cid):
        return [t.name for t in threading.enumerate()
                if t.name.startswith((f"shmdask-reader-{cid}-", f"shmdask-memory-{cid}",
                                      f"shmdask-engine-{cid}"))]

    with LocalCluster(n_workers=2, memory_limit="auto") as c:
        assert get(c, {"a": (inc, 1)}, "a") == 2
        assert len(threads_of(c.id)) == 4  # two readers, the memory watch, the engine
    wait_for(lambda: not threads_of(c.id), 10, "the cluster's threads to stop")


def test_threads_hand_the_gil_over_quickly_while_workers_are_attached():
    # (how holds nest and give the user's value back: test_held_setting.py)
    from shmdask.cluster import pipe_transport as pt

    users = pt.FAST_SWITCHING.users  # another test's cluster may hold it already
    with LocalCluster(n_workers=2, dashboard_address=None) as c:
        assert get(c, {"a": (inc, 1)}, "a") == 2
        assert sys.getswitchinterval() <= pt.FAST_SWITCH_INTERVAL
        assert pt.FAST_SWITCHING.users == users + 2  # one per worker's reader
    wait_for(lambda: pt.FAST_SWITCHING.users == users, 10, "the readers to stop")


def test_a_batch_after_an_idle_spell_comes_back_in_one_message():
    # the flush timer runs from the oldest result held, not from the last flush:
    # a worker idle for a while must not send a new batch's first result alone
    from shmdask.cluster.worker import FLUSH_INTERVAL

    with SocketWorker("idle-0") as w:
        for round_ in range(2):
            time.sleep(10 * FLUSH_INTERVAL)  # idle
            keys = [f"k{round_}-{i}" for i in range(20)]
            w.send_tasks(keys, [(inc, i) for i in range(len(keys))])
            got = list(w.results().keys)
            assert len(got) > 1
            while len(got) < len(keys):
                got += w.results().keys
            assert got == keys


def _sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def _file_appears(path: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.005)
    return False


def test_a_long_tasks_result_goes_back_while_the_queued_task_runs(tmp_path):
    # A task of FLUSH_INTERVAL or more is reported when it ends, not held until
    # the task queued behind it ends too: the second task here waits for a file
    # the test makes only once the first result has arrived.
    from shmdask.cluster.worker import FLUSH_INTERVAL

    marker = str(tmp_path / "first-result-arrived")
    with SocketWorker("long-0") as w:
        w.send_tasks(["long", "queued"],
                     [(_sleep_then, 2 * FLUSH_INTERVAL, 1), (_file_appears, marker, 10.0)])
        assert list(w.results().keys) == ["long"]
        open(marker, "w").close()
        second = w.results()
        assert list(second.keys) == ["queued"] and list(second.values) == [True]


def test_tasks_of_one_batch_read_a_shared_input_once(monkeypatch):
    from shmdask.cluster import worker as worker_module
    from shmdask.cluster.protocol import deserialize_value, serialize_value

    reads = []

    def counting(stored, *args, **kwargs):
        reads.append(stored)
        return deserialize_value(stored, *args, **kwargs)

    monkeypatch.setattr(worker_module, "deserialize_value", counting)
    with SocketWorker("shared-0") as w:
        x, y = serialize_value(np.arange(5.0)), serialize_value(10.0)
        w.send_tasks(["a", "b", "c"], [(add, "x", "y"), (total, "x"), (inc, "y")],
                     [{"x": x, "y": y}, {"x": x}, {"y": y}])
        got = {}
        while len(got) < 3:
            results = w.results()
            for key, value in zip(results.keys, results.values, strict=True):
                got[key] = deserialize_value(value)
        np.testing.assert_array_equal(got["a"], np.arange(5.0) + 10)
        assert (got["b"], got["c"]) == (10.0, 11.0)
        assert len(reads) == 2  # x once and y once, for three tasks
