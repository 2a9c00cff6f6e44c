"""Scheduler, remote workers and clients as real processes on loopback."""

import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import cloudpickle
import numpy as np
import pytest
from conftest import wait_for

from shmdask.client import Client
from shmdask.cluster import address, auth
from shmdask.cluster.comm import AuthenticationError, Comm, header_frames, recv_message
from shmdask.cluster.protocol import FRAME_COUNT

# Functions of this module travel by value: workers cannot import a test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WORKTREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEARTBEAT = {"heartbeat_interval": 0.2, "heartbeat_timeout": 3.0, "handshake_timeout": 1.0}


def env(**extra) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [WORKTREE, e.get("PYTHONPATH")]))
    e.pop("SHMDASK_AUTH_KEY", None)
    e.update(extra)
    return e


class SchedulerProcess:
    """``serve_scheduler`` in a subprocess; its log goes to a file we can read."""

    def __init__(self, n_workers: int = 0, port: int = 0, host: str = "127.0.0.1",
                 environ: dict | None = None, **options):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        opts = {**HEARTBEAT, **options}
        code = textwrap.dedent(f"""
            from shmdask.cli.cluster import serve_scheduler
            serve_scheduler(host={host!r}, port={port}, n_workers={n_workers}, **{opts!r})
        """)
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=env(**(environ or {})),
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("Scheduler started at "):
            self.proc.kill()
            raise RuntimeError(f"scheduler did not start: {line!r} {self.read_log()}")
        self.address = line.split()[-1]
        _, self.host, self.port = address.parse_address(self.address)

    def read_log(self) -> str:
        with open(self.log.name) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        os.unlink(self.log.name)
        return code


def start_worker(address: str, *args: str, **env_extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shmdask.cluster.remote_worker", address,
                             *args], env=env(**env_extra), stderr=subprocess.PIPE, text=True)


def remote_workers(client: Client) -> dict:
    return {w: i for w, i in client.scheduler_info()["workers"].items()
            if i["kind"] == "remote"}


