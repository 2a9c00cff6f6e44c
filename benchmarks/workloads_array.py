"""Array workloads for the benchmark harness (``benchmarks/run.py``).

``WORKLOADS`` maps a name to ``fn(api)``; ``api`` is a namespace with the
library under test's ``da`` (shmdask.array or dask.array), ``compute``,
``persist`` and ``delayed``.  Each function builds its graph *and* computes
it with ``api.compute`` (which carries the runner's scheduler), so graph
construction is part of what is measured, as a user sees it.

Run alone for a quick side-by-side on threads (alternating runs, medians):

    python benchmarks/workloads_array.py [name ...] [--repeat N]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def array_random_sum(api: Any) -> float:
    """The seed's poor-chunking example: 10,000 chunks of 1,000 elements."""
    return float(api.compute(api.da.random.random(10_000_000, chunks=1000).sum())[0])


def array_arcsin_arccos(api: Any) -> Any:
    """The seed's elementwise-then-reduce example (a fifth of its length)."""
    da = api.da
    x = da.random.random((2000, 20000, 10), chunks=(1000, 1000, 5))
    y = da.random.random((2000, 20000, 10), chunks=(1000, 1000, 5))
    return api.compute((da.arcsin(x) + da.arccos(y)).sum(axis=(1, 2)))[0]


def array_x_plus_xT(api: Any) -> Any:
    """A transpose that reads every block twice, then a column reduction."""
    da = api.da
    x = da.random.random((8000, 8000), chunks=1000)
    return api.compute((x + x.T).sum(axis=0))[0]


def array_random_sum_chunks_1k(api: Any) -> float:
    return float(api.compute(api.da.random.random(10_000_000, chunks=1_000).sum())[0])


def array_random_sum_chunks_1m(api: Any) -> float:
    return float(api.compute(api.da.random.random(10_000_000, chunks=1_000_000).sum())[0])


def array_random_sum_one_chunk(api: Any) -> float:
    return float(api.compute(api.da.random.random(10_000_000, chunks=10_000_000).sum())[0])


# The same work in plain numpy on one core: the harness's "numpy" column.
def _numpy_random_sum() -> float:
    import numpy as np

    return float(np.random.random(10_000_000).sum())


def _numpy_arcsin_arccos() -> Any:
    import numpy as np

    x = np.random.random((2000, 20000, 10))
    y = np.random.random((2000, 20000, 10))
    return (np.arcsin(x) + np.arccos(y)).sum(axis=(1, 2))


def _numpy_x_plus_xT() -> Any:
    import numpy as np

    x = np.random.random((8000, 8000))
    return (x + x.T).sum(axis=0)


array_random_sum.numpy = _numpy_random_sum
array_arcsin_arccos.numpy = _numpy_arcsin_arccos
array_x_plus_xT.numpy = _numpy_x_plus_xT
array_random_sum_chunks_1k.numpy = _numpy_random_sum
array_random_sum_chunks_1m.numpy = _numpy_random_sum
array_random_sum_one_chunk.numpy = _numpy_random_sum

WORKLOADS: dict[str, Callable[[Any], Any]] = {
    "array_random_sum": array_random_sum,
    "array_arcsin_arccos": array_arcsin_arccos,
    "array_x_plus_xT": array_x_plus_xT,
    "array_random_sum_chunks_1k": array_random_sum_chunks_1k,
    "array_random_sum_chunks_1m": array_random_sum_chunks_1m,
    "array_random_sum_one_chunk": array_random_sum_one_chunk,
}


def _apis(scheduler: str = "threads") -> dict[str, Any]:
    import types

    import dask
    import dask.array

    import shmdask
    import shmdask.array

    shmdask.config.set(scheduler=scheduler, progress=False)
    dask.config.set(scheduler=scheduler)
    return {
        "shmdask": types.SimpleNamespace(da=shmdask.array, compute=shmdask.compute,
                                         persist=shmdask.persist, delayed=shmdask.delayed),
        "dask": types.SimpleNamespace(da=dask.array, compute=dask.compute,
                                      persist=dask.persist, delayed=dask.delayed),
    }


def main(argv: list[str] | None = None) -> None:
    import argparse
    import statistics
    import time

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(WORKLOADS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scheduler", default="threads")
    args = parser.parse_args(argv)
    apis = _apis(args.scheduler)
    print(f"{'workload':32s} {'shmdask':>9s} {'dask':>9s} {'dask/shmdask':>13s}")
    for name in args.names:
        fn = WORKLOADS[name]
        times: dict[str, list[float]] = {lib: [] for lib in apis}
        for _ in range(args.repeat):
            for lib, api in apis.items():
                start = time.perf_counter()
                fn(api)
                times[lib].append(time.perf_counter() - start)
        med = {lib: statistics.median(t) for lib, t in times.items()}
        print(f"{name:32s} {med['shmdask']:9.3f} {med['dask']:9.3f} "
              f"{med['dask'] / med['shmdask']:13.2f}", flush=True)


if __name__ == "__main__":
    main()
