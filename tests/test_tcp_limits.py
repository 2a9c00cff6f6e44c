"""Limits of the TCP side under pressure: values larger than a frame, peers that
break the protocol, and peers that never authenticate.  Real processes on loopback."""

import contextlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import cloudpickle
import numpy as np
import pytest
from conftest import wait_for
from test_tcp import (
    SchedulerProcess,
    env,
    remote_workers,
    start_worker,
    stop_worker,
)

from shmdask.client import Client
from shmdask.cluster import auth

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


class _Attack:
    """Sockets that never authenticate: ``idle`` ones say nothing, ``slow`` ones
    trickle one byte of a plausible greeting per ``interval`` seconds each and
    come back when dropped (one reconnect at a time, spread over the interval)."""

    def __init__(self, host: str, port: int, idle: int, slow: int, interval: float):
        self.where = (host, port)
        self.idle = [socket.create_connection(self.where) for _ in range(idle)]
        self.slow = [socket.create_connection(self.where) for _ in range(slow)]
        self.interval = interval
        self.reconnects = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        greeting = auth.MAGIC + b"\x00\x01" + b"\x00" * 100
        sent = [0] * len(self.slow)
        while not self.stop.is_set():
            for i in range(len(self.slow)):
                if self.stop.wait(self.interval / len(self.slow)):
                    return
                try:
                    self.slow[i].send(greeting[sent[i] % len(greeting):][:1])
                    sent[i] += 1
                except OSError:  # dropped by the scheduler: come back
                    self.slow[i].close()
                    with contextlib.suppress(OSError):
                        self.slow[i] = socket.create_connection(self.where)
                        sent[i] = 0
                        self.reconnects += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.idle + self.slow:
            sock.close()


def test_unauthenticated_sockets_cannot_lock_out_workers_and_clients():
    """200 idle and 64 slow sockets (one byte a second each, under the 2 s
    handshake timeout of every read) from the same loopback address as the
    good peers: a worker and clients still join and compute."""
    s = SchedulerProcess(n_workers=0, handshake_timeout=2.0)
    attack = _Attack(s.host, s.port, idle=200, slow=64, interval=1.0)
    worker = None
    try:
        time.sleep(0.5)  # the attack is in place
        worker = start_worker(s.address)
        for i in range(4):
            with Client(s.address, set_as_default=False, timeout=20) as c:
                wait_for(lambda c=c: remote_workers(c), what="the remote worker")
                assert c.submit(lambda x: x + 1, i).result(timeout=30) == i + 1
        wait_for(lambda: attack.reconnects > 0, what="the slow sockets to be dropped")
        for sock in attack.idle:  # every idle socket was dropped, none kept a slot
            sock.settimeout(10)
            assert sock.recv(1) == b""
    finally:
        attack.close()
        if worker is not None:
            stop_worker(worker)
        log = s.read_log()
        assert s.stop() == 0
    assert "unauthenticated connections from 127.0.0.1; dropped the oldest" in log


def test_a_peer_trickling_bytes_is_dropped_at_an_absolute_deadline():
    """One byte every 0.3 s never lets a 1 s read timeout expire; the 1 s
    deadline for authenticating counts from the connection, not the last byte."""
    s = SchedulerProcess(n_workers=0, handshake_timeout=1.0)
    try:
        sock = socket.create_connection((s.host, s.port))
        sock.settimeout(0.3)
        greeting = auth.MAGIC + b"\x00\x01" + b"\x00" * 100
        closed = False
        for byte in greeting[:30]:  # 9 s at most
            try:
                sock.send(bytes([byte]))
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
            if closed:
                break
        sock.close()
        assert closed, "the trickling peer was never dropped"
        with Client(s.address, set_as_default=False) as c:
            assert c.scheduler_info()["address"] == s.address
    finally:
        log = s.read_log()
        assert s.stop() == 0
    assert "timed out: did not authenticate within 1 s" in log


def test_the_key_file_of_a_killed_scheduler_is_stale():
    """kill -9 leaves the key file; peers ignore it and the next scheduler
    removes it, also one that does not write a key file of its own."""
    s = SchedulerProcess(n_workers=0)
    path = auth.key_file(s.host, s.port)
    assert path.exists() and auth.find_key(s.host, s.port) is not None
    assert not auth.is_stale(path)
    s.stop(signal.SIGKILL)
    assert path.exists() and auth.is_stale(path)
    assert auth.find_key(s.host, s.port) is None  # not the dead scheduler's key
    s2 = SchedulerProcess(n_workers=0, port=s.port, environ={"SHMDASK_AUTH_KEY": "given"})
    try:
        assert not path.exists() and not auth.owner_file(path).exists()
        # a peer is told it lacks the key, not that the scheduler refused a wrong one
        with pytest.raises(ValueError, match="no cluster key"):
            Client(s2.address, set_as_default=False, timeout=5)
    finally:
        assert s2.stop() == 0
