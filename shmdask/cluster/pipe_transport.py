"""The pipe transport: worker processes on this machine, as the engine sees them.

What flows where::

    engine thread ──ProcessWorkerHandle.run(batch)──▶ pipe ──▶ worker process
         ▲                                                        │
         └── ("done"/"erred", ...) ◀── reader thread ◀── pipe ◀───┘

``run`` encodes a batch (functions by token, values as :class:`Stored`
references into shared memory) and writes it to the worker's end of a socket
pair; a reader thread per worker turns the worker's messages into engine
events, the blocks of its results into entries of the :class:`ShmStore`, and
its EOF (or a message it cannot read) into "worker lost".
:func:`spawn_workers` starts the processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

import psutil

from shmdask.cluster.protocol import (
    ConnectionState,
    decode_message,
    dumps_call,
    encode_frames,
    encode_message,
    load_exception,
    loads_message,
)
from shmdask.cluster.requests import Requests, answer_ask, function_result
from shmdask.cluster.result_batch import read_columns
from shmdask.cluster.store import ShmStore
from shmdask.scheduler.held_setting import HeldSetting
from shmdask.scheduler.interfaces import TaskSpec, WorkerHandle
from shmdask.scheduler.records import compute_record, compute_records

log = logging.getLogger("shmdask.cluster")

START_TIMEOUT = 60.0  # seconds a worker may take to import and say hello


# While local workers are attached, threads of this process hand the GIL over
# every half millisecond instead of every 5 ms (Python's default).  The loop
# thread gives the GIL up at each pipe write and each wait for an event, and a
# busy thread (the user's, building the next graph while a persisted one runs;
# a reader decoding results) would otherwise keep it for a whole interval: on
# a chain of tiny tasks every round trip paid that.  Measured with
# ``python -m benchmarks.run delayed_tree -r 7 --runners shmdask-threads,shmdask-cluster``:
# the cluster went from 1.56x and 1.70x the threads backend's time to 1.20x
# and 1.17x.  It only matters when threads contend, which is when it helps.
FAST_SWITCH_INTERVAL = 0.0005
FAST_SWITCHING = HeldSetting(
    sys.getswitchinterval, sys.setswitchinterval,
    lambda current: FAST_SWITCH_INTERVAL if current > FAST_SWITCH_INTERVAL else None)


class ProcessWorkerHandle(WorkerHandle):
    """One worker process, as the engine sees it."""

    kind = "local"
    retiring = False  # set when the cluster lets it go on purpose (no replacement)
    # Each message costs the client a system call and the worker a wake-up,
    # which on this 2-core VM came to ~150 us of the engine thread's CPU: tiny
    # tasks go 512 to a message, not the engine's 128 (noop_10k: 76 messages
    # of results per run -> 20; run()'s CPU per run 15-21 -> 9-14 ms).
    max_batch = 512

    def __init__(self, worker_id: str, proc: subprocess.Popen, conn: Connection, hello: dict,
                 nthreads: int, memory_limit: int | None):
        self.id = worker_id
        self.name = worker_id
        self.proc = proc
        self.pid = proc.pid
        self.conn = conn
        self.host = hello.get("host", socket.gethostname())
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        self.state = ConnectionState()
        # Keys sent and not answered, in send order, each mapped to itself: written
        # by the engine thread (run) and the reader thread (results), read by the
        # memory watcher.  The reader hands the engine these key objects, not the
        # equal ones it unpickles (see _handle_message).
        self.processing: dict = {}
        self._processing_lock = threading.Lock()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.closing = False
        self.lost_reason: str | None = None
        self._send_lock = threading.Lock()
        self._ps = psutil.Process(proc.pid)
        self._reader: threading.Thread | None = None
        self._calls = Requests()  # stats and client.run calls waiting for this worker
        # What the worker's tasks may ask of the cluster: on_ask(what, args) -> value.
        self.on_ask: Any = None
        self._store: ShmStore | None = None
        # ``paused`` and ``above_target`` (WorkerHandle's, False until then) are
        # set by the cluster's memory watcher.
        self.private_memory = 0  # last measured: resident memory not shared

    # -- sending (engine thread, store) ---------------------------------------

    def _send(self, data: bytes) -> bool:
        try:
            with self._send_lock:
                self.conn.send_bytes(data)
                self.bytes_sent += len(data)
            return True
        except (OSError, ValueError):  # the worker died: the reader reports it
            return False

    def run(self, tasks: list[TaskSpec]) -> None:
        # Sent as columns (see worker.py): each key once, no tuple per task.
        keys, computations, inputs = zip(*tasks, strict=True)
        with self._processing_lock:
            self.processing.update(zip(keys, keys, strict=True))
        if self._store is not None:
            self._store.touch([v for deps in inputs if deps for v in deps.values()])
        try:
            self._send_tasks(keys, computations, inputs)
        except Exception:
            # Some task cannot be pickled: find it, fail it, send the others.
            for key, computation, deps in tasks:
                try:
                    self._send_tasks((key,), (computation,), (deps,))
                except Exception as exc:
                    self._answered(key)
                    self._post(("erred", self.id, key, _unpicklable(key, exc),
                                traceback.format_exc(), None))

    def _send_tasks(self, keys: tuple, computations: tuple, inputs: tuple) -> None:
        # Encode and send under one lock: a message that introduces a function
        # must reach the worker before any message that refers to it by token.
        with self._send_lock:
            data = encode_message(("run", keys), (computations, inputs), self.state)
            try:
                self.conn.send_bytes(data)
                self.bytes_sent += len(data)
            except (OSError, ValueError):  # the worker died: the reader reports it
                pass

    def free(self, blocks: list) -> None:
        """Give blocks of released keys back to this worker's free lists."""
        self._send(encode_message(("free", blocks)))

    def forget(self, names: list[str]) -> None:
        self._send(encode_message(("forget", names)))

    def stats(self, timeout: float = 10) -> dict:
        """Counters from the worker process (for tests and diagnostics)."""
        gone = RuntimeError(f"worker {self.id} is gone")

        def send(req: int) -> None:
            if not self._send(encode_message(("stats", req))):
                self._calls.answer(req, gone)

        stats = self._calls.ask(send, timeout, f"stats of worker {self.id}")
        if not isinstance(stats, dict):
            raise gone
        return stats

    def call_function(self, fn: Any, args: tuple = (), kwargs: dict | None = None,
                      timeout: float | None = None) -> tuple[bool, Any]:
        """Run ``fn(*args, **kwargs)`` in the worker process, beside its tasks
        (``client.run``); returns ``(True, result)`` or ``(False, exception)``."""
        def send(req: int) -> None:
            if not self._send(encode_frames(("run-function", req), dumps_call(fn, args, kwargs))):
                self._calls.answer(req, (False, ConnectionError(f"worker {self.id} is gone")))

        return self._calls.ask(send, timeout, f"a function run on worker {self.id}")

    # -- receiving (reader thread) ---------------------------------------------

    def start_reader(self, post, store: ShmStore, on_lost) -> None:
        self._post = post
        self._store = store
        FAST_SWITCHING.hold()  # given back when the reader stops
        self._reader = threading.Thread(target=self._read_loop, args=(post, store, on_lost),
                                        name=f"shmdask-reader-{store.cluster_id}-{self.id}",
                                        daemon=True)
        self._reader.start()

    def _post(self, event: tuple) -> None:  # replaced by start_reader
        raise RuntimeError("worker handle is not connected to an engine")

    def _read_loop(self, post, store: ShmStore, on_lost) -> None:
        try:
            self._read_messages(post, store, on_lost)
        finally:
            FAST_SWITCHING.release()

    def _read_messages(self, post, store: ShmStore, on_lost) -> None:
        conn = self.conn
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                break
            self.bytes_received += len(data)
            try:
                self._handle_message(data, post, store)
            except Exception as exc:  # a message we cannot read: the worker is broken
                log.exception("worker %s sent a message that could not be read", self.id)
                self.kill(f"worker {self.id} (pid {self.pid}) sent a message that could not "
                          f"be read ({exc!r}) and was stopped")
                break
        self._calls.cancel_all((False, ConnectionError(f"worker {self.id} is gone")))
        if not self.closing:
            on_lost(self, self._death_reason())

    def _handle_message(self, data: bytes, post, store: ShmStore) -> None:
        header, body = decode_message(data)
        op = header[0]
        if op == "results":
            if header[1]:
                store.segments_unlinked(self.id, header[1])
            results = read_columns(loads_message(body))
            pop = self.processing.pop
            with self._processing_lock:  # one acquisition per message, not per task
                # The engine's own key objects: its lookups then compare by
                # identity, and the unpickled copies die here instead of living
                # on in the data and the task stream.
                keys = list(map(pop, results.keys, results.keys))
                failures = [(pop(key, key), *rest) for key, *rest in results.failures()]
            if results.stored_at:
                store.adopt_all(results.stored())
            if keys:
                records = compute_records(keys, self.id, *results.stamps)
                post(("done", self.id, list(zip(keys, results.values, records, strict=True))))
            for key, exc_bytes, tb, stamps in failures:
                post(("erred", self.id, key, load_exception(exc_bytes, tb), tb,
                      compute_record(key, self.id, *stamps)))
        elif op == "unlinked":
            store.segments_unlinked(self.id, header[1])
        elif op == "stats":
            self._calls.answer(header[2], header[1])
        elif op in ("secede", "rejoin"):
            post((op, self.id, header[1]))
        elif op == "function-result":
            self._calls.answer(header[1], function_result(header[2], body))
        elif op == "ask":
            self._send(encode_message(("answer", header[1], *answer_ask(self.on_ask, header))))

    def _death_reason(self) -> str:
        # Reap the process in every case (an unreaped Popen lingers as a zombie).
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:  # hung up but still alive: finish it
            self.proc.kill()
            self.proc.wait()
            return self.lost_reason or (f"worker {self.id} (pid {self.pid}) closed its "
                                        "connection and was killed")
        if self.lost_reason:
            return self.lost_reason
        if code < 0:
            try:
                sig = signal.Signals(-code).name
            except ValueError:
                sig = str(-code)
            return f"worker {self.id} (pid {self.pid}) was killed by {sig}"
        return f"worker {self.id} (pid {self.pid}) exited with code {code}"

    # -- lifecycle --------------------------------------------------------------

    def _answered(self, key: Any) -> None:
        with self._processing_lock:
            self.processing.pop(key, None)

    def running_task(self) -> Any:
        """The task most likely running now (the oldest one not answered)."""
        with self._processing_lock:
            return next(iter(self.processing), None)

    def memory_now(self) -> int:
        try:
            return self._ps.memory_info().rss
        except psutil.Error:
            return 0

    def measure_private(self) -> int | None:
        """Resident memory of the worker that is its own: RSS minus shared pages
        (shm blocks and mapped spill files, counted where they are owned)."""
        try:
            mem = self._ps.memory_info()
        except psutil.Error:
            return None
        self.private_memory = mem.rss - getattr(mem, "shared", 0)
        return self.private_memory

    def kill(self, reason: str) -> None:
        self.lost_reason = reason
        with contextlib.suppress(OSError):
            self.proc.kill()

    def disconnect(self) -> None:
        """Hang up: the worker sees EOF (and exits), our reader thread wakes up."""
        self.closing = True
        conn = self.conn
        with contextlib.suppress(OSError, ValueError):
            # close() alone would not wake a thread blocked reading this fd, and
            # the peer would not see EOF until that read returned.
            sock = socket.socket(fileno=conn.fileno())
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.detach()
        with contextlib.suppress(OSError):
            conn.close()

    def close(self, timeout: float = 2.0) -> None:
        self.disconnect()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __repr__(self) -> str:
        return f"<ProcessWorkerHandle {self.id} pid={self.pid} nthreads={self.nthreads}>"


