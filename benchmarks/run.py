"""Side-by-side benchmarks: shmdask against dask's schedulers, in one process run.

    python -m benchmarks.run                       # every workload, every runner
    python -m benchmarks.run delayed_tree -r 5     # one workload, 5 repeats
    python -m benchmarks.run --runners shmdask-cluster,distributed

Workloads live in ``benchmarks/workloads_*.py`` as ``WORKLOADS = {name: fn}``;
each ``fn(api)`` runs once against ``api`` (``delayed``, ``compute``,
``persist``, ``get``, ``da`` of the library under test).  A workload may carry
``fn.numpy`` (the same work in plain numpy, one core: the "numpy" column),
``fn.runners`` (the only runners it suits), ``fn.warmup = False``,
``fn.standalone = True`` (it starts its own cluster: no runner context) and
``fn.slow = True`` (left out unless named or ``--slow`` is given: the
million-task rows, see ``benchmarks/measure_million.py``).

Each run starts its runner's scheduler, runs the workload once untimed (a
cluster in use is warm: imports done, memory mapped), then times it, and
closes the scheduler again: a live distributed cluster's event loop would
slow every other runner's threads.  Runs alternate between runners so that
noise on this shared machine hits them alike.  The table gives medians and
each runner's time relative to the fastest shmdask runner (``x`` > 1 means
slower than shmdask): the ratio of the medians, and the "paired" ratio, the
median of the ratios within each repeat, which a slow spell of the machine
(it can run at half speed for minutes) moves less.  The ``dist+shmdask``
runner (not run unless named in ``--runners``) computes shmdask's collections
on a dask.distributed cluster through dask's collection protocol: compare it
with the ``distributed`` runner on the same row.
Needs ``pip install -e '.[bench]'`` for the dask columns; without dask only
shmdask runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pathlib
import statistics
import sys
import time
import types
import warnings

HERE = pathlib.Path(__file__).resolve().parent


def load_workloads() -> dict:
    workloads = {}
    for path in sorted(HERE.glob("workloads_*.py")):
        module = importlib.import_module(f"benchmarks.{path.stem}")
        workloads.update(module.WORKLOADS)
    return workloads


def _shmdask_api(scheduler):
    import shmdask

    try:
        import shmdask.array as da
    except ImportError:  # the array package is optional for core workloads
        da = None
    return types.SimpleNamespace(
        name="shmdask", delayed=shmdask.delayed, da=da,
        compute=lambda *a, **k: shmdask.compute(*a, scheduler=scheduler, **k),
        persist=lambda *a, **k: shmdask.persist(*a, scheduler=scheduler, **k),
        get=lambda dsk, keys: shmdask.get(dsk, keys, scheduler=scheduler),
    )


def _dask_api(scheduler):
    import dask
    import dask.array as da

    def get(dsk, keys):
        if hasattr(scheduler, "get"):
            return scheduler.get(dsk, keys)
        return dask.threaded.get(dsk, keys)

    return types.SimpleNamespace(
        name="dask", delayed=dask.delayed, da=da,
        compute=lambda *a, **k: dask.compute(*a, scheduler=scheduler, **k),
        persist=lambda *a, **k: dask.persist(*a, scheduler=scheduler, **k),
        get=get,
    )


@contextlib.contextmanager
def runner_context(name: str, n_workers: int):
    """Yield the api of a runner (``api.runner`` is its name), with its cluster up;
    ``os.environ`` is as it was afterwards (see :func:`_environment_restored`)."""
    with _environment_restored(), _runner_context(name, n_workers) as api:
        api.runner = name
        yield api


@contextlib.contextmanager
def _environment_restored():
    """``os.environ`` as it was, afterwards.  dask.distributed's nannies set
    ``MALLOC_TRIM_THRESHOLD_=65536`` and one-thread BLAS caps in the process
    that starts them and leave them there, so every shmdask worker process
    spawned later would inherit them (a heap trimmed at 64 KiB maps and faults
    in every large temporary anew: ``(x + x.T).sum(axis=0)`` on LocalCluster(2)
    went from 0.96 to 1.28 of the threads backend's time, paired).  Every
    runner goes through it, so none leaves the next a changed process."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _runner_context(name: str, n_workers: int):
    if name == "shmdask-threads":
        import shmdask

        with shmdask.config.set(scheduler="threads"):
            yield _shmdask_api("threads")
    elif name == "shmdask-cluster":
        import shmdask
        from shmdask.distributed import Client, LocalCluster

        with LocalCluster(n_workers=n_workers, threads_per_worker=1) as cluster, \
                Client(cluster, set_as_default=False) as client, \
                shmdask.config.set(scheduler=client):
            yield _shmdask_api(client)
    elif name == "dask-threads":
        import dask

        with dask.config.set(scheduler="threads"):
            yield _dask_api("threads")
    elif name == "distributed":
        import dask
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, \
                Client(cluster, set_as_default=False) as client, \
                dask.config.set(scheduler=client):
            yield _dask_api(client)
    elif name == "dist+shmdask":  # shmdask's collections on a dask.distributed cluster
        import dask
        from distributed import Client, LocalCluster

        import shmdask

        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, \
                Client(cluster, set_as_default=False) as client, \
                dask.config.set(scheduler=client), shmdask.config.set(scheduler=client):
            api = _shmdask_api(client)
            api.name = "dist+shmdask"
            api.compute = lambda *a, **k: dask.compute(*a, scheduler=client, **k)
            api.persist = lambda *a, **k: dask.persist(*a, scheduler=client, **k)
            yield api
    else:
        raise SystemExit(f"unknown runner {name!r}")


def available_runners() -> list[str]:
    names = ["shmdask-threads", "shmdask-cluster"]
    try:
        importlib.import_module("shmdask.cluster.local_cluster")
    except ImportError:
        names.remove("shmdask-cluster")
    try:
        import dask  # noqa: F401

        names.append("dask-threads")
        import distributed  # noqa: F401

        names.append("distributed")
    except ImportError:
        pass
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", help="names (default: all)")
    parser.add_argument("-r", "--repeats", type=int, default=3)
    parser.add_argument("--runners", default=None, help="comma-separated runner names")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write results to this file")
    parser.add_argument("--no-progress", action="store_true",
                        help="switch shmdask's progress bar off")
    parser.add_argument("--slow", action="store_true",
                        help="also run the slow workloads (million-task graphs)")
    args = parser.parse_args(argv)

    workloads = load_workloads()
    names = args.workloads or [n for n, fn in workloads.items()
                                if args.slow or not getattr(fn, "slow", False)]
    unknown = [n for n in names if n not in workloads]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {sorted(workloads)}")
    runners = args.runners.split(",") if args.runners else available_runners()

    import shmdask

    # The progress bar is part of what a user pays for (it goes to stderr;
    # redirect stdout, or pass --no-progress, for a clean table).
    shmdask.config.set(progress=not args.no_progress)
    warnings.simplefilter("ignore")  # distributed warns about ports and large graphs
    if "numpy" not in runners and not args.runners:
        runners = ["numpy", *runners]
    times: dict = {(w, r): [] for w in names for r in runners}
    for w in names:
        fn = workloads[w]
        for _ in range(args.repeats):
            for r in runners:
                if r == "numpy":  # the same work in plain numpy, one core
                    if hasattr(fn, "numpy"):
                        start = time.perf_counter()
                        fn.numpy()
                        times[w, r].append(time.perf_counter() - start)
                    continue
                if r not in getattr(fn, "runners", (r,)):
                    continue
                if getattr(fn, "standalone", False):  # it makes its own cluster
                    api = types.SimpleNamespace(name=r.split("-")[0])
                    start = time.perf_counter()
                    fn(api)
                    times[w, r].append(time.perf_counter() - start)
                    continue
                with runner_context(r, args.workers) as api:
                    if api.da is None and w.startswith("array"):
                        continue
                    if getattr(fn, "warmup", True):
                        fn(api)  # a cluster in use is warm: imports done, memory mapped
                    start = time.perf_counter()
                    workloads[w](api)
                    times[w, r].append(time.perf_counter() - start)
        print(_row(w, runners, times), flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {f"{w}|{r}": t for (w, r), t in times.items()}, indent=1))
    return 0


def _row(w: str, runners: list[str], times: dict) -> str:
    medians = {r: statistics.median(times[w, r]) for r in runners if times[w, r]}
    ours = {r: m for r, m in medians.items() if r.startswith("shmdask")}
    best = min(ours, key=ours.get) if ours else None  # ratios are against our fastest
    cells = []
    for r, m in medians.items():
        ratio = ""
        if best is not None:
            ratio = f" ({m / medians[best]:.2f}x"
            paired = paired_ratio(times[w, r], times[w, best])
            ratio += f", paired {paired:.2f}x)" if paired is not None and r != best else ")"
        cells.append(f"{r} {m:.3f}s{ratio}")
    return f"{w:28s} " + " | ".join(cells)


def paired_ratio(times: list[float], reference: list[float]) -> float | None:
    """The median over repeats of this runner's time over the reference's time
    in the same repeat (None unless both ran every repeat).  The two runs of a
    repeat follow each other, so a spell of this machine running slow, which
    moves medians taken apart, hits both alike."""
    if len(times) != len(reference) or len(times) < 2:
        return None
    return statistics.median(t / ref for t, ref in zip(times, reference, strict=True))


if __name__ == "__main__":
    sys.exit(main())