def stop_worker(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        code = proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
    return code


def inc(x):
    return x + 1


def slow_inc(x):
    time.sleep(0.3)
    return x + 1


@pytest.fixture(scope="module")
def scheduler():
    s = SchedulerProcess()
    worker = start_worker(s.address)
    try:
        yield s
    finally:
        stop_worker(worker)
        assert s.stop() == 0


@pytest.fixture
def client(scheduler):
    c = Client(f"{scheduler.host}:{scheduler.port}", set_as_default=False)
    wait_for(lambda: remote_workers(c), what="a remote worker")
    yield c
    c.close()


def assert_still_serving(scheduler):
    with Client(scheduler.address, set_as_default=False) as c:
        assert c.submit(inc, 41).result(timeout=30) == 42


# -- joining, running, leaving -------------------------------------------------------


def test_remote_worker_joins_and_runs_tasks(client, scheduler):
    (info,) = remote_workers(client).values()
    assert info["kind"] == "remote" and info["nthreads"] == 1
    assert info["pid"] != os.getpid()
    futures = client.map(inc, range(200))
    assert client.gather(futures) == list(range(1, 201))
    records = client.connection.task_stream().records_since(0)
    assert {r["worker"] for r in records} <= set(remote_workers(client))
    assert all(r["remote"] for r in records)
    assert "Scheduler started at" not in scheduler.read_log()  # that went to stdout
    assert "joined" in scheduler.read_log()


def test_arrays_travel_both_ways_through_a_remote_worker(client):
    x = np.random.default_rng(0).random((500, 400))
    [fx] = client.scatter([x])
    fy = client.submit(np.multiply, fx, 3.0)
    fz = client.submit(np.sum, fy)
    y = fy.result()
    assert np.array_equal(y, x * 3.0)
    assert y.flags.writeable  # private, writeable copies for the user
    assert fz.result() == pytest.approx((x * 3.0).sum())
    records = client.connection.task_stream().records_since(0)
    moved = [r for r in records if r["kind"] == "transfer"]
    assert moved and all(r["nbytes"] >= x.nbytes for r in moved)
    assert all(r["start"] <= r["stop"] for r in moved)
    metrics = next(iter(remote_workers(client).values()))["metrics"]
    assert metrics["input_bytes"] >= 2 * x.nbytes and metrics["result_bytes"] >= x.nbytes


def test_task_errors_come_back_with_their_traceback(client):
    def boom(x):
        raise ValueError(f"bad value {x}")

    f = client.submit(boom, 3)
    with pytest.raises(ValueError, match="bad value 3"):
        f.result(timeout=30)


def test_worker_leaves_cleanly_on_sigterm(client, scheduler):
    before = set(remote_workers(client))
    proc = start_worker(scheduler.address, "--name", "leaver")
    wait_for(lambda: len(remote_workers(client)) == len(before) + 1, what="second worker")
    (new,) = set(remote_workers(client)) - before
    assert remote_workers(client)[new]["name"] == "leaver"
    futures = client.map(slow_inc, range(6), key=[f"leave-{i}" for i in range(6)])
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert "left" in proc.stderr.read()
    proc.stderr.close()
    assert client.gather(futures) == list(range(1, 7))  # its tasks moved elsewhere
    wait_for(lambda: new not in remote_workers(client), what="the worker to be gone")
    assert "left (received SIGTERM)" in scheduler.read_log()


def test_nworkers_starts_several_worker_processes(client, scheduler):
    before = set(remote_workers(client))
    proc = start_worker(scheduler.address, "--nworkers", "2", "--name", "pair")
    wait_for(lambda: len(set(remote_workers(client)) - before) == 2, what="two workers")
    names = {remote_workers(client)[w]["name"] for w in set(remote_workers(client)) - before}
    assert names == {"pair-0", "pair-1"}
    proc.send_signal(signal.SIGTERM)  # passed on to both
    assert proc.wait(15) == 0
    proc.stderr.close()
    wait_for(lambda: set(remote_workers(client)) == before, what="both to leave")


def test_worker_killed_mid_run_has_its_tasks_rerun(client, scheduler):
    proc = start_worker(scheduler.address)
    n = len(remote_workers(client))
    wait_for(lambda: len(remote_workers(client)) >= 2, what="second worker")
    futures = client.map(slow_inc, range(10), key=[f"kill-{i}" for i in range(10)])
    wait_for(lambda: any(i["metrics"]["executing"] for w, i in remote_workers(client).items()
                         if i["pid"] == proc.pid), what="the victim to be busy")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stderr.close()
    assert client.gather(futures) == list(range(1, 11))
    wait_for(lambda: len(remote_workers(client)) == n - 1 or len(remote_workers(client)) == 1,
             what="the dead worker to be forgotten")


def test_a_silent_worker_is_dropped_after_the_heartbeat_timeout(client, scheduler):
    proc = start_worker(scheduler.address)
    wait_for(lambda: any(i["pid"] == proc.pid for i in remote_workers(client).values()),
             what="the worker")
    proc.send_signal(signal.SIGSTOP)  # alive but silent
    try:
        futures = client.map(slow_inc, range(6), key=[f"stop-{i}" for i in range(6)])
        assert client.gather(futures) == list(range(1, 7))
        wait_for(lambda: all(i["pid"] != proc.pid for i in remote_workers(client).values()),
                 timeout=10, what="the silent worker to be dropped")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()
    assert "silent" in scheduler.read_log()


def test_several_clients_at_once(scheduler):
    code = textwrap.dedent(f"""
        import sys
        from shmdask.client import Client
        n = int(sys.argv[1])
        with Client({scheduler.address!r}) as c:
            fs = c.map(lambda x, n=n: x * n, range(50))
            print(sum(c.gather(fs)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)], env=env(),
                              stdout=subprocess.PIPE, text=True) for n in (1, 2, 3)]
    with Client(scheduler.address, set_as_default=False) as mine:
        assert sum(mine.gather(mine.map(inc, range(50)))) == sum(range(1, 51))
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert [int(o) for o in outs] == [sum(range(50)) * n for n in (1, 2, 3)]


def test_shmdask_compute_uses_the_remote_client(client):
    import shmdask

    @shmdask.delayed
    def add(a, b):
        return a + b

    total = add(add(1, 2), add(3, 4))
    (value,) = shmdask.compute(total, scheduler=client)
    assert value == 10


# -- bad input: refused, logged, and the scheduler keeps serving ------------------------


def raw_socket(scheduler) -> socket.socket:
    return socket.create_connection((scheduler.host, scheduler.port), timeout=5)


def authenticated_comm(scheduler) -> Comm:
    sock = raw_socket(scheduler)
    key = auth.find_key(scheduler.host, scheduler.port)
    auth.client_handshake(sock, key)
    c = Comm(sock, "test")
    c.send(header_frames(("hello", "client", {})))
    assert recv_message(c)[0][0] == "welcome"
    return c


def wait_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Read until the scheduler hangs up; returns what it sent."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    sock.close()
    return data


def test_no_key_is_refused(scheduler, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no key file to find
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("SHMDASK_AUTH_KEY", raising=False)
    with pytest.raises(ValueError, match="no cluster key"):
        Client(scheduler.address, set_as_default=False)
    # a peer that just makes up a proof
    sock = raw_socket(scheduler)
    sock.sendall(auth.MAGIC + (1).to_bytes(2, "big"))
    assert sock.recv(33)[:1] == b"N"  # the challenge
    sock.sendall(b"\0" * 64)
    assert b"authentication failed" in wait_closed(sock)
    monkeypatch.undo()
    assert_still_serving(scheduler)
    assert "failed authentication" in scheduler.read_log()


def test_a_wrong_address_is_named_before_any_key_is_looked_for(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no key anywhere: the address must still win
    monkeypatch.delenv("SHMDASK_AUTH_KEY", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        Client(f"127.0.0.1:{port}", timeout=2, set_as_default=False)


def test_client_takes_the_key_as_an_argument(scheduler, monkeypatch, tmp_path):
    key = auth.key_file(scheduler.host, scheduler.port).read_text()
    monkeypatch.setenv("HOME", str(tmp_path))  # no key file to find: only the argument
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("SHMDASK_AUTH_KEY", raising=False)
    with Client(scheduler.address, auth_key=key, set_as_default=False) as c:
        assert "workers" in c.scheduler_info()
    with pytest.raises(TypeError, match="n_workers"):
        Client(scheduler.address, n_workers=2, set_as_default=False)


def test_wrong_key_is_refused(scheduler):
    from shmdask.cluster.tcp_client import connect_client

    with pytest.raises(AuthenticationError, match="authentication failed"):
        connect_client(scheduler.address, auth_key="not the key")
    worker = start_worker(scheduler.address, SHMDASK_AUTH_KEY="not the key")
    assert worker.wait(20) == 2  # refused: no retrying with a wrong key
    assert "authentication failed" in worker.stderr.read()
    worker.stderr.close()
    assert_still_serving(scheduler)


def test_garbage_bytes_are_refused(scheduler):
    sock = raw_socket(scheduler)
    sock.sendall(os.urandom(4096))
    wait_closed(sock)
    assert_still_serving(scheduler)
    assert "not speaking the shmdask protocol" in scheduler.read_log()


def test_an_http_request_is_refused(scheduler):
    sock = raw_socket(scheduler)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    answer = wait_closed(sock)
    assert answer.startswith(b"HTTP/1.0 400 Bad Request")
    assert b"shmdask scheduler" in answer
    assert_still_serving(scheduler)
    assert "HTTP request" in scheduler.read_log()


def test_a_frame_claiming_terabytes_is_refused(scheduler):
    c = authenticated_comm(scheduler)
    c.sock.sendall(FRAME_COUNT.pack(1) + (1 << 42).to_bytes(8, "big"))
    wait_closed(c.sock)
    assert_still_serving(scheduler)
    assert "announced a frame of 4398046511104 bytes" in scheduler.read_log()


def test_a_truncated_frame_is_refused(scheduler):
    c = authenticated_comm(scheduler)
    c.sock.sendall(FRAME_COUNT.pack(2) + (10).to_bytes(8, "big") + (1000).to_bytes(8, "big")
                   + pickle.dumps(("x",))[:10] + b"partial")
    c.sock.shutdown(socket.SHUT_WR)
    wait_closed(c.sock)
    assert_still_serving(scheduler)
    assert "in the middle of a frame" in scheduler.read_log()


def test_a_worker_cut_off_in_the_middle_of_a_message_has_its_tasks_rerun():
    """A worker that dies while it sends (killed, cable pulled) is a lost worker,
    as one that dies between messages is: its tasks run again elsewhere."""
    from shmdask.cluster.tcp_client import open_comm

    s = SchedulerProcess()
    hello = {"name": "cut-off", "nthreads": 1, "pid": os.getpid(), "host": "here",
             "memory_limit": None}
    fake, _ = open_comm(s.address, "worker", hello, None, 10)
    worker = None
    try:
        with Client(s.address, set_as_default=False) as c:
            future = c.submit(inc, 41, key="cut-off-task")
            while True:  # answer pings until the task comes
                header, _, _ = recv_message(fake)
                if header[0] == "ping":
                    fake.send(header_frames(("pong", header[1], time.time(), 0)))
                elif header[0] == "run":
                    break
            assert "cut-off-task" in header[1]
            fake.sock.sendall(FRAME_COUNT.pack(1) + (100).to_bytes(8, "big") + b"x" * 10)
            fake.abort()
            worker = start_worker(s.address)
            assert future.result(timeout=30) == 42
        assert "in the middle of a frame" in s.read_log()
        assert "broke the shmdask protocol" not in s.read_log()
    finally:
        fake.abort()
        if worker is not None:
            stop_worker(worker)
        assert s.stop() == 0


def test_garbage_after_authentication_is_refused(scheduler):
    c = authenticated_comm(scheduler)
    c.send([b"\x80\x05 not a pickle at all"])
    wait_closed(c.sock)
    c = authenticated_comm(scheduler)
    c.send([*header_frames(("submit", ["k"])), b"junk", b"more junk"])
    header = ("ping",)
    while header[0] == "ping":
        header, _, _ = recv_message(c)  # the keys of a body that cannot be loaded fail
    assert header[0] == "statuses" and header[1][0][:2] == ("k", "erred")
    c.close()
    assert_still_serving(scheduler)
    assert "cannot be read" in scheduler.read_log()


def test_a_silent_peer_is_dropped_after_the_handshake_timeout(scheduler):
    sock = raw_socket(scheduler)
    start = time.monotonic()
    assert wait_closed(sock) == b""  # we say nothing; handshake_timeout is 1 s
    assert time.monotonic() - start < 9
    assert_still_serving(scheduler)
    assert "timed out" in scheduler.read_log()


# -- local + remote, and the scheduler going away ----------------------------------------


def test_mixed_local_and_remote_run():
    s = SchedulerProcess(n_workers=1)
    worker = start_worker(s.address)
    try:
        with Client(s.address, set_as_default=False) as c:
            wait_for(lambda: len(c.scheduler_info()["workers"]) == 2, what="both workers")
            kinds = {i["kind"] for i in c.scheduler_info()["workers"].values()}
            assert kinds == {"local", "remote"}

            def chunk(i):
                time.sleep(0.02)
                return np.full(50_000, float(i))

            def total(*chunks):
                return float(sum(ch.sum() for ch in chunks))

            parts = [c.submit(chunk, i, key=f"chunk-{i}") for i in range(24)]
            sums = [c.submit(np.sum, p, key=f"sum-{i}") for i, p in enumerate(parts)]
            result = c.submit(total, *parts, key="total")
            assert result.result(timeout=60) == 50_000 * sum(range(24))
            assert c.gather(sums) == [50_000.0 * i for i in range(24)]
            records = c.connection.task_stream().records_since(0)
            ran_on = {r["remote"] for r in records if r["kind"] == "compute"}
            assert ran_on == {True, False}
            # Tasks with large inputs stay on the worker that maps them from shm.
            [big] = c.scatter([np.ones(400_000)])  # 3.2 MB
            heavy = [c.submit(np.sum, big, key=f"heavy-{i}") for i in range(8)]
            assert c.gather(heavy) == [400_000.0] * 8
            records = c.connection.task_stream().records_since(0)
            assert not [r for r in records if str(r["key"]).startswith("heavy-")
                        and r["remote"]]
    finally:
        stop_worker(worker)
        worker.stderr.close()
        assert s.stop() == 0


def test_scheduler_going_away():
    s = SchedulerProcess()
    worker = start_worker(s.address, "--reconnect-timeout", "1.5")
    c = Client(s.address, set_as_default=False)
    try:
        wait_for(lambda: remote_workers(c), what="the worker")
        f = c.submit(time.sleep, 30, key="long")
        time.sleep(0.3)
        s.stop(signal.SIGKILL)
        auth.key_file(s.host, s.port).unlink()  # a killed scheduler cannot remove it
        with pytest.raises(ConnectionError, match="scheduler"):
            f.result(timeout=30)
        assert worker.wait(30) == 1
        assert "giving up: no scheduler" in worker.stderr.read()
    finally:
        worker.stderr.close()
        stop_worker(worker)
        c.close()


def test_workers_rejoin_a_restarted_scheduler():
    s = SchedulerProcess()
    port = s.port
    worker = start_worker(s.address, "--reconnect-timeout", "30")
    try:
        with Client(s.address, set_as_default=False) as c:
            wait_for(lambda: remote_workers(c), what="the worker")
        assert s.stop() == 0
        s = SchedulerProcess(port=port)
        with Client(s.address, set_as_default=False) as c:
            wait_for(lambda: remote_workers(c), what="the worker to rejoin")
            assert c.submit(inc, 1).result(timeout=30) == 2
    finally:
        stop_worker(worker)
        worker.stderr.close()
        s.stop()


def test_key_file_is_removed_when_the_scheduler_closes():
    s = SchedulerProcess()
    path = auth.key_file(s.host, s.port)
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
    assert s.stop() == 0
    assert not path.exists()


# -- TLS ---------------------------------------------------------------------------------


def test_tls_workers_and_clients(certificate, monkeypatch):
    cert, key = certificate
    s = SchedulerProcess(tls_cert=cert, tls_key=key, tls_ca=cert)
    assert s.address.startswith("tls://")
    worker = start_worker(s.address, "--tls-ca", cert, "--tls-cert", cert, "--tls-key", key)
    try:
        monkeypatch.setenv("SHMDASK_TLS_CA", cert)
        monkeypatch.setenv("SHMDASK_TLS_CERT", cert)
        monkeypatch.setenv("SHMDASK_TLS_KEY", key)
        with Client(s.address, set_as_default=False) as c:
            wait_for(lambda: remote_workers(c), what="the TLS worker")
            x = np.arange(200_000.0)
            [fx] = c.scatter([x])
            assert np.array_equal(c.submit(np.negative, fx).result(timeout=30), -x)
            assert sum(c.gather(c.map(inc, range(100)))) == sum(range(1, 101))
        monkeypatch.delenv("SHMDASK_TLS_CERT")
        monkeypatch.delenv("SHMDASK_TLS_KEY")
        from shmdask.cluster.tcp_client import connect_client

        with pytest.raises((ConnectionError, OSError)):  # no client certificate
            connect_client(s.address, timeout=5)
        with pytest.raises(ConnectionError):  # plain TCP to a TLS listener
            connect_client(s.address.replace("tls://", "tcp://"), timeout=5)
        monkeypatch.delenv("SHMDASK_TLS_CA")
        with pytest.raises(ValueError, match="tls_ca"):
            connect_client(s.address, timeout=5)
        assert "refused connection" in s.read_log()
    finally:
        stop_worker(worker)
        worker.stderr.close()
        assert s.stop() == 0


# -- listeners on in-process clusters -----------------------------------------------------


@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_listener_on_an_in_process_cluster(kind):
    from shmdask.cluster.local_cluster import LocalCluster
    from shmdask.cluster.tcp_server import attach_listener
    from shmdask.scheduler.local import ThreadCluster

    cluster = LocalCluster(n_workers=1) if kind == "processes" else ThreadCluster(1)
    listener = attach_listener(cluster, "tcp://127.0.0.1:0", **HEARTBEAT)
    worker = start_worker(listener.address, "--reconnect-timeout", "0")
    try:
        with Client(listener.address, set_as_default=False) as c:
            wait_for(lambda: remote_workers(c), what="the worker")
            x = np.arange(300_000.0)
            [fx] = c.scatter([x])
            with c.get_task_stream() as ts:
                ys = c.gather([c.submit(np.add, fx, i, key=f"add-{i}") for i in range(8)])
            assert all(np.array_equal(y, x + i) for i, y in enumerate(ys))
            assert {r["key"] for r in ts.data if r["kind"] == "compute"} >= {
                f"add-{i}" for i in range(8)}
            assert c.connection.tasks_done() >= 8
        with Client(cluster, set_as_default=False) as local:  # the in-process view
            assert local.submit(inc, 1).result(timeout=30) == 2
    finally:
        cluster.close()
        wait_for(lambda: listener.closing, timeout=10, what="the listener to close")
        assert worker.wait(30) == 1  # gave up reconnecting at once
        worker.stderr.close()
    assert listener.key_path is not None and not listener.key_path.exists()


def test_clock_of_a_remote_host_is_corrected(client, scheduler):
    # A worker whose clock runs 1000 s ahead: its stamps must come back on ours.
    code = ("import sys, time; _t = time.time; time.time = lambda: _t() + 1000.0; "
            "from shmdask.cluster.remote_worker import main; main(sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", code, scheduler.address, "--name", "skewed"],
                            env=env(), stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(i["name"] == "skewed" for i in remote_workers(client).values()),
                 what="the skewed worker")
        (wid,) = [w for w, i in remote_workers(client).items() if i["name"] == "skewed"]
        assert abs(remote_workers(client)[wid]["clock_offset"] - 1000.0) < 0.5
        before = time.time()
        records = []
        for round in range(10):  # until the engine has given the skewed worker some
            keys = [f"skew-{round}-{i}" for i in range(6)]
            client.gather(client.map(slow_inc, range(6), key=keys))
            records = [r for r in client.connection.task_stream().records_since(0)
                       if r["worker"] == wid and str(r["key"]).startswith("skew-")]
            if records:
                break
        after = time.time()
        assert records, "the skewed worker ran nothing"
        for r in records:
            assert before - 0.5 <= r["start"] <= r["stop"] <= after + 0.5
    finally:
        stop_worker(proc)
        proc.stderr.close()


# -- a worker on another "host": its own network namespace and its own /dev/shm ----------


@pytest.fixture
def network_namespace():
    """A network namespace joined to this one by a veth pair: (netns, host ip, its ip)."""
    import shutil
    import uuid

    if shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("needs the ip and unshare commands")
    name = f"shmd-{uuid.uuid4().hex[:6]}"
    octet = 1 + int(name[-2:], 16) % 250
    host_ip, ns_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"
    veth = f"v{name[5:]}"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", f"{veth}h", "type", "veth", "peer", "name", f"{veth}n"],
        ["ip", "link", "set", f"{veth}n", "netns", name],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", f"{veth}h"],
        ["ip", "link", "set", f"{veth}h", "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", f"{ns_ip}/30", "dev", f"{veth}n"],
        ["ip", "netns", "exec", name, "ip", "link", "set", f"{veth}n", "up"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
    ]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot set up a network namespace here: {' '.join(step)}: "
                            f"{done.stderr.strip()}")
        yield name, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", f"{veth}h"], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_worker_in_its_own_network_namespace_and_shared_memory(network_namespace):
    netns, host_ip, ns_ip = network_namespace
    s = SchedulerProcess(n_workers=1, host=host_ip)
    key = auth.key_file(host_ip, s.port).read_text()
    script = ("mount -t tmpfs -o size=16m tmpfs /dev/shm && "
              f"exec {sys.executable} -m shmdask.cluster.remote_worker {s.address} "
              "--name far-away")
    worker = subprocess.Popen(
        ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private",
         "sh", "-c", script], env=env(SHMDASK_AUTH_KEY=key), stderr=subprocess.PIPE, text=True)
    try:
        with Client(s.address, set_as_default=False) as c:
            wait_for(lambda: remote_workers(c), what="the worker in the namespace")
            (info,) = remote_workers(c).values()
            assert info["address"].startswith(ns_ip)  # it really comes over the veth link
            # 480 kB: under Engine.remote_input_limit, so the remote worker gets
            # its share (inputs above it go to the local worker)
            x = np.random.default_rng(1).random((200, 300))
            [fx] = c.scatter([x])  # lives in the scheduler host's shared memory
            futures = [c.submit(np.multiply, fx, float(i), key=f"far-{i}") for i in range(12)]
            total = c.submit(sum, futures, key="far-total")
            assert np.allclose(total.result(timeout=60), x * sum(range(12)))
            records = c.connection.task_stream().records_since(0)
            far = [r for r in records if r["kind"] == "compute" and r["remote"]]
            assert far, "the namespaced worker ran nothing"
            assert any(r["kind"] == "transfer" for r in records)
    finally:
        stop_worker(worker)
        worker.stderr.close()
        assert s.stop() == 0


def test_dropped_futures_release_their_data_on_the_scheduler():
    import gc

    from shmdask.cluster.tcp_server import attach_listener
    from shmdask.scheduler.local import ThreadCluster

    cluster = ThreadCluster(1)
    listener = attach_listener(cluster, "tcp://127.0.0.1:0", **HEARTBEAT)
    try:
        with Client(listener.address, set_as_default=False) as c:
            futures = c.map(inc, range(500), key=[f"drop-{i}" for i in range(500)])
            assert c.gather(futures)[-1] == 500
            assert len(cluster.engine.data) == 500
            keep = futures[7]
            del futures
            gc.collect()
            wait_for(lambda: list(cluster.engine.data) == ["drop-7"], timeout=10,
                     what="the dropped keys to be released")
            again = c.submit(inc, 6, key="drop-6")  # a released key, wanted again
            assert again.result(timeout=10) == 7 and keep.result() == 8
        wait_for(lambda: not cluster.engine.data, timeout=10,
                 what="a closed client's keys to be released")
    finally:
        cluster.close()
