"""Peak memory of the seed's array example on LocalCluster(2).

    python benchmarks/measure_peak_memory.py          # x, y of shape (2000, 20000, 10)
    python benchmarks/measure_peak_memory.py 10000    # the seed's full size

Memory is the whole process tree's private resident memory (RSS less shared
pages) plus the shared memory its cluster holds in /dev/shm, sampled every
50 ms, so a chunk mapped by several processes counts once (and segments of
other processes on the machine do not count).
"""

from __future__ import annotations

import os
import sys
import threading
import time

import psutil

import shmdask
import shmdask.array as da
from shmdask.distributed import Client, LocalCluster


def shm_in_use(prefix: str) -> int:
    total = 0
    for name in os.listdir("/dev/shm"):
        if name.startswith(prefix):
            try:
                total += os.stat(f"/dev/shm/{name}").st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def tree_memory(prefix: str) -> int:
    me = psutil.Process()
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
            total += info.rss - info.shared
        except psutil.Error:
            pass
    return total + shm_in_use(prefix)


def main() -> None:
    first_axis = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    shmdask.config.set(progress=False)
    peak = 0
    done = threading.Event()

    def sample(prefix: str) -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_memory(prefix))
            time.sleep(0.05)

    with LocalCluster(2) as cluster, Client(cluster):
        threading.Thread(target=sample, args=(f"shmdask-{cluster.id}-",), daemon=True).start()
        start = time.perf_counter()
        x = da.random.random((first_axis, 20000, 10), chunks=(1000, 1000, 5))
        y = da.random.random((first_axis, 20000, 10), chunks=(1000, 1000, 5))
        z = (da.arcsin(x) + da.arccos(y)).sum(axis=(1, 2)).compute()
        wall = time.perf_counter() - start
        done.set()
    print(f"shape ({first_axis}, 20000, 10): {wall:.2f} s, "
          f"peak memory {peak / 2**20:.0f} MiB, z[:2] = {z[:2]}")


if __name__ == "__main__":
    main()
