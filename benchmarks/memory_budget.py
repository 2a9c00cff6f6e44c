"""Memory-budget benchmarks: data larger than the cluster's memory, and a small /dev/shm.

    python -m benchmarks.memory_budget                 # both, 3 runs each
    python -m benchmarks.memory_budget persist -r 1    # larger than memory only
    python -m benchmarks.memory_budget small-shm       # 64 MB /dev/shm (needs root)

``persist``: 2 workers x 256 MB, random data of 4x that budget (2 GB in 8 MB
chunks) persisted, then ``x.sum()`` and ``(x + 1).std()``; shmdask against
dask.distributed with the same ``memory_limit``.  ``small-shm``:
``(x + x.T).sum()`` for x 8000² in chunks of 1000 on shmdask, once with the
machine's /dev/shm and once in a private mount namespace whose /dev/shm is a
64 MB tmpfs (Docker's default).

Each run is a fresh child process (its own process tree), which samples every
20 ms the tree's private memory (RSS less shared pages) plus the shared memory
its cluster holds in /dev/shm -- so a chunk mapped by several processes counts
once, and data spilled to disk (page cache) counts for neither library.  The
table gives medians; ratios are distributed / shmdask (> 1: shmdask is better).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.tree_peak import TreePeak

WORKER_LIMIT = 256 * 2**20
N_WORKERS = 2
CHUNK = 2**20  # float64 elements: 8 MiB chunks
PERSIST_ELEMENTS = 4 * N_WORKERS * WORKER_LIMIT // 8  # 4x the budget
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- child side


def child_persist(runner: str) -> dict:
    if runner == "shmdask":
        import shmdask
        import shmdask.array as da
        from shmdask.client import wait
        from shmdask.distributed import Client, LocalCluster

        shmdask.config.set(progress=False)
        cluster = LocalCluster(n_workers=N_WORKERS, threads_per_worker=1,
                               memory_limit=WORKER_LIMIT)
        prefix = f"shmdask-{cluster.id}-"

        def futures_of(x):
            return list(x.__shmdask_graph__().values())
    else:
        import dask
        import dask.array as da
        from distributed import Client, LocalCluster, futures_of, wait

        dask.config.set({"distributed.logging.distributed": "error"})
        cluster = LocalCluster(n_workers=N_WORKERS, threads_per_worker=1,
                               memory_limit=WORKER_LIMIT, dashboard_address=None,
                               silence_logs=50)
        prefix = None
    client = Client(cluster)
    peak = TreePeak(prefix).start()
    out = {}
    try:
        t0 = time.perf_counter()
        x = da.random.random(PERSIST_ELEMENTS, chunks=CHUNK)
        x = client.persist(x)
        wait(futures_of(x))
        out["persist"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        total = float(x.sum().compute())
        out["sum"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        std = float((x + 1).std().compute())
        out["std"] = time.perf_counter() - t0
        out["total"] = out["persist"] + out["sum"] + out["std"]
        # uniform [0, 1): mean 1/2, std 1/sqrt(12); n = 2**28 makes both tight
        n = PERSIST_ELEMENTS
        out["right"] = abs(total / n - 0.5) < 1e-3 and abs(std - 12**-0.5) < 1e-3
    finally:
        peak.stop()
        client.close()
        cluster.close()
    out["peak"] = peak.peak
    out["budget"] = N_WORKERS * WORKER_LIMIT
    return out


def child_transpose(runner: str) -> dict:
    import numpy as np

    import shmdask
    import shmdask.array as da
    from shmdask.distributed import Client, LocalCluster

    shmdask.config.set(progress=False)
    with LocalCluster(n_workers=N_WORKERS, threads_per_worker=1) as cluster, \
            Client(cluster):
        peak = TreePeak(f"shmdask-{cluster.id}-").start()
        x = da.random.random((8000, 8000), chunks=1000)
        t0 = time.perf_counter()
        total = float((x + x.T).sum().compute())
        elapsed = time.perf_counter() - t0
        peak.stop()
        spilled = sum(h.stats()["results_spilled"] for h in cluster.workers.values())
    shm_size = os.statvfs("/dev/shm")
    return {"time": elapsed, "right": bool(np.isfinite(total) and abs(total / 64e6 - 1) < 1e-2),
            "client_peak": peak.client_peak, "peak": peak.peak,
            "results_to_disk": spilled, "dev_shm": shm_size.f_blocks * shm_size.f_frsize}


# ----------------------------------------------------------------------------- parent side


def run_child(kind: str, runner: str, small_shm: bool = False) -> dict:
    command = [sys.executable, "-m", "benchmarks.memory_budget", "--child", kind, runner]
    if small_shm:
        inner = " ".join(command)
        command = ["unshare", "-m", "sh", "-c",
                   f"mount -t tmpfs -o size=64m tmpfs /dev/shm && exec {inner}"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=1800)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(runs: list[dict], field: str) -> float:
    values = [r[field] for r in runs if field in r]
    return statistics.median(values) if values else float("nan")


MiB = 2**20


def _print_table(results: dict[str, list], columns: list[tuple]) -> None:
    """One row per runner: medians of ``columns`` ((title, field, scale, width, digits)),
    whether every run was right, and the errors of runs that failed."""
    print(f"{'':<16} " + " ".join(f"{title:>{width}}" for title, _, _, width, _ in columns)
          + "  right  errors")
    for name, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        errors = "; ".join(r["error"] for r in runs if "error" in r)
        cells = " ".join(f"{_median(ok, field) / scale:{width}.{digits}f}"
                         for _, field, scale, width, digits in columns)
        print(f"{name:<16} {cells}  {all(r['right'] for r in ok) and bool(ok)!s:5}  "
              f"{errors[:80]}")


def bench_persist(repeats: int) -> None:
    runners = ["shmdask", "distributed"]
    results: dict[str, list] = {r: [] for r in runners}
    for _ in range(repeats):
        for runner in runners:
            results[runner].append(run_child("persist", runner))
    budget = N_WORKERS * WORKER_LIMIT
    print(f"\npersist 4x the budget ({N_WORKERS} workers x {WORKER_LIMIT >> 20} MiB, "
          f"{PERSIST_ELEMENTS * 8 >> 20} MiB of random data in 8 MiB chunks), medians of "
          f"{repeats}")
    for runs in results.values():
        for r in runs:
            if "peak" in r:
                r["peak_ratio"] = r["peak"] / budget
    _print_table(results, [("persist s", "persist", 1, 9, 2), ("sum s", "sum", 1, 7, 2),
                           ("std s", "std", 1, 7, 2), ("total s", "total", 1, 8, 2),
                           ("peak MiB", "peak", MiB, 9, 0),
                           ("peak/budget", "peak_ratio", 1, 11, 2)])
    s = [r for r in results["shmdask"] if "error" not in r]
    d = [r for r in results["distributed"] if "error" not in r]
    if s and d:
        print(f"distributed / shmdask: time {_median(d, 'total') / _median(s, 'total'):.2f}x, "
              f"peak {_median(d, 'peak') / _median(s, 'peak'):.2f}x")


def bench_small_shm(repeats: int) -> None:
    results: dict[str, list] = {"normal /dev/shm": [], "64 MB /dev/shm": []}
    for _ in range(repeats):
        results["normal /dev/shm"].append(run_child("transpose", "shmdask"))
        results["64 MB /dev/shm"].append(run_child("transpose", "shmdask", small_shm=True))
    print(f"\n(x + x.T).sum(), x 8000² chunks 1000 (512 MB), shmdask, medians of {repeats}")
    _print_table(results, [("time s", "time", 1, 7, 2),
                           ("client peak MiB", "client_peak", MiB, 15, 0),
                           ("tree peak MiB", "peak", MiB, 13, 0),
                           ("results to disk", "results_to_disk", 1, 15, 0)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_budget")
    parser.add_argument("which", nargs="*", help="persist, small-shm (default: both)")
    parser.add_argument("-r", "--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "RUNNER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, runner = args.child
        fn = child_persist if kind == "persist" else child_transpose
        print(json.dumps(fn(runner)))
        return
    which = args.which or ["persist", "small-shm"]
    unknown = set(which) - {"persist", "small-shm"}
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}: choose persist, small-shm")
    if "persist" in which:
        bench_persist(args.repeats)
    if "small-shm" in which:
        bench_small_shm(args.repeats)


if __name__ == "__main__":
    main()
