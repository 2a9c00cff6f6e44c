"""dask's "Dask Distributed" tutorial, step by step, on shmdask -- as a plain script.

Run it either way::

    python notebooks/distributed_tutorial.py [--out DIR]
    shmdask run notebooks/distributed_tutorial.py [--out DIR]

In: the environment variable ``SHMDASK_TUTORIAL_SCALE`` (how big the run is)
and ``--out`` (a folder, default ``tutorial-output``).  Out: results and
wall-clock timings on stdout, and pictures in the folder -- the task graphs
that ``visualize`` draws (``graph-*.png``) and one task-stream picture per
cluster computation (``task-stream-*.png``) -- since a script has no notebook
to show them in.

It is the notebook ``distributed-tutorial.ipynb`` without the prose: the same
steps in the same order (delayed inc/dec/add; sequential, lazy, threads, then
a cluster; the 256-iteration loop with ``persist`` and ``delayed(sum)``; the
tree summation; the ``arcsin(x) + arccos(y)`` array sum; the chunk-size
questions).

Scale.  One number shrinks the run: every ``sleep`` in the task functions and
the first axis of every array are multiplied by it; the *number* of tasks
in the delayed sections (256 chains, the tree above them) stays the
tutorial's, so the graphs and pictures keep their shape.  ``SHMDASK_TUTORIAL_SCALE=1``
is the tutorial at full size (2 s sleeps, two 16 GB arrays): about ten
minutes of sleeping on a 2-core machine.  Because this script is what the
README's first command runs, its default is **0.1** (about a minute and a
half on 2 cores), smaller than the notebook's default of 1.  CI uses 0.01.

Scheduler.  Under ``shmdask run`` a Client is already the default scheduler
(``shmdask.config.get("scheduler")``); the script uses it rather than starting
a second cluster.  Run plainly, it starts its own ``LocalCluster`` and closes
it at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

import shmdask
import shmdask.array as da
from shmdask.distributed import Client, LocalCluster

DEFAULT_SCALE = 0.1
SCALE_VARIABLE = "SHMDASK_TUTORIAL_SCALE"


def read_scale(default: float = DEFAULT_SCALE) -> float:
    """The tutorial's size factor from ``SHMDASK_TUTORIAL_SCALE`` (a positive number)."""
    text = os.environ.get(SCALE_VARIABLE)
    if text is None or not text.strip():
        return default
    try:
        scale = float(text)
    except ValueError:
        raise ValueError(f"{SCALE_VARIABLE} must be a number, got {text!r}") from None
    if not (scale > 0 and np.isfinite(scale)):
        raise ValueError(f"{SCALE_VARIABLE} must be a positive number, got {text!r}")
    return scale


