"""Peak memory of the seed's array example on LocalCluster(2).

    python benchmarks/measure_peak_memory.py          # x, y of shape (2000, 20000, 10)
    python benchmarks/measure_peak_memory.py 10000    # the seed's full size

Memory is the whole process tree's private resident memory (RSS less shared
pages) plus the shared memory its cluster holds in /dev/shm, sampled every
20 ms (``benchmarks.tree_peak``), so a chunk mapped by several processes
counts once (and segments of other processes on the machine do not count).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shmdask  # noqa: E402
import shmdask.array as da  # noqa: E402
from benchmarks.tree_peak import TreePeak  # noqa: E402
from shmdask.distributed import Client, LocalCluster  # noqa: E402


def main() -> None:
    first_axis = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    shmdask.config.set(progress=False)
    with LocalCluster(2) as cluster, Client(cluster):
        sampler = TreePeak(f"shmdask-{cluster.id}-").start()
        start = time.perf_counter()
        x = da.random.random((first_axis, 20000, 10), chunks=(1000, 1000, 5))
        y = da.random.random((first_axis, 20000, 10), chunks=(1000, 1000, 5))
        z = (da.arcsin(x) + da.arccos(y)).sum(axis=(1, 2)).compute()
        wall = time.perf_counter() - start
        sampler.stop()
    print(f"shape ({first_axis}, 20000, 10): {wall:.2f} s, "
          f"peak memory {sampler.peak / 2**20:.0f} MiB, z[:2] = {z[:2]}")


if __name__ == "__main__":
    main()
