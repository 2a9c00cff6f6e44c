"""A worker process that joins a scheduler over TCP (``shmdask worker ADDRESS``).

In: task batches from the scheduler as frames (inputs inline: this host may
not see the scheduler's shared memory), pings.  Out: batches of results
(each value's buffers as frames of their own), pongs carrying our clock and
memory use, and a goodbye when told to stop.

It is the local worker (:class:`shmdask.cluster.worker.Worker`: the same
executor threads, task execution, result serialization and records) with
another transport: :class:`RemoteWorker` replaces only ``send`` and the
receive loop.  ``use_shm=False``: every result travels inline.

Lifecycle::

    connect ─▶ handshake (HMAC) ─▶ hello/welcome ─▶ serve ─┬─ SIGTERM/SIGINT: goodbye, exit 0
       ▲                                                   └─ connection lost
       └──── retry with backoff for ``reconnect_timeout`` s ──┘   (then exit 1, saying why)

A wrong key is not retried: it exits at once (code 2).  ``nworkers > 1``
starts that many worker processes (this command then only supervises them
and passes SIGTERM/SIGINT on).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from typing import Any

from shmdask.cluster.comm import (
    AuthenticationError,
    Comm,
    CommClosedError,
    dumps_values,
    header_frames,
    recv_message,
)
from shmdask.cluster.protocol import dumps_message
from shmdask.cluster.worker import Worker
from shmdask.logs import WORKER_FORMAT, log_to_stderr

RECONNECT_TIMEOUT = 60.0


class _Leave(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT: leave the cluster cleanly."""


class RemoteWorker(Worker):
    """:class:`Worker` over a :class:`Comm` instead of a pipe."""

    def __init__(self, comm: Comm, worker_id: str, nthreads: int = 1):
        super().__init__(None, worker_id, "remote", nthreads=nthreads, use_shm=False)
        self.comm = comm
        try:
            import psutil

            self._process = psutil.Process()
        except Exception:  # pragma: no cover - psutil is a dependency
            self._process = None

    def send(self, header: tuple, body: Any = None) -> None:
        if header[0] == "results":
            frames, data = dumps_values(header, body)
        else:
            frames = [*header_frames(header),
                      *(dumps_message(body) if body is not None else [])]
            data = frozenset()
        try:
            self.comm.send(frames, data)
        except CommClosedError:
            pass  # the scheduler is gone: it reschedules what these results were for

    def _memory(self) -> int:
        try:
            return self._process.memory_info().rss if self._process else 0
        except Exception:
            return 0

    def serve(self) -> str:
        """Run tasks until the connection ends; returns why it ended."""
        self.start_lanes()
        while True:
            try:
                header, body, _ = recv_message(self.comm)
            except ConnectionError as exc:
                return str(exc)
            op = header[0]
            if op == "run":
                self.bytes_received += sum(memoryview(f).nbytes for f in body)
                self._receive_tasks(header[1], body)
            elif op == "ping":
                self.send(("pong", header[1], time.time(), self._memory()))
            elif op == "stats":
                self.send(("stats", self.stats(), *header[1:]))
            elif op == "close":
                return "the scheduler closed"
            else:
                # "free" / "forget" concern shared memory, which we do not use
                self.handle_request(op, header, body)


def _connect(address: str, name: str | None, nthreads: int, auth_key, tls: dict,
             timeout: float) -> tuple[Comm, tuple]:
    from shmdask.cluster.tcp_client import open_comm

    host = socket.gethostname()
    hello = {"name": name or f"{host}-{os.getpid()}", "nthreads": nthreads,
             "pid": os.getpid(), "host": host, "memory_limit": None}
    return open_comm(address, "worker", hello, auth_key, timeout, **tls)


log = logging.getLogger("shmdask.worker")


def _say(msg: str) -> None:
    log.info("%s", msg)


def _run_one(address: str, name: str | None, auth_key, nthreads: int,
             reconnect_timeout: float, tls: dict, connect_timeout: float) -> int:
    def leave(signum, frame):
        raise _Leave(signal.Signals(signum).name)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, leave)
        signal.signal(signal.SIGINT, leave)
    comm = None
    joined = False
    try:
        while True:
            deadline = time.monotonic() + reconnect_timeout
            delay = 0.1
            while True:
                try:
                    comm, welcome = _connect(address, name, nthreads, auth_key, tls,
                                             connect_timeout)
                except (AuthenticationError, ssl.SSLCertVerificationError) as exc:
                    if not joined:  # a wrong key or certificate: say so at once
                        _say(f"cannot join {address}: {exc}")
                        return 2
                    error = exc  # a restarted scheduler may have a new key file soon
                except (ConnectionError, OSError, ValueError) as exc:
                    error = exc  # not up yet (no port, no key file): try again
                else:
                    break
                if time.monotonic() + delay > deadline:
                    _say(f"giving up: no scheduler at {address} for {reconnect_timeout:g} s "
                         f"(last error: {error})")
                    return 1
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
            joined = True
            worker_id = welcome[1]
            _say(f"joined {address} as {worker_id}")
            worker = RemoteWorker(comm, worker_id, nthreads)
            worker.given_name = name
            Worker.instance = worker  # this process's worker (get_worker off task threads)
            # A task's get_client() connects where this worker did.
            worker.scheduler_connect = {"address": address, "auth_key": auth_key, **tls}
            why = worker.serve()
            comm.abort()
            comm = None
            _say(f"connection to {address} ended ({why}); reconnecting for up to "
                 f"{reconnect_timeout:g} s")
    except _Leave as exc:
        if comm is not None and not comm.closed:
            try:
                comm.send(header_frames(("goodbye", f"received {exc.args[0]}")))
            except ConnectionError:
                pass
            comm.abort()
        _say(f"left {address} ({exc.args[0]})")
        return 0


