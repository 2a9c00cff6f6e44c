"""``Scheduler``, ``Worker`` and ``Nanny``: a cluster assembled by hand in Python, as
dask's tutorial does::

    async with Scheduler() as s:                      # or:  with Scheduler() as s:
        async with Worker(s.address) as w:            #        with Worker(s.address):
            async with Client(s.address, asynchronous=True) as client: ...

On one machine these are thin: a :class:`Scheduler` is a LocalCluster with no
workers of its own that listens on TCP (``port=0``: any free port; loopback
unless ``host`` says otherwise).  A :class:`Worker` given the address of a
Scheduler of this process joins it as a local worker process, sharing its
memory (shared-memory data plane, as LocalCluster's own workers); given any
other address it starts ``shmdask worker ADDRESS`` (a worker over TCP) as a
child process and waits until the scheduler lists it.  A :class:`Nanny` is a
Worker: shmdask workers are already processes of their own, restarted by
the cluster when they die.

Each object starts when awaited or entered (``async with`` / ``with`` /
``await`` / ``.start()``), and stops on exit or ``close()`` (which may be
awaited too); starting runs in a thread so an event loop keeps serving.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

from shmdask.cluster.address import format_address, parse_address
from shmdask.start_on_await import StartOnAwait

START_TIMEOUT = 60.0  # seconds a worker may take to appear at its scheduler

_schedulers: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # address -> Scheduler


class _Done:
    """What ``close()`` returns: nothing to wait for, but ``await s.close()`` works."""

    def __await__(self):
        yield from ()
        return None


class _Server(StartOnAwait):
    """Start on await / enter, stop on exit; see the module docstring."""

    status = "created"

    def start(self) -> _Server:
        raise NotImplementedError

    def close(self) -> _Done:
        raise NotImplementedError

    def _start(self) -> _Server:
        return self.start()

    def _close(self) -> _Done:
        return self.close()

    def __enter__(self) -> _Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Scheduler(_Server):
    """A scheduler listening on TCP, with no workers until some join."""

    def __init__(self, host: str | None = None, port: int = 0, *,
                 auth_key: str | bytes | None = None, **options: Any):
        ignored = {"dashboard_address", "dashboard", "interface", "protocol", "validate",
                   "idle_timeout", "security", "preload", "blocked_handlers"}
        unknown = set(options) - ignored
        if unknown:
            raise TypeError(f"Scheduler() got unexpected keyword argument(s) "
                            f"{', '.join(sorted(unknown))}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError(f"port must be an int in 0..65535, not {port!r}")
        self.host = host or "127.0.0.1"
        self.port = port
        self.auth_key = auth_key
        self.cluster: Any = None
        self._lock = threading.Lock()

    def start(self) -> Scheduler:
        with self._lock:
            if self.cluster is None:
                from shmdask.cluster.local_cluster import LocalCluster
                from shmdask.cluster.tcp_server import attach_listener

                cluster = LocalCluster(n_workers=0)
                try:
                    attach_listener(cluster, format_address("tcp", self.host, self.port),
                                    self.auth_key)
                except BaseException:
                    cluster.close()
                    raise
                self.cluster = cluster
                self.status = "running"
                _schedulers[self.address] = self
        return self

    @property
    def address(self) -> str:
        if self.cluster is None:
            raise RuntimeError("the Scheduler is not started: await it, or use it in a "
                               "with block")
        return self.cluster.scheduler_address

    @property
    def workers(self) -> dict:
        return self.cluster.scheduler.workers if self.cluster is not None else {}

    def close(self) -> _Done:
        with self._lock:
            if self.cluster is not None:
                listener = self.cluster._listener
                self.cluster.close()
                if listener is not None:
                    listener.close()
                self.status = "closed"
        return _Done()

    def __repr__(self) -> str:
        where = self.cluster.scheduler_address if self.cluster is not None else "not started"
        return f"<Scheduler {where!r} {self.status}>"


class Worker(_Server):
    """A worker process joining the scheduler at ``scheduler_ip`` (see the module docstring)."""

    def __init__(self, scheduler_ip: str | None = None, scheduler_port: int | None = None,
                 *, nthreads: int = 1, name: str | None = None,
                 auth_key: str | bytes | None = None, **options: Any):
        if scheduler_ip is None:
            raise TypeError("Worker() needs the scheduler's address, e.g. Worker(s.address)")
        address = str(scheduler_ip)
        if scheduler_port is not None:
            address = f"{address}:{scheduler_port}"
        scheme, host, port = parse_address(address)  # a bad address fails here
        if isinstance(nthreads, bool) or not isinstance(nthreads, int) or nthreads < 1:
            raise ValueError(f"nthreads must be a positive int, not {nthreads!r}")
        ignored = {"memory_limit", "resources", "dashboard_address", "local_directory",
                   "death_timeout", "lifetime", "interface", "protocol", "validate",
                   "security", "preload", "contact_address", "nanny", "host", "port"}
        unknown = set(options) - ignored
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword argument(s) "
                            f"{', '.join(sorted(unknown))}")
        self.scheduler_address = format_address(scheme, host, port)
        self.nthreads = nthreads
        self.name = name
        self.auth_key = auth_key
        self.address: str | None = None  # how the scheduler names us, once joined
        self._scheduler: Scheduler | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def start(self) -> Worker:
        with self._lock:
            if self.address is not None:
                return self
            scheduler = _schedulers.get(self.scheduler_address)
            if scheduler is not None and scheduler.cluster is not None:
                self._join_local(scheduler)
            else:
                self._join_remote()
            self.status = "running"
        return self

    def _join_local(self, scheduler: Scheduler) -> None:
        from shmdask.cluster.pipe_transport import spawn_workers

        runtime = scheduler.cluster._runtime
        worker_id = self.name or f"worker-{next(runtime.counter)}"
        if worker_id in runtime.workers:
            raise ValueError(f"the scheduler already has a worker named {worker_id!r}")
        (handle,) = spawn_workers([worker_id], runtime.cluster_id, self.nthreads,
                                  runtime.threshold, runtime.cache_bytes, runtime.memory_limit)
        handle.retiring = False
        runtime.add(handle)
        self._scheduler = scheduler
        self.address = worker_id

    def _join_remote(self) -> None:
        from shmdask.client import Client

        name = self.name or f"worker-{os.getpid()}-{id(self):x}"
        from shmdask.cluster.pipe_transport import _worker_environment

        env = _worker_environment()  # this checkout and our sys.path, as local workers get
        if self.auth_key is not None:  # by environment, never on a command line
            key = self.auth_key
            env["SHMDASK_AUTH_KEY"] = key.decode() if isinstance(key, bytes) else key
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "shmdask.cluster.remote_worker", self.scheduler_address,
             "--nthreads", str(self.nthreads), "--name", name], env=env,
            stdin=subprocess.DEVNULL, start_new_session=True)
        client = Client(self.scheduler_address, set_as_default=False, auth_key=self.auth_key)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                found = [wid for wid, w in client.scheduler_info()["workers"].items()
                         if w.get("name") == name]
                if found:
                    self.address = found[0]
                    self.name = name
                    return
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self._stop_process()
                    raise RuntimeError(f"the worker could not join {self.scheduler_address}")
                time.sleep(0.05)
        finally:
            client.close()

    def _stop_process(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.terminate()  # it says goodbye to the scheduler and exits
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> _Done:
        with self._lock:
            if self.address is None or self.status == "closed":
                return _Done()
            if self._proc is not None:
                self._stop_process()
            elif self._scheduler is not None and self._scheduler.cluster is not None \
                    and not self._scheduler.cluster.closed:
                from shmdask.cluster import scaling

                runtime = self._scheduler.cluster._runtime
                if self.address in runtime.workers:
                    scaling.retire_workers(runtime, [self.address])
            self.status = "closed"
        return _Done()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.address or 'not started'} "
                f"scheduler={self.scheduler_address!r} nthreads={self.nthreads}>")


class Nanny(Worker):
    """dask's process-supervising worker; here the same as :class:`Worker`."""


__all__ = ["Scheduler", "Worker", "Nanny"]
