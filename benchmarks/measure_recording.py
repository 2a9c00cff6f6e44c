"""What task-stream recording costs on the 10,000-chunk random sum (LocalCluster(2)).

    python benchmarks/measure_recording.py

Two parts: the engine's side (storing records and calling record callbacks),
switched on and off between alternating runs on a warm cluster; and the
workers' side (one record dict per task and its share of the reply message),
which cannot be switched off and is timed alone, per record.
"""

from __future__ import annotations

import pickle
import statistics
import time

import shmdask
import shmdask.array as da
from shmdask.distributed import Client, LocalCluster
from shmdask.scheduler.engine import Engine

TASKS = 10_324  # tasks of the random sum's graph


def random_sum() -> float:
    start = time.perf_counter()
    da.random.random(10_000_000, chunks=1000).sum().compute()
    return time.perf_counter() - start


def engine_side(runs: int = 7) -> tuple[float, float]:
    recording = Engine._add_records
    times: dict[bool, list[float]] = {True: [], False: []}
    with LocalCluster(2) as cluster, Client(cluster):
        random_sum()
        try:
            for _ in range(runs):
                for on in (True, False):
                    Engine._add_records = recording if on else (lambda self, records: None)
                    times[on].append(random_sum())
        finally:
            Engine._add_records = recording
    return statistics.median(times[True]), statistics.median(times[False])


def worker_side_per_record(n: int = 100_000) -> float:
    key = ("random_sample-0123456789abcdef", 17)
    start = time.perf_counter()
    for _ in range(n):
        record = {"key": key, "group": "random_sample", "worker": "worker-0",
                  "lane": "worker-0/0", "start": 1.0, "stop": 2.0, "nbytes": 8,
                  "where": "inline", "kind": "compute", "remote": False}
    build = (time.perf_counter() - start) / n
    batch = [dict(record) for _ in range(100)]
    start = time.perf_counter()
    for _ in range(n // 100):
        pickle.loads(pickle.dumps(batch, protocol=5))
    return build + (time.perf_counter() - start) / n


def main() -> None:
    shmdask.config.set(progress=False)
    on, off = engine_side()
    print(f"engine side: recording on {on:.3f} s, off {off:.3f} s "
          f"({100 * (on - off) / off:+.1f}%)")
    per_record = worker_side_per_record()
    workers = TASKS * per_record / 2  # two workers share the tasks
    print(f"worker side: {per_record * 1e6:.2f} us per record, {workers * 1e3:.1f} ms "
          f"of a {on * 1e3:.0f} ms run ({100 * workers / on:.1f}%)")


if __name__ == "__main__":
    main()
