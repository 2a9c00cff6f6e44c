"""Limits of the TCP side under pressure: values larger than a frame, peers that
break the protocol, and peers that never authenticate.  Real processes on loopback."""

import subprocess
import sys
import textwrap

import cloudpickle
import numpy as np
from conftest import wait_for
from test_tcp import SchedulerProcess, env, remote_workers, start_worker, stop_worker

from shmdask.client import Client

cloudpickle.register_pickle_by_value(sys.modules[__name__])

FRAME_LIMIT = {"SHMDASK_MAX_FRAME_BYTES": "10000000"}  # 10 MB: a 20 MB value is two frames


def test_values_larger_than_a_frame_travel_every_way():
    """Fetch, remote-worker result, scatter and task input, all 20 MB with a
    10 MB frame limit on every side (the issue's reproducer)."""
    s = SchedulerProcess(n_workers=0, environ=FRAME_LIMIT)
    worker = start_worker(s.address, **FRAME_LIMIT)
    script = textwrap.dedent(f"""
        import numpy as np
        from shmdask.client import Client
        with Client({s.address!r}, set_as_default=False) as c:
            x = c.submit(np.ones, 20_000_000, dtype="u1").result(timeout=60)
            assert x.shape == (20_000_000,) and x.sum() == 20_000_000
            [fy] = c.scatter([np.arange(2_500_000, dtype=np.int64)])  # 20 MB
            total = c.submit(np.sum, fy).result(timeout=60)
            assert total == 2_500_000 * 2_499_999 // 2, total
            assert np.array_equal(fy.result(timeout=60), np.arange(2_500_000))
            assert c.submit(lambda: 42).result(timeout=60) == 42  # still connected
        print("ok")
    """)
    try:
        done = subprocess.run([sys.executable, "-c", script], env=env(**FRAME_LIMIT),
                              capture_output=True, text=True, timeout=100)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "ok"
        assert "announced" not in s.read_log()
    finally:
        stop_worker(worker)
        assert s.stop() == 0


def test_a_worker_breaking_the_protocol_fails_its_task_with_a_protocol_error():
    """A remote worker with a larger frame limit than the scheduler's sends a
    frame the scheduler refuses: the task fails naming the protocol, it is not
    a KilledWorker (which says the worker crashed) after three reruns."""
    s = SchedulerProcess(n_workers=0, environ=FRAME_LIMIT)
    worker = start_worker(s.address, SHMDASK_MAX_FRAME_BYTES=str(1 << 30))
    try:
        with Client(s.address, set_as_default=False) as c:
            wait_for(lambda: remote_workers(c), what="the remote worker")
            f = c.submit(np.ones, 20_000_000, dtype="u1")
            exc = f.exception(timeout=60)
            assert type(exc).__name__ == "ProtocolError", repr(exc)
            assert "broke the shmdask protocol" in str(exc)
            assert "announced a frame of" in str(exc)
        assert "bad message" not in s.read_log()
    finally:
        stop_worker(worker)
        assert s.stop() == 0