def _unpicklable(key: Any, exc: BaseException) -> TypeError:
    err = TypeError(f"task {key!r} cannot be sent to a worker process: {exc}")
    err.__cause__ = exc
    return err


# Heavy modules a worker imports while idle if the client has them loaded: the
# first task that unpickles a function from one of them then does not wait.
WARM_IMPORTS = ("shmdask.array", "pandas", "scipy")


def _worker_environment() -> dict:
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))))
    if os.path.basename(package_root) not in ("site-packages", "dist-packages"):
        # a source checkout: the fresh interpreter must find this shmdask
        # (an installed one is found anyway, and site-packages must not
        # move ahead of the standard library)
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root, *filter(None, [env.get("PYTHONPATH")])])
    env["SHMDASK_SYS_PATH"] = json.dumps([p or os.getcwd() for p in sys.path])
    return env


def spawn_workers(worker_ids: list[str], cluster_id: str, nthreads: int, threshold: int,
                  cache_bytes: int, memory_limit: int | None, spill_dir: str | None = None,
                  spill_fraction: float | None = None) -> list[ProcessWorkerHandle]:
    """Start one worker process per id, all at once; return when all said hello.

    Each is a fresh interpreter (``python -m shmdask.cluster.worker``) holding
    one end of a socket pair: no fork of this threaded process, and no
    re-import of the user's ``__main__``."""
    env = _worker_environment()
    warm = ",".join(name for name in WARM_IMPORTS if name in sys.modules)
    memory_args = []
    if spill_dir:
        memory_args += ["--spill-dir", spill_dir]
    if memory_limit:
        memory_args += ["--memory-limit", str(memory_limit)]
    if spill_fraction:
        memory_args += ["--spill-fraction", repr(spill_fraction)]
    pending = []
    try:
        for worker_id in worker_ids:
            ours, theirs = socket.socketpair()
            fd = theirs.fileno()
            proc = subprocess.Popen(
                [sys.executable, "-m", "shmdask.cluster.worker", "--fd", str(fd),
                 "--id", worker_id, "--cluster", cluster_id,
                 "--nthreads", str(nthreads), "--threshold", str(threshold),
                 "--cache-bytes", str(cache_bytes), "--warm-imports", warm, *memory_args],
                pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C is the client's to handle
            )
            theirs.close()
            pending.append((worker_id, proc, Connection(ours.detach())))
        handles = []
        for worker_id, proc, conn in pending:
            if not conn.poll(START_TIMEOUT):
                raise RuntimeError(f"worker {worker_id} did not start within "
                                   f"{START_TIMEOUT} s")
            try:
                header, _ = decode_message(conn.recv_bytes())
            except EOFError:
                code = proc.wait()
                raise RuntimeError(f"worker {worker_id} exited with code {code} while "
                                   "starting (its stderr says why)") from None
            handles.append(ProcessWorkerHandle(worker_id, proc, conn, header[1],
                                               nthreads, memory_limit))
        return handles
    except BaseException:
        for _, proc, conn in pending:
            conn.close()
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
        raise


__all__ = ["ProcessWorkerHandle", "spawn_workers"]