def array_shape(scale: float) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Shape and chunks of the tutorial's (10000, 20000, 10) arrays, first axis scaled.

    Chunks stay (1000, 1000, 5) while the first axis has room for them; below
    that the first-axis chunk is the whole (scaled) axis, so chunks always divide.
    """
    n = max(1, round(10_000 * scale))
    return (n, 20_000, 10), (min(1_000, n), 1_000, 5)


def chunk_sizes(scale: float) -> tuple[int, list[int]]:
    """Length of the chunk-size example's vector and the three chunk sizes it tries:
    1,000 (the tutorial's), ten chunks' worth (1,000,000 at full size) and one chunk."""
    n = max(1_000, round(10_000_000 * scale))
    return n, [1_000, max(1_000, n // 10), n]


# -- the tutorial's functions: they sleep to stand for real work ----------------------

def make_functions(scale: float) -> tuple[Callable, Callable, Callable]:
    """inc, dec and add as in the tutorial, with their sleeps multiplied by ``scale``."""

    def inc(x):
        from time import sleep

        sleep(2 * scale)
        return x + 1

    def dec(x):
        from time import sleep

        sleep(2 * scale)
        return x - 1

    def add(x, y):
        from time import sleep

        sleep(0.5 * scale)
        return x + y

    return inc, dec, add


# -- reporting ------------------------------------------------------------------------

@contextmanager
def timed(label: str) -> Iterator[dict]:
    """Print how long the block took (wall clock); the dict gets ``seconds``."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    yield out
    out["seconds"] = time.perf_counter() - t0
    print(f"  {label}: {out['seconds']:.3f} s")


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


@contextmanager
def task_stream(client: Client, out_dir: str, name: str) -> Iterator[Any]:
    """Record the tasks run inside the block and write their Gantt picture."""
    with client.get_task_stream() as ts:
        yield ts
    path = os.path.join(out_dir, f"task-stream-{name}.png")
    ts.plot(filename=path)
    print(f"  task stream: {len(ts.data)} records -> {path}")


def connect() -> tuple[Client, LocalCluster | None]:
    """The default Client if there is one (``shmdask run``), else a new LocalCluster's."""
    current = shmdask.config.get("scheduler")
    if isinstance(current, Client):
        return current, None
    cluster = LocalCluster()
    return Client(cluster), cluster


# -- the tutorial ---------------------------------------------------------------------

def run(scale: float, out_dir: str) -> dict[str, Any]:
    """Every step of the tutorial; returns the results so callers (tests) can check them."""
    os.makedirs(out_dir, exist_ok=True)
    results: dict[str, Any] = {}
    inc, dec, add = make_functions(scale)
    print(f"shmdask {shmdask.__version__}, {SCALE_VARIABLE}={scale:g}, pictures in {out_dir}/")

    section("Delayed example: run sequentially (tutorial: 4.5 s)")
    with timed("sequential inc, dec, add"):
        results["sequential"] = add(inc(1), dec(2))
    print(f"  z = {results['sequential']}")

    section("Annotate the functions with delayed: building the graph is instant")
    inc, dec, add = shmdask.delayed(inc), shmdask.delayed(dec), shmdask.delayed(add)
    with timed("build the lazy graph"):
        x = inc(1)
        y = dec(2)
        z = add(x, y)
    print(f"  z = {z!r}")
    path = os.path.join(out_dir, "graph-inc-dec-add.png")
    z.visualize(rankdir="LR", filename=path)
    print(f"  z.visualize(rankdir='LR') -> {path}")

    section("Execute with threads on this machine (tutorial: 2.5 s, inc and dec in parallel)")
    with timed("z.compute(scheduler='threads')"):
        results["threads"] = z.compute(scheduler="threads")
    print(f"  z = {results['threads']}")

    section("A cluster of worker processes")
    with timed("start or find the cluster"):
        client, cluster = connect()
    if cluster is None:
        print("  using the default Client that is already open (shmdask run)")
    else:
        print("  started a LocalCluster and a Client on it")
    info = client.scheduler_info()
    print(f"  {client!r}")
    if client.dashboard_link:
        print(f"  dashboard: {client.dashboard_link} (open it in a browser to watch the "
              "task stream, progress, workers and memory while the rest runs)")
    print(f"  scheduler {info.get('address')}: {len(info.get('workers', {}))} workers")
    for wid, worker in sorted(info.get("workers", {}).items()):
        print(f"    {wid}: {worker.get('nthreads')} thread(s), pid {worker.get('pid')}")
    try:
        with task_stream(client, out_dir, "inc-dec-add"), timed("z.compute() on the cluster"):
            results["cluster"] = z.compute()
        print(f"  z = {results['cluster']}")

        section("Parallelize normal Python code: 256 chains, persist, delayed(sum)")
        with task_stream(client, out_dir, "for-loop"), timed("for loop + persist + sum"):
            zs = []
            for i in range(256):
                x = inc(i)
                y = dec(x)
                z = add(x, y)
                zs.append(z)
            zs = shmdask.persist(*zs)
            total = shmdask.delayed(sum)(zs)
            results["total"] = total.compute()
        print(f"  total = {results['total']}")

        section("Custom computation: a tree summation")
        L = zs
        while len(L) > 1:
            new_L = []
            for i in range(0, len(L), 2):
                lazy = add(L[i], L[i + 1])  # add neighbors
                new_L.append(lazy)
            L = new_L  # swap old list for new
        path = os.path.join(out_dir, "graph-tree.png")
        shmdask.visualize(*L, filename=path)
        print(f"  shmdask.visualize(*L) -> {path}")
        with task_stream(client, out_dir, "tree"), timed("shmdask.compute(L)"):
            (results["tree"],) = shmdask.compute(L)
        print(f"  tree sum = {results['tree']}")

        section("Array operations: (arcsin(x) + arccos(y)).sum(axis=(1, 2))")
        shape, chunks = array_shape(scale)
        x = da.random.random(shape, chunks=chunks)
        y = da.random.random(shape, chunks=chunks)
        z = (da.arcsin(x) + da.arccos(y)).sum(axis=(1, 2))
        print(f"  x: {x!r}")
        print(f"     {x.nbytes / 2**30:.2f} GiB in {x.npartitions} chunks of "
              f"{np.prod(chunks) * 8 / 2**20:.1f} MiB")
        with task_stream(client, out_dir, "array"), timed("z.compute()"):
            result = z.compute()
        results["array"] = result
        print(f"  z: shape {result.shape}, first values {np.round(result[:3], 1).tolist()}")

        section("Chunk sizes: da.random.random(n, chunks=c).sum()")
        n, sizes = chunk_sizes(scale)
        timings = {}
        for c in sizes:
            v = da.random.random(n, chunks=c)
            with task_stream(client, out_dir, f"chunks-{c}"), timed(
                    f"chunks={c:>10,}: {v.npartitions:>6,} chunks") as t:
                s = v.sum().compute()
            timings[c] = t["seconds"]
            print(f"    sum = {s:.1f} (expected about {n / 2:.0f})")
        t0 = time.perf_counter()
        np.random.random(n).sum()
        numpy_seconds = time.perf_counter() - t0
        print(f"  numpy on one core, same n: {numpy_seconds:.3f} s")
        results["chunk_timings"] = timings
        results["numpy_seconds"] = numpy_seconds
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="dask's 'Dask Distributed' tutorial on shmdask "
                    f"(size: {SCALE_VARIABLE}, default {DEFAULT_SCALE}; 1 = full size)")
    parser.add_argument("--out", default="tutorial-output",
                        help="folder for the pictures (default: tutorial-output)")
    args = parser.parse_args(argv)
    scale = read_scale()
    t0 = time.perf_counter()
    run(scale, args.out)
    print(f"\ntutorial done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
