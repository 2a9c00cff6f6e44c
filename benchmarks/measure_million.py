"""The million-task rows: per-task cost at 10,000 and 1,000,000 tasks, start latency,
client peak memory.

    python -m benchmarks.measure_million                      # both workloads, 3 runners
    python -m benchmarks.measure_million delayed_1m --runners shmdask-cluster -r 3

Every run is a fresh process (so ``ru_maxrss`` is that run's peak resident
memory of the client process; worker processes are not counted), which builds
the graph, computes it and reports:

- ``build``: seconds to build the collection (user code, before ``compute``);
- ``compute``: seconds inside ``compute``;
- ``us/task``: (build + compute) per nominal task (a million chunks; a million
  ``delayed`` calls), at full size and at 1/100 of it -- the issue asks that
  the big figure stay within 1.5x of the small one;
- ``cpu``: CPU time per task of the client process (all its threads) and of
  the worker processes: steadier than wall time on a shared machine;
- ``first``: when the first task started, as a fraction of ``compute`` (the
  earliest start in the first batch of task-stream records; shmdask runners);
- ``peak MB``: the client process's peak RSS.

Medians over ``-r`` runs; runs alternate between runners (this machine is
shared, so noise hits them alike).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from benchmarks.workloads_million import DELAYED_LEAVES, _add, _inc

RUNNERS = ("shmdask-cluster", "shmdask-threads", "dask-threads")


def _build(workload: str, api, scale: float):
    if workload == "ones_sum_1m":
        n = int(10**7 * scale)
        return api.da.ones(n, chunks=10).sum(), n // 10, float(n)
    leaves = int(DELAYED_LEAVES * scale)
    inc, add = api.delayed(_inc), api.delayed(_add)
    level = [inc(i) for i in range(leaves)]
    while len(level) > 1:
        level = [add(*level[i:i + 2]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0], 2 * leaves - 1, leaves * (leaves + 1) // 2


def _children_cpu() -> float:
    """CPU seconds of this process's children so far (the worker processes)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _watch_local_engines(callback) -> None:
    """Give ``callback`` the records of every engine the threads backend makes
    from now on (each ``compute`` makes its own, inside ``get_local``)."""
    from shmdask.scheduler import local

    class WatchedEngine(local.Engine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.record_callbacks.append(callback)

    local.Engine = WatchedEngine


def run_one(workload: str, runner: str, scale: float) -> dict:
    import shmdask
    from benchmarks.run import runner_context
    from shmdask.scheduler.records import record_dict

    shmdask.config.set(progress=True)  # its cost is part of the figure (bars: stderr)
    with runner_context(runner, 2) as api:
        client = shmdask.config.get("scheduler") if runner == "shmdask-cluster" else None
        start = time.perf_counter()
        cpu_start = time.process_time()
        children_start = _children_cpu()
        collection, tasks, expected = _build(workload, api, scale)
        built = time.perf_counter()
        wall_start = time.time()
        first_start: list = []

        def note_first(records: list) -> None:
            # The first finished batch of records (the task stream itself keeps
            # only the newest half million).
            if not first_start:
                first_start.append(min(record_dict(r)["start"] for r in records))

        if client is not None:
            client.cluster.engine.record_callbacks.append(note_first)
        elif runner == "shmdask-threads":
            _watch_local_engines(note_first)
        (total,) = api.compute(collection)
        done = time.perf_counter()
        cpu = time.process_time() - cpu_start
        workers_cpu = _children_cpu() - children_start
    assert float(total) == float(expected), (total, expected)
    compute = done - built
    first = (first_start[0] - wall_start) / compute if first_start else None
    return {"build": built - start, "compute": compute, "tasks": tasks,
            "us_per_task": (done - start) / tasks * 1e6, "first": first,
            "cpu_us_per_task": cpu / tasks * 1e6, "workers_cpu_us_per_task":
            workers_cpu / tasks * 1e6,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=["ones_sum_1m", "delayed_1m"])
    parser.add_argument("--runners", default=",".join(RUNNERS))
    parser.add_argument("-r", "--repeats", type=int, default=1)
    parser.add_argument("--scales", default="0.01,1", help="sizes relative to a million tasks")
    parser.add_argument("--one", nargs=3, metavar=("WORKLOAD", "RUNNER", "SCALE"),
                        help=argparse.SUPPRESS)  # a single run, in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], float(args.one[2]))))
        return 0
    runners = args.runners.split(",")
    for workload in args.workloads:
        for scale in args.scales.split(","):
            results: dict = {r: [] for r in runners}
            for _ in range(args.repeats):
                for runner in runners:
                    out = subprocess.run(
                        [sys.executable, "-m", "benchmarks.measure_million", "--one",
                         workload, runner, scale], capture_output=True, text=True)
                    if out.returncode:
                        print(f"{workload} {runner} x{scale} failed:\n{out.stderr[-2000:]}")
                        continue
                    results[runner].append(json.loads(out.stdout.strip().splitlines()[-1]))
            for runner, rows in results.items():
                if rows:
                    print(_row(workload, scale, runner, rows), flush=True)
    return 0


def _row(workload: str, scale: str, runner: str, rows: list[dict]) -> str:
    def med(field: str) -> float:
        return statistics.median(r[field] for r in rows)

    first = [r["first"] for r in rows if r["first"] is not None]
    first_text = f"{statistics.median(first) * 100:5.1f}%" if first else "    -"
    return (f"{workload:12s} x{scale:5s} {runner:16s} tasks {rows[0]['tasks']:>8d}  "
            f"build {med('build'):7.2f}s  compute {med('compute'):7.2f}s  "
            f"{med('us_per_task'):6.1f} us/task (cpu: client {med('cpu_us_per_task'):5.1f}, "
            f"workers {med('workers_cpu_us_per_task'):5.1f})  first {first_text}  "
            f"peak {med('peak_mb'):7.0f} MB  (n={len(rows)})")


if __name__ == "__main__":
    sys.exit(main())