def run_worker(address: str, nworkers: int = 1, name: str | None = None,
               auth_key: str | bytes | None = None, nthreads: int = 1,
               reconnect_timeout: float = RECONNECT_TIMEOUT, *,
               tls_ca: str | None = None, tls_cert: str | None = None,
               tls_key: str | None = None, connect_timeout: float = 10) -> int:
    """Join the scheduler at ``address`` and run its tasks until SIGTERM/SIGINT.

    Blocks; returns the exit code (0: left on a signal; 1: the scheduler was
    unreachable for ``reconnect_timeout`` s; 2: refused, e.g. wrong key)."""
    for what, value, low in (("nworkers", nworkers, 1), ("nthreads", nthreads, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what} must be an int, not {type(value).__name__}")
        if value < low:
            raise ValueError(f"{what} must be >= {low}, got {value}")
    if reconnect_timeout < 0:
        raise ValueError(f"reconnect_timeout must be >= 0, got {reconnect_timeout}")
    from shmdask.cluster.address import parse_address
    from shmdask.cluster.auth import client_ssl_context, tls_from_env

    scheme, _, _ = parse_address(address)  # a bad address fails here, clearly
    from shmdask.cluster.worker_calls import keep_logs

    keep_logs()
    tls = {"tls_ca": tls_ca, "tls_cert": tls_cert, "tls_key": tls_key}
    if not any(tls.values()):
        tls = tls_from_env()
    # Bad TLS settings fail now, not after reconnect_timeout of retries.
    if scheme == "tls" and client_ssl_context(tls["tls_ca"], tls["tls_cert"],
                                              tls["tls_key"]) is None:
        raise ValueError(f"{address}: a tls:// address needs the CA that signed the "
                         "scheduler's certificate (--tls-ca or SHMDASK_TLS_CA)")
    log_to_stderr(WORKER_FORMAT)  # this process's stderr is ours: say what happens
    if nworkers == 1:
        return _run_one(address, name, auth_key, nthreads, reconnect_timeout, tls,
                        connect_timeout)
    return _supervise(address, nworkers, name, auth_key, nthreads, reconnect_timeout, tls)


def _supervise(address, nworkers, name, auth_key, nthreads, reconnect_timeout, tls) -> int:
    env = dict(os.environ)
    if auth_key is not None:  # by environment, never on a command line others can read
        env["SHMDASK_AUTH_KEY"] = (auth_key.decode() if isinstance(auth_key, bytes)
                                   else auth_key)
    procs = []
    for i in range(nworkers):
        cmd = [sys.executable, "-m", "shmdask.cluster.remote_worker", address,
               "--nthreads", str(nthreads), "--reconnect-timeout", str(reconnect_timeout)]
        if name:
            cmd += ["--name", f"{name}-{i}"]
        for opt, value in tls.items():
            if value:
                cmd += [f"--{opt.replace('_', '-')}", value]
        procs.append(subprocess.Popen(cmd, env=env))

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    return max(codes, key=abs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shmdask.cluster.remote_worker",
                                     description="Join a shmdask scheduler over TCP.")
    parser.add_argument("address", help="scheduler address, e.g. tcp://127.0.0.1:8786")
    parser.add_argument("--nworkers", type=int, default=1)
    parser.add_argument("--nthreads", type=int, default=1)
    parser.add_argument("--name", default=None)
    parser.add_argument("--reconnect-timeout", type=float, default=RECONNECT_TIMEOUT)
    parser.add_argument("--tls-ca", default=None)
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    args = parser.parse_args(argv)
    from shmdask.cluster.worker import _extend_sys_path

    _extend_sys_path()  # a worker started by a Python program sees its modules
    code = run_worker(args.address, args.nworkers, args.name, None, args.nthreads,
                      args.reconnect_timeout, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                      tls_key=args.tls_key)
    from shmdask.cluster.worker_calls import remove_uploads

    remove_uploads()  # os._exit skips atexit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()


__all__ = ["RemoteWorker", "run_worker", "main"]
