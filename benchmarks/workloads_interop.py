"""Interop workloads: real dask collections on every runner, shmdask's engine included.

The collections are always dask's (dask.dataframe, dask.array), whichever
runner computes them: ``api.compute`` of the shmdask runners hands them to
shmdask's scheduler (``shmdask.compute`` of dask collections is
``dask.compute(..., scheduler=<shmdask get>)``), the dask runners to dask's.
So each row compares engines on the very same graph.

- ``interop_df_groupby_mean``: groupby-mean over 10M rows in 16 partitions,
  the partitions made on the workers (``dd.from_map``), 1,000 groups.
- ``interop_df_merge``: a hash join of two such frames on a unique id (a
  full shuffle of 20M rows), reduced to a sum so the result is small.
- ``interop_dask_array_x_plus_xT``: dask.array ``(x + x.T).sum(axis=0)``, x
  8000x8000 in 1000x1000 chunks.

shmdask collections on dask.distributed are measured by the ``dist+shmdask``
runner of ``run.py`` on the core and array workloads (``delayed_tree``,
``array_x_plus_xT``), next to the ``distributed`` runner's dask collections.

The shuffle (of the merge, and of the groupby: dask shuffles to aggregate
16 partitions) is each engine's default (see ``_shuffle_config``) unless
``SHMDASK_BENCH_SHUFFLE`` names one (``tasks``, ``disk``, ``p2p``).
"""

from __future__ import annotations

import os
from typing import Any

ROWS = int(os.environ.get("SHMDASK_BENCH_ROWS", 10_000_000))  # smaller for a quick try
PARTITIONS = 16
GROUPS = 1_000
RUNNERS = ("shmdask-threads", "shmdask-cluster", "dask-threads", "distributed")


def _partition(i: int, rows: int, salt: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1000 * salt + i)
    start = i * rows
    return pd.DataFrame({
        "id": rng.permutation(np.arange(start, start + rows)),
        "k": rng.integers(0, GROUPS, rows),
        "v": rng.random(rows),
    })


def _frame(salt: int) -> Any:
    import dask.dataframe as dd

    rows = ROWS // PARTITIONS
    return dd.from_map(_partition, range(PARTITIONS), rows=rows, salt=salt,
                       meta=_partition(0, 0, salt))


def _shuffle_config(api: Any):
    """Each engine's default shuffle: dask's threads shuffle on disk, a
    dask.distributed Client with p2p (dask picks it only for a *default*
    Client, which the runner's is not), shmdask in tasks (its own choice, made
    when it builds the graph)."""
    import contextlib

    import dask

    runner = getattr(api, "runner", "")
    method = os.environ.get("SHMDASK_BENCH_SHUFFLE") or {
        "distributed": "p2p", "dask-threads": "disk"}.get(runner)
    if method is None:
        return contextlib.nullcontext()
    return dask.config.set({"dataframe.shuffle.method": method})


def interop_df_groupby_mean(api: Any) -> Any:
    with _shuffle_config(api):  # dask shuffles for a groupby of 16 partitions
        (out,) = api.compute(_frame(0).groupby("k").v.mean())
    assert len(out) == GROUPS
    return out


def interop_df_merge(api: Any) -> float:
    left, right = _frame(1), _frame(2)[["id", "v"]].rename(columns={"v": "w"})
    with _shuffle_config(api):
        joined = left.merge(right, on="id")
        (total, n) = api.compute(joined.w.sum(), joined.k.count())
    assert n == ROWS, n
    return float(total)


def interop_dask_array_x_plus_xT(api: Any) -> Any:
    import dask.array as da

    x = da.random.random((8000, 8000), chunks=1000)
    (out,) = api.compute((x + x.T).sum(axis=0))
    assert out.shape == (8000,)
    return out


for _fn in (interop_df_groupby_mean, interop_df_merge, interop_dask_array_x_plus_xT):
    _fn.runners = RUNNERS

WORKLOADS = {
    "interop_df_groupby_mean": interop_df_groupby_mean,
    "interop_df_merge": interop_df_merge,
    "interop_dask_array_x_plus_xT": interop_dask_array_x_plus_xT,
}
