"""The peers of a TCP listener, once authenticated: remote workers and remote clients.

What flows where::

    remote `shmdask worker` ◀──frames──▶ RemoteWorkerHandle (a WorkerHandle of the engine)
        engine ──run(batch)──▶ inputs as frames read out of the store's blocks ──▶ peer
        reader: results ──▶ frames read into the store's blocks ──▶ ("done", ...) events
    remote `Client(...)`    ◀──frames──▶ ClientSession
        submit / scatter / unwant ──▶ engine;  fetch / info / stream / restart ──▶ replies
        engine listener(key, status) ──▶ batched ("statuses", ...) messages

Each session's reader loop runs on its own thread (the one that did its
handshake); anything malformed from a peer costs that peer its connection,
never the scheduler.  Values cross through the store's wire hooks
(:class:`~shmdask.scheduler.interfaces.DataStore`), so a shared-memory store
reads arriving buffers straight into its blocks.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING, Any

from shmdask.cluster.comm import (
    ClockOffset,
    Comm,
    CommClosedError,
    ProtocolError,
    header_frames,
    loads_values,
    recv_message,
)
from shmdask.cluster.protocol import (
    ConnectionState,
    dump_exception,
    dumps_call,
    dumps_message,
    load_exception,
    loads_message,
)
from shmdask.cluster.requests import Requests, answer_ask, function_result
from shmdask.cluster.result_batch import read_columns
from shmdask.scheduler.engine import Engine
from shmdask.scheduler.interfaces import TaskResult, TaskSpec, WorkerHandle
from shmdask.scheduler.records import task_record

if TYPE_CHECKING:
    from shmdask.cluster.tcp_server import Listener

log = logging.getLogger("shmdask.tcp")


class _Session:
    """One authenticated peer: a reader loop (on its handshake thread) and pings."""

    role = "peer"

    def __init__(self, listener: Listener, comm: Comm, session_id: str, hello: dict):
        self.listener = listener
        self.comm = comm
        self.id = session_id
        self.hello = hello
        self.clock = ClockOffset()
        self.closing = False
        self.connected_at = time.time()

    def ping(self) -> None:
        if not self.comm.closed:
            self.comm.post(header_frames(("ping", time.time())))

    def serve(self) -> None:
        reason = "connection closed"
        store = self.listener.store
        try:
            while True:
                header, body, refs = recv_message(self.comm, store.alloc_incoming,
                                                  store.free_incoming)
                op = header[0]
                if op == "pong":
                    self.clock.add(header[1], header[2], time.time())
                    self.on_pong(header)
                elif op == "goodbye":
                    reason = f"{self.role} {self.id} left ({header[1] if len(header) > 1 else ''})"
                    break
                else:
                    self.handle(op, header, body, refs)
        except CommClosedError as exc:
            reason = f"lost {self.role} {self.id} at {self.comm.peer}: {exc}"
        except Exception as exc:  # a peer's bad input costs it its connection, not us
            detail = str(exc) if isinstance(exc, ProtocolError) else repr(exc)
            reason = (f"dropped {self.role} {self.id} at {self.comm.peer}: it broke the "
                      f"shmdask protocol: {detail}")
            log.warning("%s", reason)
            if not self.closing and not self.listener.closing:
                self.broke_protocol(detail)
        finally:
            self.comm.abort()
            if not self.closing and not self.listener.closing:
                log.info("%s", reason)
                self.lost(reason)
            self.listener._forget(self)

    def on_pong(self, header: tuple) -> None:
        pass

    def handle(self, op: str, header: tuple, body: list, refs: dict) -> None:
        raise ProtocolError(f"unexpected message {op!r} from a {self.role}")

    def lost(self, reason: str) -> None:
        pass

    def broke_protocol(self, detail: str) -> None:
        """The peer sent something that is not the protocol (before ``lost``)."""

    def close(self) -> None:
        self.closing = True
        self.comm.post(header_frames(("close",)))  # dropped if the peer is gone already
        self.comm.flush(1.0)
        self.comm.abort()


class RemoteWorkerHandle(_Session, WorkerHandle):
    """A worker process on the other end of a TCP connection, as the engine sees it."""

    role = "worker"
    kind = "remote"

    def __init__(self, listener: Listener, comm: Comm, worker_id: str, hello: dict):
        _Session.__init__(self, listener, comm, worker_id, hello)
        self.name = str(hello.get("name") or worker_id)
        self.nthreads = max(1, int(hello.get("nthreads", 1)))
        self.host = str(hello.get("host", "?"))
        self.pid = hello.get("pid")
        self.memory_limit = hello.get("memory_limit")
        self.memory = 0
        self.state = ConnectionState()
        self.processing: dict = {}
        self.input_bytes = 0
        self.result_bytes = 0
        self._encode_lock = threading.Lock()
        self._calls = Requests()  # client.run calls waiting for this worker

    # -- engine thread --------------------------------------------------------

    def run(self, tasks: list[TaskSpec]) -> None:
        store = self.listener.store
        keys = [t.key for t in tasks]
        inputs = []
        nbytes = {}
        for t in tasks:
            deps = {}
            n = 0
            for k, v in t.deps.items():
                deps[k] = store.outgoing(v)
                n += store.nbytes(v)
            nbytes[t.key] = n
            inputs.append(deps)
        computations = [t.computation for t in tasks]
        for key in keys:
            self.processing[key] = None
        try:
            frames = self._run_frames(keys, computations, inputs)
        except Exception:
            self._run_one_by_one(keys, computations, inputs, nbytes)
            return
        self._post(frames, keys, nbytes)

    def _run_frames(self, keys: list, computations: list, inputs: list) -> list:
        """A "run" message (the columns worker.py reads)."""
        with self._encode_lock:  # the connection's function table is shared state
            return [*header_frames(("run", keys)),
                    *dumps_message((computations, inputs), self.state)]

    def _run_one_by_one(self, keys: list, computations: list, inputs: list,
                        nbytes: dict) -> None:
        """Some task cannot be pickled: fail it alone, send the others."""
        import traceback

        for key, computation, deps in zip(keys, computations, inputs, strict=True):
            try:
                frames = self._run_frames([key], [computation], [deps])
            except Exception as exc:
                self.processing.pop(key, None)
                err = TypeError(f"task {key!r} cannot be sent to remote worker "
                                f"{self.id}: {exc}")
                err.__cause__ = exc
                self.listener.engine.post(("erred", self.id, key, err,
                                           traceback.format_exc(), None))
                continue
            self._post(frames, [key], nbytes)

    def _post(self, frames: list, keys: list, nbytes: dict) -> None:
        moved = sum(nbytes.get(k, 0) for k in keys)
        self.input_bytes += moved
        on_sent = None
        if moved >= self.listener.store.threshold:
            def on_sent(start: float, stop: float, _sent: int) -> None:
                self.listener.add_records([
                    self._transfer_record(k, start, stop, nbytes[k], "to")
                    for k in keys if nbytes.get(k)])
        # On a lost connection the message is dropped: the reader reports the
        # loss, and these tasks are rescheduled then.
        self.comm.post(frames, on_sent=on_sent)

    def _transfer_record(self, key: Any, start: float, stop: float, nbytes: int,
                         direction: str) -> dict:
        record = task_record(key, self.id, f"{self.id}/transfer", start, max(start, stop),
                             nbytes, self.listener.store.where, kind="transfer", remote=True)
        record["direction"] = direction
        return record

    def free(self, blocks: list) -> None:  # nothing of ours lives on the remote host
        pass

    # -- reader thread --------------------------------------------------------

    def call_function(self, fn: Any, args: tuple = (), kwargs: dict | None = None,
                      timeout: float | None = None) -> tuple[bool, Any]:
        """Run ``fn(*args, **kwargs)`` in the remote worker (``client.run``)."""
        def send(req: int) -> None:
            # A loss after this check answers the request (lost() cancels every
            # waiting call); a post to a closed connection would be dropped.
            if self.comm.closed:
                self._calls.answer(req, (False, ConnectionError(f"worker {self.id} is gone")))
            else:
                self.comm.post([*header_frames(("run-function", req)),
                                *dumps_call(fn, args, kwargs)])

        return self._calls.ask(send, timeout, f"a function run on worker {self.id}")

    def handle(self, op: str, header: tuple, body: list, refs: dict) -> None:
        if op != "results":
            if op in ("unlinked", "stats"):
                return
            if op in ("secede", "rejoin"):
                self.listener.engine.post((op, self.id, header[1]))
                return
            if op == "function-result":
                self._calls.answer(header[1], function_result(header[2], body))
                return
            if op == "ask":
                answer = answer_ask(None, header)
                self.comm.post(header_frames(("answer", header[1], *answer)))
                return
            raise ProtocolError(f"unexpected message {op!r} from a worker")
        started = self.comm.last_received
        store = self.listener.store
        try:
            columns, unclaimed = loads_values(body, refs, owner=self.id)
            results = read_columns(columns)
        except BaseException:
            store.free_incoming(list(refs.values()))
            raise
        store.free_incoming(unclaimed)
        del body, columns
        done = []
        big = []
        processing = self.processing
        for key, stored, *stamps in zip(results.keys, results.values, *results.stamps,
                                        strict=True):
            processing.pop(key, None)
            value = store.incoming(stored)
            n = store.nbytes(value)
            self.result_bytes += n
            if n >= store.threshold:
                big.append((key, n))
            done.append(TaskResult(key, value, self._local_record(key, *stamps)))
        errors = []
        for key, exc_bytes, tb, stamps in results.failures():
            processing.pop(key, None)
            errors.append(("erred", self.id, key, load_exception(exc_bytes, tb), tb,
                           self._local_record(key, *stamps)))
        post = self.listener.engine.post
        if big:
            now = time.time()
            began = now - (time.monotonic() - started)
            self.listener.add_records([self._transfer_record(k, began, now, n, "from")
                                       for k, n in big])
        if done:
            post(("done", self.id, done))
        for event in errors:
            post(event)

    def _local_record(self, key: Any, lane: Any, start: Any, stop: Any, nbytes: Any,
                      where: Any) -> dict:
        """A task-stream record of a task this worker ran: on our clock, in a
        lane named after the id we know it by."""
        to_local = self.clock.to_local
        start, stop = (to_local(t) if isinstance(t, int | float) else t for t in (start, stop))
        lane = f"{self.id}/{str(lane).rsplit('/', 1)[-1]}"
        return task_record(key, self.id, lane, start, stop, nbytes, where, remote=True)

    def on_pong(self, header: tuple) -> None:
        if len(header) > 3 and isinstance(header[3], int):
            self.memory = header[3]

    def lost(self, reason: str) -> None:
        self._calls.cancel_all((False, ConnectionError(reason)))
        self.listener.engine.post(("worker-lost", self.id, reason))

    def broke_protocol(self, detail: str) -> None:
        # Not a crash: running the tasks again would break it again.  The
        # tasks it was running fail with the reason, before the loss is seen.
        for key in list(self.processing):
            self.processing.pop(key, None)
            err = ProtocolError(f"task {key!r} was running on remote worker {self.id} at "
                                f"{self.comm.peer}, which broke the shmdask protocol: {detail}")
            self.listener.engine.post(("erred", self.id, key, err, "", None))

    # -- info -----------------------------------------------------------------

    def memory_now(self) -> int:
        return self.memory  # as the worker last reported it

    def info(self) -> dict:
        info = super().info()
        info["address"] = self.comm.peer
        info["clock_offset"] = self.clock.offset
        info["metrics"].update(
            bytes_sent=self.comm.bytes_sent,
            bytes_received=self.comm.bytes_received,
            input_bytes=self.input_bytes,
            result_bytes=self.result_bytes,
        )
        return info

    def __repr__(self) -> str:
        return f"<RemoteWorkerHandle {self.id} {self.comm.peer} nthreads={self.nthreads}>"


class ClientSession(_Session):
    """A remote Client: its verbs become engine calls; statuses go back as messages."""

    role = "client"

    def __init__(self, listener: Listener, comm: Comm, session_id: str, hello: dict):
        super().__init__(listener, comm, session_id, hello)
        self.functions = ConnectionState()
        self.wanted: Counter = Counter()
        self._lock = threading.Lock()
        self._statuses: list = []
        self._statuses_queued = False

    def _listener(self, key: Any, status: str, exc: BaseException | None) -> None:
        # Engine thread: never block on the socket.  Statuses pile up until the
        # sender thread gets to them and leave as one message.
        payload = dump_exception(exc) if exc is not None else None
        with self._lock:
            self._statuses.append((key, status, payload))
            if self._statuses_queued:
                return
            self._statuses_queued = True
        self.comm.post(self._status_frames)

    def _status_frames(self) -> list:
        with self._lock:
            statuses, self._statuses = self._statuses, []
            self._statuses_queued = False
        return header_frames(("statuses", statuses))

    def _want(self, keys: list) -> None:
        with self._lock:
            self.wanted.update(keys)

    def handle(self, op: str, header: tuple, body: list, refs: dict) -> None:
        engine = self.listener.engine
        store = self.listener.store
        if op == "submit":
            keys = list(header[1])
            try:
                dsk, dependencies, wanted, priorities, annotations = loads_message(
                    body, self.functions)
            except Exception as exc:
                err = RuntimeError(f"the scheduler could not load the submitted graph: {exc!r}")
                for key in keys:
                    self._listener(key, "erred", err)
                return
            self._want(list(wanted))
            engine.submit(dsk, dependencies, wanted, priorities, self._listener, annotations)
        elif op == "retry":
            engine.retry(list(header[1]), self._listener)
        elif op == "scatter":
            try:
                items, unclaimed = loads_values(body, refs, owner="client")
            except BaseException:
                store.free_incoming(list(refs.values()))
                raise
            store.free_incoming(unclaimed)
            if not isinstance(items, dict):
                raise ProtocolError("scatter needs a dict of values")
            stored = {k: store.incoming(v) for k, v in items.items()}
            self._want(list(stored))
            engine.post(("scatter", stored, self._listener))
        elif op == "unwant":
            keys = list(header[1])
            with self._lock:
                self.wanted.subtract(keys)
                for k in keys:
                    if self.wanted[k] <= 0:
                        del self.wanted[k]
            engine.unwant(keys)
        elif op in ("fetch", "info", "restart", "stream", "tasks_done"):
            self._answer(op, header)
        elif op == "call":
            # May block (a Lock, a Queue, functions run on workers): off the reader.
            threading.Thread(target=self._answer, args=(op, header), daemon=True,
                             name=f"shmdask-call-{self.id}").start()
        else:
            raise ProtocolError(f"unexpected message {op!r} from a client")

    def _answer(self, op: str, header: tuple) -> None:
        req = header[1]
        on_done = None
        try:
            if op == "fetch":
                # The reply holds views of shared memory until it is sent: a
                # spill that swaps a value out meanwhile must not free its
                # blocks (they could be handed out again) before then.
                store = self.listener.store
                read = store.begin_read()
                on_done = partial(store.end_read, read)
                data, out = self.listener.engine.data, {}
                for k in header[2]:
                    try:
                        out[k] = store.outgoing(data[k])
                    except KeyError:
                        raise KeyError(f"key {k!r} is not in memory on the scheduler") from None
                result: Any = out
            elif op == "info":
                result = self.listener.scheduler_info()
            elif op == "stream":
                result = _stream_call(self.listener.engine, header[2], header[3])
            elif op == "tasks_done":
                result = self.listener.engine.tasks_done
            elif op == "call":
                result = self.listener.call(header[2], pickle.loads(header[3]))
            else:
                self.listener.restart()
                result = None
            frames = [*header_frames(("reply", req, True)), *dumps_message(result)]
        except Exception as exc:
            frames = header_frames(("reply", req, False, dump_exception(exc)))
        self.comm.post(frames, on_done=on_done)

    def lost(self, reason: str) -> None:
        with self._lock:
            keys = list(self.wanted.elements())
            self.wanted.clear()
        if keys:
            self.listener.engine.unwant(keys)


_STREAM_CALLS = ("position", "memory_position", "records_since", "memory_since", "len")


def _stream_call(engine: Engine, name: str, arg: Any) -> Any:
    """A read of the engine's task stream on behalf of a remote client."""
    if name not in _STREAM_CALLS:
        raise ValueError(f"unknown task-stream call {name!r}")
    stream = engine.task_stream
    if name == "len":
        return len(stream)
    if name in ("position", "memory_position"):
        return getattr(stream, name)
    return getattr(stream, name)(int(arg))
