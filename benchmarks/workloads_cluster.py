"""Workloads and measurements of the worker-process cluster.

``WORKLOADS = {name: fn}``: each ``fn(api)`` runs one workload through
``api.compute`` (``api`` has ``delayed``, ``compute``, ``persist``, ``da``), on
whatever scheduler the benchmark runner made the default.

Run as a script for the cluster's own figures::

    python benchmarks/workloads_cluster.py [overhead|start|threshold|reuse|all]

- ``overhead``: per-task cost of 10,000 no-op tasks through 2 workers (straight
  on the engine, through the Client, and the threads backend for reference);
- ``start``: cluster start + first result + close, 2 workers;
- ``threshold``: moving an n-byte array from one task to the next, inline
  (through the pipes) versus through shared memory, to pick the shm threshold;
- ``reuse``: writing 40 MB results into a reused block vs a fresh segment.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np


def spin(iterations: int) -> int:
    """Pure-Python work (holds the GIL): a fixed number of loop iterations.

    Fixed work, not a wall-clock deadline: threads that share the GIL must
    then really take turns, as GIL-bound code does."""
    total = 0
    for i in range(iterations):
        total += i & 7
    return total


def _iterations_for(seconds: float) -> int:
    """Iterations of ``spin`` that take about ``seconds`` on this machine, alone."""
    n = 100_000
    start = time.perf_counter()
    spin(n)
    return max(1, int(n * seconds / (time.perf_counter() - start)))


SPIN_25MS = _iterations_for(0.025)


def noop(i):
    return i


def make_chunk(n: int, i: int):
    return np.full(n, float(i))


def chunk_sum(x) -> float:
    return float(x.sum())


def gil_bound_64(api) -> None:
    """64 pure-Python tasks of ~25 ms each, computed together."""
    tasks = [api.delayed(spin)(SPIN_25MS + i) for i in range(64)]
    counts = api.compute(*tasks)
    assert len(counts) == 64 and all(c > 0 for c in counts)


gil_bound_64.numpy = lambda: [spin(SPIN_25MS + i) for i in range(64)]


def cluster_start_close(api) -> None:
    """Start a 2-worker cluster, get one result, close it."""
    if api.name == "shmdask":
        from shmdask.distributed import Client, LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, \
                Client(cluster, set_as_default=False) as client:
            assert client.submit(noop, 1).result() == 1
    else:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, \
                Client(cluster, set_as_default=False) as client:
            assert client.submit(noop, 1).result() == 1


cluster_start_close.runners = ("shmdask-cluster", "distributed")
cluster_start_close.standalone = True


def chunk_pipeline(api) -> None:
    """48 chunks of 40 MB made and reduced: the shared-memory data plane."""
    n = 5_000_000
    sums = [api.delayed(chunk_sum)(api.delayed(make_chunk)(n, i))
            for i in range(48)]
    out = api.compute(*sums)
    assert out[3] == 3.0 * n


WORKLOADS = {
    "cluster_start_close": cluster_start_close,
    "gil_bound_64": gil_bound_64,
    "chunk_pipeline": chunk_pipeline,
}


# ----------------------------------------------------------------------------- figures


class _EngineScheduler:
    """``run_graph`` straight on a cluster's engine (what a Client does, minus Futures)."""

    def __init__(self, cluster):
        self.engine = cluster.engine

    def run_graph(self, dsk, dependencies, keys, priorities):
        done = threading.Event()
        remaining = set(keys)
        errors = []

        def listener(key, status, exc):
            if status == "erred":
                errors.append(exc)
            remaining.discard(key)
            if not remaining:
                done.set()

        self.engine.submit(dsk, dependencies, keys, priorities, listener)
        done.wait()
        try:
            if errors:
                raise errors[0]
            return self.engine.call(lambda e: {k: e.store.to_user(e.data[k]) for k in keys})
        finally:
            self.engine.unwant(keys)


def _scheduler(cluster):
    try:
        from shmdask.client import Client
    except ImportError:
        return _EngineScheduler(cluster), lambda: None
    client = Client(cluster, set_as_default=False)
    return client, client.close


