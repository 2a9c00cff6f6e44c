"""Remote workers over TCP: per-task overhead and data movement, against distributed.

    python -m benchmarks.workloads_tcp              # all figures, 3 repeats
    python -m benchmarks.workloads_tcp -r 5 tiny    # one figure

Figures (each the median of ``repeats`` runs, cluster start outside the timing):

- ``tiny``: 10,000 no-op tasks through ONE remote worker process on this host
  (scheduler: a LocalCluster with no local worker plus the TCP listener;
  client in the scheduler's process, and over TCP), against distributed with
  one worker process and one thread: seconds and microseconds per task.
- ``array``: ``(x + x.T).sum()`` for x 4000x4000 in 1000x1000 chunks with one
  local and one remote worker: seconds and bytes that crossed the TCP link
  (needs ``shmdask.array``; skipped without it).

These set up their own clusters, so ``WORKLOADS`` (what ``benchmarks.run``
drives against every runner) is empty.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time

WORKLOADS: dict = {}
N_TINY = 10_000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _noop():
    return None


def _tiny_graph() -> tuple[dict, list]:
    dsk = {("noop", i): (_noop,) for i in range(N_TINY)}
    return dsk, list(dsk)


@contextlib.contextmanager
def shmdask_remote_cluster(n_local: int = 0, n_remote: int = 1):
    """A LocalCluster with ``n_local`` workers, a listener, ``n_remote`` remote workers."""
    from shmdask.cluster.local_cluster import LocalCluster
    from shmdask.cluster.tcp_server import start_listener

    cluster = LocalCluster(n_workers=n_local)
    listener = start_listener(cluster.engine, cluster.store, "tcp://127.0.0.1:0",
                              info=cluster.scheduler_info, restart=cluster.restart)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    procs = [subprocess.Popen([sys.executable, "-m", "shmdask.cluster.remote_worker",
                               listener.address], env=env, stderr=subprocess.DEVNULL)
             for _ in range(n_remote)]
    try:
        deadline = time.monotonic() + 60
        while len(listener.workers_info()) < n_remote:
            if time.monotonic() > deadline:
                raise RuntimeError("remote workers did not join")
            time.sleep(0.05)
        yield cluster, listener
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        listener.close()
        cluster.close()


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def tiny(repeats: int) -> dict:
    from shmdask.client import Client

    dsk, keys = _tiny_graph()
    figures = {}
    with shmdask_remote_cluster() as (cluster, listener):
        with Client(cluster, set_as_default=False) as client:
            client.get(dsk, keys[:100])  # warm up: functions shipped, clocks settled
            figures["shmdask, remote worker, in-process client"] = _time(
                lambda: client.get(dsk, keys), repeats)
        with Client(listener.address, set_as_default=False) as client:
            client.get(dsk, keys[:100])
            figures["shmdask, remote worker, TCP client"] = _time(
                lambda: client.get(dsk, keys), repeats)
    try:
        import distributed
    except ImportError:
        return figures
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        client.get(dsk, keys[:100])
        figures["distributed, 1 worker process"] = _time(lambda: client.get(dsk, keys), repeats)
    return figures


def array(repeats: int) -> dict:
    try:
        import shmdask.array as da
    except ImportError:
        print("array: shmdask.array is not available here; skipped")
        return {}
    import numpy as np

    import shmdask
    from shmdask.client import Client

    figures = {}
    x_np = np.random.default_rng(0).random((4000, 4000))
    with shmdask_remote_cluster(n_local=1, n_remote=1) as (cluster, listener), \
            Client(cluster, set_as_default=False) as client:
        x = da.from_array(x_np, chunks=(1000, 1000))
        expected = (x_np + x_np.T).sum()
        before = _moved(listener)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            (value,) = shmdask.compute((x + x.T).sum(), scheduler=client)
            times.append(time.perf_counter() - start)
            assert np.isclose(value, expected)
        after = _moved(listener)
        records = client.connection.task_stream().records_since(0)
        remote_tasks = sum(1 for r in records if r["kind"] == "compute" and r["remote"])
        local_tasks = sum(1 for r in records if r["kind"] == "compute" and not r["remote"])
        figures["shmdask, 1 local + 1 remote worker"] = times
    from shmdask.cluster.local_cluster import LocalCluster

    with LocalCluster(n_workers=2) as cluster, Client(cluster, set_as_default=False) as client:
        x = da.from_array(x_np, chunks=(1000, 1000))
        figures["shmdask, 2 local workers (reference)"] = _time(
            lambda: shmdask.compute((x + x.T).sum(), scheduler=client), repeats)
        print(f"array: bytes over TCP per run: "
              f"{(after[0] - before[0]) / repeats / 1e6:.1f} MB to the remote worker, "
              f"{(after[1] - before[1]) / repeats / 1e6:.1f} MB back; tasks run "
              f"remote/local: {remote_tasks}/{local_tasks}")
    return figures


def _moved(listener) -> tuple[int, int]:
    infos = listener.workers_info().values()
    return (sum(i["metrics"]["bytes_sent"] for i in infos),
            sum(i["metrics"]["bytes_received"] for i in infos))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figures", nargs="*", default=["tiny", "array"])
    parser.add_argument("-r", "--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import shmdask

    shmdask.config.set(progress=False)
    for name in args.figures:
        figures = {"tiny": tiny, "array": array}[name](args.repeats)
        for label, times in figures.items():
            med = statistics.median(times)
            extra = f"  ({med / N_TINY * 1e6:.0f} us/task)" if name == "tiny" else ""
            print(f"{name:6s} {label:48s} {med:7.3f} s{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
