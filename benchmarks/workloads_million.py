"""Million-task workloads: per-task cost, start latency and client memory at scale.

``WORKLOADS = {name: fn}`` as in the other ``workloads_*`` modules, each marked
``fn.slow = True``: ``python -m benchmarks.run`` leaves them out unless they are
named (``python -m benchmarks.run ones_sum_1m -r 1``) or ``--slow`` is given.

``python -m benchmarks.measure_million`` runs them one process per run and
reports what the issue asks of them: time per task against the 10,000-task
figure, when the first task started (from the task stream), and the client
process's peak memory.
"""

from __future__ import annotations

#: 2**19 leaves and 2**19 - 1 pairwise adds: 1,048,575 delayed calls.
DELAYED_LEAVES = 2**19


def _inc(x):
    return x + 1


def _add(x, y):
    return x + y


def ones_sum_1m(api) -> float:
    """``da.ones(10**7, chunks=10).sum()``: a million chunks and their reduction."""
    (total,) = api.compute(api.da.ones(10**7, chunks=10).sum())
    assert float(total) == 10**7, total
    return float(total)


def delayed_1m(api, leaves: int = DELAYED_LEAVES) -> int:
    """A million ``delayed`` calls: ``inc`` on every leaf, then a tree of ``add``."""
    inc, add = api.delayed(_inc), api.delayed(_add)
    level = [inc(i) for i in range(leaves)]
    while len(level) > 1:
        level = [add(*level[i:i + 2]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    (total,) = api.compute(level[0])
    assert total == leaves * (leaves + 1) // 2, total
    return total


ones_sum_1m.slow = delayed_1m.slow = True
ones_sum_1m.warmup = delayed_1m.warmup = False  # a warm-up run would double the time

WORKLOADS = {"ones_sum_1m": ones_sum_1m, "delayed_1m": delayed_1m}