def measure_overhead(n_tasks: int = 10_000, repeats: int = 3) -> dict:
    """Per-task cost through 2 workers: straight on the engine, and via the Client."""
    import shmdask
    from shmdask.cluster.local_cluster import LocalCluster

    dsk = {("noop", i): (noop, i) for i in range(n_tasks)}
    keys = list(dsk)
    out = {}
    with LocalCluster(n_workers=2, memory_limit=None) as cluster:
        client, close = _scheduler(cluster)
        for label, sched in (("engine", _EngineScheduler(cluster)), ("client", client),
                             ("threads", "threads")):
            shmdask.get({"warm": (noop, 1)}, "warm", scheduler=sched)
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                got = shmdask.get(dsk, keys, scheduler=sched)
                best = min(best, time.perf_counter() - t0)
                assert got[-1] == n_tasks - 1
            out[label] = best / n_tasks
            print(f"overhead ({label}): {n_tasks} no-op tasks in {best:.3f} s "
                  f"= {best / n_tasks * 1e6:.1f} us/task")
        close()
    return out


def measure_start(repeats: int = 5) -> float:
    import shmdask
    from shmdask.cluster.local_cluster import LocalCluster

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=2, memory_limit=None)
        t1 = time.perf_counter()
        sched, close = _scheduler(cluster)
        assert shmdask.get({"x": (noop, 1)}, "x", scheduler=sched) == 1
        t2 = time.perf_counter()
        close()
        cluster.close()
        t3 = time.perf_counter()
        times.append((t3 - t0, t1 - t0, t2 - t1, t3 - t2))
    best = min(times)
    print(f"start+first result+close (2 workers): {best[0]:.3f} s "
          f"(start {best[1]:.3f}, first result {best[2]:.3f}, close {best[3]:.3f}; "
          f"median total {sorted(t[0] for t in times)[len(times) // 2]:.3f})")
    return best[0]


def measure_threshold(sizes=(1 << 10, 4 << 10, 16 << 10, 32 << 10, 64 << 10, 256 << 10,
                             1 << 20, 4 << 20), pairs: int = 200) -> dict:
    """Per handoff (producer task -> consumer task): all-inline vs all-shm."""
    import shmdask
    from shmdask.cluster.local_cluster import LocalCluster

    results = {}
    for size in sizes:
        n = size // 8
        npairs = max(8, min(pairs, (256 << 20) // size))
        dsk = {}
        for i in range(npairs):
            dsk[("make", i)] = (make_chunk, n, i)
            dsk[("sum", i)] = (chunk_sum, ("make", i))
        keys = [("sum", i) for i in range(npairs)]
        row = {}
        for label, threshold in (("inline", 1 << 40), ("shm", 1)):
            with LocalCluster(n_workers=2, memory_limit=None, shm_threshold=threshold) as c:
                sched, close = _scheduler(c)
                # no fusing: every chunk goes through the data plane
                shmdask.get(dsk, keys, scheduler=sched, optimize_graph=False)  # warm (slabs)
                best = float("inf")
                for _ in range(3):
                    t0 = time.perf_counter()
                    shmdask.get(dsk, keys, scheduler=sched, optimize_graph=False)
                    best = min(best, time.perf_counter() - t0)
                close()
            row[label] = best / npairs
        results[size] = row
        print(f"threshold: {size:>9} B  inline {row['inline'] * 1e6:8.1f} us  "
              f"shm {row['shm'] * 1e6:8.1f} us  per handoff")
    return results


def measure_reuse(nbytes: int = 40_000_000, repeats: int = 20) -> tuple[float, float]:
    from shmdask.cluster import shm

    src = np.random.default_rng(0).random(nbytes // 8)
    raw = memoryview(src).cast("B")
    cid = os.urandom(4).hex()

    alloc = shm.SlabAllocator(cid, "bench")
    ref, view = alloc.alloc(nbytes)
    view[:] = raw
    view.release()
    alloc.free([ref])
    t0 = time.perf_counter()
    for _ in range(repeats):
        ref, view = alloc.alloc(nbytes)
        view[:] = raw
        view.release()
        alloc.free([ref])
    reused = (time.perf_counter() - t0) / repeats
    created = alloc.segments_created
    alloc.close()

    t0 = time.perf_counter()
    for i in range(repeats):
        name = shm.segment_name(cid, "fresh", i)
        m = shm.create_segment(name, nbytes)
        memoryview(m)[:] = raw
        m.close()
        shm.unlink_segment(name)
    fresh = (time.perf_counter() - t0) / repeats
    print(f"reuse: write {nbytes / 1e6:.0f} MB into a reused block {reused * 1e3:.1f} ms "
          f"vs fresh segment (create+write+unlink) {fresh * 1e3:.1f} ms "
          f"({created} segment(s) created for {repeats + 1} writes)")
    return reused, fresh


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("overhead", "all"):
        measure_overhead()
    if what in ("start", "all"):
        measure_start()
    if what in ("reuse", "all"):
        measure_reuse()
    if what in ("threshold", "all"):
        measure_threshold()
