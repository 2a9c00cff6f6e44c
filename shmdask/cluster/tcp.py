"""The TCP transport of the engine: a listener, remote worker handles, client sessions.

What flows where::

    remote `shmdask worker` ──TCP──▶ Listener ── handshake thread per peer:
                                        │  HMAC proof, then ("hello", role, info)
                                        ├─ role "worker": RemoteWorkerHandle
                                        │    engine ──run(batch)──▶ sender thread ──▶ frames
                                        │    reader thread: results ──▶ store ──▶ ("done", ...)
                                        └─ role "client": ClientSession
                                             submit/scatter/unwant ──▶ engine
                                             fetch/info/records/restart ──▶ replies
                                             listener(key, status) ──▶ ("status", ...) frames
    `Client("host:port")` ── connect_client() ──▶ RemoteConnection (the verbs of
                                                  shmdask.client.LocalConnection)

One engine: a remote worker is one more :class:`WorkerHandle` whose ``run``
sends frames; its reader thread posts the same events as a local worker's.
Remote workers cannot map this host's shared memory, so task inputs leave as
frames read straight out of the store's blocks, and results arrive as frames
read straight into the store's blocks (``alloc`` hook of :class:`Comm`).

Liveness: the listener pings every peer each ``heartbeat_interval`` seconds
and each peer answers (which also measures the clock offset of remote
hosts, used to shift their task-stream stamps); a socket silent for
``heartbeat_timeout`` seconds is dropped, and a dropped worker's tasks are
rescheduled (``("worker-lost", id, reason)``).  Anything malformed from a
peer is logged and costs that peer its connection, never the scheduler.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from shmdask.cluster.comm import (
    HANDSHAKE_TIMEOUT,
    MAX_FRAME_BYTES,
    ClockOffset,
    Comm,
    CommClosedError,
    ProtocolError,
    as_key,
    client_handshake,
    client_ssl_context,
    dumps_values,
    find_key,
    format_address,
    header_frames,
    key_file,
    loads_values,
    new_key,
    parse_address,
    recv_message,
    server_handshake,
    server_ssl_context,
    tls_from_env,
    write_key_file,
)
from shmdask.cluster.protocol import (
    SHM_THRESHOLD,
    ConnectionState,
    Stored,
    deserialize_value,
    dump_exception,
    dumps_message,
    load_exception,
    loads_message,
)
from shmdask.scheduler.engine import Engine, TaskResult, TaskSpec, WorkerHandle

log = logging.getLogger("shmdask.tcp")

HEARTBEAT_INTERVAL = 1.0  # seconds between pings
HEARTBEAT_TIMEOUT = 30.0  # a peer silent this long is dropped
MAX_PENDING_HANDSHAKES = 64


# ----------------------------------------------------------------------------- store adapter


class _StoreAdapter:
    """How values of the engine's store cross the wire.

    With a shared-memory store (``ShmStore``) values are :class:`Stored`:
    outgoing ones get views of their blocks (sent without a copy), incoming
    data buffers are read into blocks of the store's own allocator.  With a
    live-object store (threads) values are pickled as they are.
    """

    def __init__(self, store: Any):
        self.store = store
        self.shm = all(hasattr(store, a) for a in ("allocator", "adopt", "mappings"))
        self.threshold = getattr(store, "threshold", SHM_THRESHOLD)

    def outgoing(self, value: Any) -> Any:
        if type(value) is Stored and value.blocks:
            view = self.store.mappings.view
            return Stored(value.header,
                          [view(*b) if type(b) is tuple else b for b in value.buffers],
                          value.nbytes, value.owner)
        return value

    def nbytes(self, value: Any) -> int:
        return value.nbytes if type(value) is Stored else 0

    def alloc(self, n: int) -> tuple | None:
        if not self.shm or n < self.threshold or self.store.closed:
            return None
        try:
            return self.store.allocator.alloc(n)
        except OSError:  # /dev/shm full: keep it in private memory
            return None

    def free(self, refs: list) -> None:
        if refs and self.shm and not self.store.closed:
            gone = self.store.allocator.free(refs)
            if gone:
                self.store.segments_unlinked("client", gone)

    def incoming(self, stored: Stored) -> Any:
        if self.shm:
            self.store.adopt(stored)
            return stored
        return deserialize_value(stored)


# ----------------------------------------------------------------------------- sessions


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
        adapter = self.listener.adapter
        try:
            while True:
                header, body, refs = recv_message(self.comm, adapter.alloc, adapter.free)
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
            reason = f"dropped {self.role} {self.id} at {self.comm.peer}: bad message: {exc!r}"
            log.warning("%s", reason)
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

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(CommClosedError):
            self.comm.post(header_frames(("close",)))
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

    # -- engine thread --------------------------------------------------------

    def run(self, tasks: list[TaskSpec]) -> None:
        adapter = self.listener.adapter
        keys = [t.key for t in tasks]
        body = []
        nbytes = {}
        for t in tasks:
            deps = {}
            n = 0
            for k, v in t.deps.items():
                deps[k] = adapter.outgoing(v)
                n += adapter.nbytes(v)
            nbytes[t.key] = n
            body.append((t.key, t.computation, deps))
        for key in keys:
            self.processing[key] = None
        try:
            with self._encode_lock:  # the connection's function table is shared state
                frames = [*header_frames(("run", keys)), *dumps_message(body, self.state)]
        except Exception:
            self._run_one_by_one(tasks, body, nbytes)
            return
        self._post(frames, keys, nbytes)

    def _run_one_by_one(self, tasks: list, body: list, nbytes: dict) -> None:
        """Some task cannot be pickled: fail it alone, send the others."""
        import traceback

        for task, item in zip(tasks, body, strict=True):
            try:
                with self._encode_lock:
                    frames = [*header_frames(("run", [task.key])),
                              *dumps_message([item], self.state)]
            except Exception as exc:
                self.processing.pop(task.key, None)
                err = TypeError(f"task {task.key!r} cannot be sent to remote worker "
                                f"{self.id}: {exc}")
                err.__cause__ = exc
                self.listener.engine.post(("erred", self.id, task.key, err,
                                           traceback.format_exc(), None))
                continue
            self._post(frames, [task.key], nbytes)

    def _post(self, frames: list, keys: list, nbytes: dict) -> None:
        moved = sum(nbytes.get(k, 0) for k in keys)
        self.input_bytes += moved
        on_sent = None
        if moved >= self.listener.adapter.threshold:
            def on_sent(start: float, stop: float, _sent: int) -> None:
                self.listener.add_records([
                    self._transfer_record(k, start, stop, nbytes[k], "to")
                    for k in keys if nbytes.get(k)])
        try:
            self.comm.post(frames, on_sent=on_sent)
        except CommClosedError:
            pass  # the reader reports the loss; these tasks are rescheduled then

    def _transfer_record(self, key: Any, start: float, stop: float, nbytes: int,
                         direction: str) -> dict:
        from shmdask.graph import key_split

        return {"key": key, "group": key_split(key), "worker": self.id,
                "lane": f"{self.id}/transfer", "start": start, "stop": max(start, stop),
                "nbytes": nbytes, "where": "shm" if self.listener.adapter.shm else "memory",
                "kind": "transfer", "remote": True,
                "direction": direction}

    def free(self, blocks: list) -> None:  # nothing of ours lives on the remote host
        pass

    # -- reader thread --------------------------------------------------------

    def handle(self, op: str, header: tuple, body: list, refs: dict) -> None:
        if op != "results":
            if op in ("unlinked", "stats"):
                return
            raise ProtocolError(f"unexpected message {op!r} from a worker")
        started = self.comm.last_received
        adapter = self.listener.adapter
        try:
            entries, unclaimed = loads_values(body, refs, owner=self.id)
        except BaseException:
            adapter.free(list(refs.values()))
            raise
        adapter.free(unclaimed)
        del body
        done = []
        errors = []
        big = []
        processing = self.processing
        for entry in entries:
            key = entry[1]
            processing.pop(key, None)
            record = self._local_record(entry[-1])
            if entry[0] == "done":
                stored = entry[2]
                value = adapter.incoming(stored)
                n = adapter.nbytes(value)
                self.result_bytes += n
                if n >= adapter.threshold:
                    big.append((key, n))
                done.append(TaskResult(key, value, record))
            else:
                _, key, exc_bytes, tb, _ = entry
                errors.append(("erred", self.id, key, load_exception(exc_bytes, tb), tb, record))
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

    def _local_record(self, record: Any) -> dict:
        record = dict(record) if isinstance(record, dict) else {}
        to_local = self.clock.to_local
        for field in ("start", "stop"):
            if isinstance(record.get(field), int | float):
                record[field] = to_local(record[field])
        record["worker"] = self.id
        lane = str(record.get("lane", f"{self.id}/0"))
        record["lane"] = f"{self.id}/{lane.rsplit('/', 1)[-1]}"
        record["remote"] = True
        return record

    def on_pong(self, header: tuple) -> None:
        if len(header) > 3 and isinstance(header[3], int):
            self.memory = header[3]

    def lost(self, reason: str) -> None:
        self.listener.engine.post(("worker-lost", self.id, reason))

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
        with contextlib.suppress(CommClosedError):
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
        adapter = self.listener.adapter
        if op == "submit":
            keys = list(header[1])
            try:
                dsk, dependencies, wanted, priorities = loads_message(body, self.functions)
            except Exception as exc:
                err = RuntimeError(f"the scheduler could not load the submitted graph: {exc!r}")
                for key in keys:
                    self._listener(key, "erred", err)
                return
            self._want(list(wanted))
            engine.submit(dsk, dependencies, wanted, priorities, self._listener)
        elif op == "scatter":
            try:
                items, unclaimed = loads_values(body, refs, owner="client")
            except BaseException:
                adapter.free(list(refs.values()))
                raise
            adapter.free(unclaimed)
            if not isinstance(items, dict):
                raise ProtocolError("scatter needs a dict of values")
            stored = {k: adapter.incoming(v) for k, v in items.items()}
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
        else:
            raise ProtocolError(f"unexpected message {op!r} from a client")

    def _answer(self, op: str, header: tuple) -> None:
        req = header[1]
        try:
            if op == "fetch":
                data, out = self.listener.engine.data, {}
                for k in header[2]:
                    try:
                        out[k] = self.listener.adapter.outgoing(data[k])
                    except KeyError:
                        raise KeyError(f"key {k!r} is not in memory on the scheduler") from None
                result: Any = out
            elif op == "info":
                result = self.listener.scheduler_info()
            elif op == "stream":
                result = _stream_call(self.listener.engine, header[2], header[3])
            elif op == "tasks_done":
                result = self.listener.engine.tasks_done
            else:
                self.listener.restart()
                result = None
            frames = [*header_frames(("reply", req, True)), *dumps_message(result)]
        except Exception as exc:
            frames = header_frames(("reply", req, False, dump_exception(exc)))
        self.comm.post(frames)

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


# ----------------------------------------------------------------------------- listener


class Listener:
    """Accepts workers and clients for one engine; see the module docstring."""

    def __init__(self, engine: Engine, store: Any, address: str = "tcp://127.0.0.1:8786",
                 auth_key: str | bytes | None = None, *,
                 tls_cert: str | None = None, tls_key: str | None = None,
                 tls_ca: str | None = None,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL,
                 heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 max_frame_bytes: int = MAX_FRAME_BYTES,
                 info: Callable[[], dict] | None = None,
                 restart: Callable[[], None] | None = None):
        scheme, host, port = parse_address(address)
        if heartbeat_interval <= 0 or heartbeat_timeout <= heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval < heartbeat_timeout, got "
                             f"{heartbeat_interval} and {heartbeat_timeout}")
        self.engine = engine
        self.adapter = _StoreAdapter(store)
        self.ssl = server_ssl_context(tls_cert, tls_key, tls_ca)
        if scheme == "tls" and self.ssl is None:
            raise ValueError(f"{address}: a tls:// listener needs tls_cert= and tls_key=")
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.handshake_timeout = handshake_timeout
        self.max_frame_bytes = max_frame_bytes
        self._info = info
        self._restart = restart
        self.closing = False
        self.sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._pending = threading.BoundedSemaphore(MAX_PENDING_HANDSHAKES)
        self.refused = 0
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.host = host
            self.port = self.sock.getsockname()[1]
            self.address = format_address("tls" if self.ssl else "tcp", host, self.port)
            given = as_key(auth_key) or as_key(os.environ.get("SHMDASK_AUTH_KEY") or None)
            self.key = given or new_key()
            # The key file exists before anyone can connect: a peer that finds
            # the port open also finds the key.
            self.key_path = None if given else write_key_file(host, self.port, self.key)
            # Gone with the listener, or at interpreter exit if nobody closed it.
            self._key_finalizer = weakref.finalize(self, _unlink_quietly, self.key_path)
            self.sock.listen(128)
        except BaseException:
            self.sock.close()
            raise
        self._threads = [
            threading.Thread(target=self._accept_loop, daemon=True,
                             name=f"shmdask-listen-{self.port}"),
            threading.Thread(target=self._heartbeat_loop, daemon=True,
                             name=f"shmdask-heartbeat-{self.port}"),
        ]
        for t in self._threads:
            t.start()
        log.info("listening at %s", self.address)

    # -- accepting ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self.closing:
            try:
                sock, addr = self.sock.accept()
            except OSError:
                if self.closing:
                    return
                time.sleep(0.05)  # e.g. out of file descriptors: try again shortly
                continue
            peer = f"{addr[0]}:{addr[1]}"
            if not self._pending.acquire(blocking=False):
                log.warning("refused connection from %s: too many handshakes in progress", peer)
                self.refused += 1
                sock.close()
                continue
            threading.Thread(target=self._welcome, args=(sock, peer), daemon=True,
                             name=f"shmdask-peer-{peer}").start()

    def _welcome(self, sock: socket.socket, peer: str) -> None:
        try:
            session = self._handshake(sock, peer)
        except Exception as exc:  # every refusal is logged and costs only this peer
            self.refused += 1
            log.warning("refused connection from %s: %s", peer, exc)
            with contextlib.suppress(OSError):
                sock.close()
            return
        finally:
            self._pending.release()
        session.serve()

    def _handshake(self, sock: socket.socket, peer: str) -> _Session:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.handshake_timeout)
        if self.ssl is not None:
            sock = self.ssl.wrap_socket(sock, server_side=True)
        try:
            return self._greet(sock, peer)
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()  # the TLS wrapper, if any, owns the connection now
            raise

    def _greet(self, sock: socket.socket, peer: str) -> _Session:
        server_handshake(sock, self.key, self.handshake_timeout)
        comm = Comm(sock, peer, self.max_frame_bytes)
        header, _body, _refs = recv_message(comm)
        if header[0] != "hello" or len(header) < 3 or header[1] not in ("worker", "client"):
            raise ProtocolError(f"expected a hello, got {header[0]!r}")
        role, hello = header[1], header[2]
        if not isinstance(hello, dict):
            raise ProtocolError("malformed hello")
        n = next(self._ids)
        if role == "worker":
            session: _Session = RemoteWorkerHandle(self, comm, f"remote-{n}", hello)
        else:
            session = ClientSession(self, comm, f"client-{n}", hello)
        comm.send(header_frames(("welcome", session.id, self.heartbeat_interval,
                                 self.heartbeat_timeout)))
        for _ in range(3 if role == "worker" else 0):
            # a clock estimate before the first task stamps anything (a worker
            # sends nothing but pongs until it is given tasks)
            comm.send(header_frames(("ping", time.time())))
            pong, _, _ = recv_message(comm)
            if pong[0] != "pong" or len(pong) < 3:
                raise ProtocolError(f"expected a pong, got {pong[0]!r}")
            session.clock.add(pong[1], pong[2], time.time())
        sock.settimeout(self.heartbeat_timeout)
        with self._lock:  # only a peer that completed all of the above is listed
            if self.closing:
                raise CommClosedError("the scheduler is closing")
            self.sessions[session.id] = session
        if role == "worker":
            log.info("worker %s (%s, pid %s, %d threads) joined from %s", session.id,
                     session.name, session.pid, session.nthreads, peer)
            self.engine.add_worker(session)
        else:
            log.info("client %s connected from %s", session.id, peer)
        return session

    def _forget(self, session: _Session) -> None:
        with self._lock:
            self.sessions.pop(session.id, None)

    def _heartbeat_loop(self) -> None:
        while not self.closing:
            time.sleep(self.heartbeat_interval)
            if self.engine.closed:  # the cluster closed: so do we
                self.close()
                return
            with self._lock:
                sessions = list(self.sessions.values())
            for s in sessions:
                s.ping()

    # -- used by sessions ---------------------------------------------------------

    def add_records(self, records: list[dict]) -> None:
        if records:
            self.engine.post(("call", lambda engine: engine._add_records(records)))

    def workers_info(self) -> dict[str, dict]:
        with self._lock:
            sessions = list(self.sessions.values())
        return {s.id: s.info() for s in sessions if isinstance(s, RemoteWorkerHandle)}

    def scheduler_info(self) -> dict:
        if self._info is not None:
            info = dict(self._info())
        else:
            info = {"type": "Scheduler", "id": f"Scheduler-{id(self):x}",
                    "started": self.engine.started, "workers": {}}
        info["address"] = self.address
        workers = dict(info.get("workers", {}))
        workers.update(self.workers_info())
        info["workers"] = workers
        with self._lock:
            info["clients"] = sum(isinstance(s, ClientSession) for s in self.sessions.values())
        return info

    def restart(self) -> None:
        if self._restart is not None:
            self._restart()
        else:
            self.engine.call(lambda engine: engine.reset(), timeout=60)

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting, say goodbye to every peer, remove the key file."""
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._lock:
            sessions = list(self.sessions.values())
        for s in sessions:
            s.close()
        for s in sessions:
            if isinstance(s, RemoteWorkerHandle):
                self.engine.post(("worker-lost", s.id, "the scheduler is closing"))
        self._key_finalizer()
        log.info("closed listener at %s", self.address)

    def __repr__(self) -> str:
        return f"<Listener {self.address} peers={len(self.sessions)}>"


def _unlink_quietly(path: Any) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


def start_listener(engine: Engine, store: Any, address: str = "tcp://127.0.0.1:8786",
                   auth_key: str | bytes | None = None, **options: Any) -> Listener:
    """Accept remote workers and clients for ``engine`` at ``address`` (port 0: any).

    Options: ``tls_cert``, ``tls_key``, ``tls_ca``, ``heartbeat_interval``,
    ``heartbeat_timeout``, ``handshake_timeout``, ``max_frame_bytes``, and
    ``info`` / ``restart`` callables of the owning cluster.  Without a key
    (argument or $SHMDASK_AUTH_KEY) a fresh one is written to a user-only
    file that same-host peers find by the address (:func:`key_file`)."""
    return Listener(engine, store, address, auth_key, **options)


def attach_listener(cluster: Any, address: str = "tcp://127.0.0.1:0",
                    auth_key: str | bytes | None = None, **options: Any) -> Listener:
    """Let remote workers and clients join ``cluster`` (a LocalCluster): what
    ``LocalCluster(listen=address)`` needs.  The listener closes with the
    cluster's engine; ``cluster.scheduler_address`` becomes its address."""
    options.setdefault("info", getattr(cluster, "scheduler_info", None))
    options.setdefault("restart", getattr(cluster, "restart", None))
    listener = start_listener(cluster.engine, getattr(cluster, "store", None)
                              or cluster.engine.store, address, auth_key, **options)
    with contextlib.suppress(AttributeError):
        cluster.scheduler_address = listener.address
    return listener


# ----------------------------------------------------------------------------- connecting


def open_comm(address: str, role: str, hello: dict, auth_key: str | bytes | None = None,
              timeout: float = 10, tls_ca: str | None = None, tls_cert: str | None = None,
              tls_key: str | None = None,
              max_frame_bytes: int = MAX_FRAME_BYTES) -> tuple[Comm, tuple]:
    """Connect, authenticate and say hello -> (comm, welcome header)."""
    scheme, host, port = parse_address(address)
    ctx = client_ssl_context(tls_ca, tls_cert, tls_key)
    if scheme == "tls" and ctx is None:
        raise ValueError(f"{address}: a tls:// address needs tls_ca= (the CA that signed "
                         "the scheduler's certificate)")
    # Connect before looking for the key, so a wrong address is reported as such.
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ConnectionError(f"could not connect to the scheduler at {address}: {exc}") from None
    try:
        key = as_key(auth_key) or find_key(host, port)
        if key is None:
            raise ValueError(
                f"no cluster key for {address}: pass auth_key=, set SHMDASK_AUTH_KEY, or run "
                f"as the scheduler's user on its host (key file {key_file(host, port)})")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname=host)
        client_handshake(sock, key, timeout, peer=f"the scheduler at {address}")
        comm = Comm(sock, address, max_frame_bytes)
        comm.send(header_frames(("hello", role, hello)))
        welcome, _, _ = recv_message(comm)
        if welcome[0] != "welcome":
            raise ProtocolError(f"the scheduler at {address} answered {welcome[0]!r}")
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    sock.settimeout(welcome[3])
    return comm, welcome


class RemoteConnection:
    """The connection verbs of :class:`shmdask.client.LocalConnection`, over TCP."""

    def __init__(self, comm: Comm, welcome: tuple, address: str):
        self.comm = comm
        self.address = address
        self.id = welcome[1]
        self.functions = ConnectionState()
        self.lost_reason: str | None = None
        self.closed = False
        self._lock = threading.Lock()
        self._post_lock = threading.RLock()  # RLock: unwant may run in a __del__
        self._unwant_open: list | None = None  # keys of the queued unwant message
        self._listeners: dict[Any, Callable] = {}
        self._replies: dict[int, list] = {}
        self._reply_cond = threading.Condition()
        self._req = itertools.count()
        self._stream: Any = None
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"shmdask-client-{address}")
        self._reader.start()

    # -- one-way verbs ------------------------------------------------------------

    def submit(self, dsk, dependencies, wanted, priorities, listener) -> None:
        self._check()
        wanted = list(wanted)
        with self._lock:
            for key in wanted:
                self._listeners[key] = listener
        with self._post_lock:  # function tokens must go out in pickling order
            frames = [*header_frames(("submit", wanted)),
                      *dumps_message((dsk, dependencies, wanted, priorities), self.functions)]
            self._post(frames)

    def scatter(self, items: Mapping, listener) -> None:
        self._check()
        with self._lock:
            for key in items:
                self._listeners[key] = listener
        stored = {k: _stored_view(v) for k, v in items.items()}
        frames, data = dumps_values(("scatter", list(stored)), stored)
        sent = threading.Event()
        self._post(frames, data, on_sent=lambda *a: sent.set())
        # The frames are views of the caller's buffers: they must be on the wire
        # before the caller may change them.
        while not sent.wait(0.1):
            self._check()

    def unwant(self, keys: list) -> None:
        if self.closed or self.lost_reason:
            return
        with self._post_lock:
            if self._unwant_open is not None:  # queued, not yet sent, nothing after it
                self._unwant_open.extend(keys)
                return
            batch = self._unwant_open = list(keys)
            self.comm.post(lambda: self._seal_unwant(batch))

    def _seal_unwant(self, batch: list) -> list:
        with self._post_lock:
            if self._unwant_open is batch:
                self._unwant_open = None
            return header_frames(("unwant", batch))

    def _post(self, frames: Any, data: frozenset = frozenset(), on_sent=None) -> None:
        """Queue a message; later unwants start a message of their own after it."""
        with self._post_lock:
            self._unwant_open = None
            self.comm.post(frames, data, on_sent)

    # -- requests -----------------------------------------------------------------

    def _request(self, op: str, *args: Any, timeout: float | None = None) -> Any:
        self._check()
        req = next(self._req)
        with self._reply_cond:
            self._replies[req] = []
        self._post(header_frames((op, req, *args)))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._reply_cond:
            while not self._replies[req]:
                if self.lost_reason or self.closed:
                    self._replies.pop(req, None)
                    self._check()
                if deadline is not None and time.monotonic() > deadline:
                    self._replies.pop(req, None)
                    raise TimeoutError(f"the scheduler at {self.address} did not answer "
                                       f"{op!r} within {timeout} s")
                self._reply_cond.wait(0.1)
            ok, payload = self._replies.pop(req)[0]
        if not ok:
            raise payload
        return payload

    def fetch(self, keys: list) -> dict:
        values = self._request("fetch", list(keys))
        return {k: _to_user(v) for k, v in values.items()}

    def scheduler_info(self) -> dict:
        return self._request("info", timeout=30)

    def task_stream(self) -> Any:
        """The scheduler's task stream, read through this connection."""
        if self._stream is None:
            self._stream = _remote_task_stream(self)
        return self._stream

    def tasks_done(self) -> int:
        return self._request("tasks_done", timeout=30)

    def restart(self) -> None:
        self._request("restart", timeout=120)

    def alive(self) -> bool:
        return not self.closed and self.lost_reason is None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(CommClosedError):
            self._post(header_frames(("goodbye", "client closed")))
            self.comm.flush(1.0)
        self.comm.abort()
        self._reader.join(2)

    def _check(self) -> None:
        if self.lost_reason is not None:
            raise ConnectionError(self.lost_reason)
        if self.closed:
            raise ConnectionError(f"the connection to {self.address} was closed")

    # -- reader thread --------------------------------------------------------------

    def _read_loop(self) -> None:
        reason = f"lost the connection to the scheduler at {self.address}"
        try:
            while True:
                header, body, _ = recv_message(self.comm)
                op = header[0]
                if op == "statuses":
                    for key, status, exc_bytes in header[1]:
                        with self._lock:
                            listener = self._listeners.pop(key, None)
                        if listener is not None:
                            exc = load_exception(exc_bytes) if exc_bytes is not None else None
                            listener(key, status, exc)
                elif op == "reply":
                    req, ok = header[1], header[2]
                    if ok:
                        try:
                            payload = loads_message(body)
                        except Exception as exc:
                            ok, payload = False, exc
                    else:
                        payload = load_exception(header[3])
                    with self._reply_cond:
                        if req in self._replies:
                            self._replies[req].append((ok, payload))
                            self._reply_cond.notify_all()
                elif op == "ping":
                    self.comm.post(header_frames(("pong", header[1], time.time(), 0)))
                elif op == "close":
                    reason = f"the scheduler at {self.address} closed"
                    break
        except (ConnectionError, Exception) as exc:
            if not self.closed:
                reason = f"lost the connection to the scheduler at {self.address}: {exc}"
        self.comm.abort()
        if self.closed:
            return
        self.lost_reason = reason
        with self._lock:
            pending, self._listeners = self._listeners, {}
        for key, listener in pending.items():
            listener(key, "erred", ConnectionError(reason))
        with self._reply_cond:
            self._reply_cond.notify_all()


def _remote_task_stream(connection: RemoteConnection) -> Any:
    """A :class:`~shmdask.diagnostics.task_stream.TaskStream` whose reads are
    requests to the scheduler (what ``get_task_stream`` and reports read)."""
    from shmdask.diagnostics.task_stream import TaskStream

    class RemoteTaskStream(TaskStream):
        def _call(self, name: str, arg: Any = None) -> Any:
            return connection._request("stream", name, arg, timeout=60)

        @property
        def position(self) -> int:
            return self._call("position")

        @property
        def memory_position(self) -> int:
            return self._call("memory_position")

        def __len__(self) -> int:
            return self._call("len")

        def records_since(self, index: int = 0) -> list[dict]:
            return self._call("records_since", index)

        def memory_since(self, index: int = 0) -> list[dict]:
            return self._call("memory_since", index)

        def add(self, records) -> None:
            raise TypeError("records are added on the scheduler, not through a client")

        def __repr__(self) -> str:
            return f"<RemoteTaskStream of {connection.address}>"

    return RemoteTaskStream()


def _stored_view(obj: Any) -> Stored:
    """``obj`` pickled with its buffers as views (no copy): sent before it returns."""
    import cloudpickle

    buffers: list = []

    def keep(pb: pickle.PickleBuffer) -> bool:
        buffers.append(pb.raw())
        return False

    try:
        header = pickle.dumps(obj, protocol=5, buffer_callback=keep)
    except (pickle.PicklingError, AttributeError, TypeError):
        buffers = []
        header = cloudpickle.dumps(obj, protocol=5, buffer_callback=keep)
    return Stored(header, buffers, len(header) + sum(b.nbytes for b in buffers), "client")


def _writeable(buf: Any) -> Any:
    if isinstance(buf, memoryview) and isinstance(buf.obj, bytearray) \
            and buf.nbytes == len(buf.obj):
        return buf.obj  # the private buffer the frame was read into
    return bytearray(buf)


def _to_user(value: Any) -> Any:
    """A fetched value -> the user's object (private, writeable buffers)."""
    if type(value) is not Stored:
        return value
    return pickle.loads(value.header, buffers=[_writeable(b) for b in value.buffers])


def connect_client(address: str, timeout: float = 10, auth_key: str | bytes | None = None,
                   tls_ca: str | None = None, tls_cert: str | None = None,
                   tls_key: str | None = None) -> RemoteConnection:
    """Connect a Client to the scheduler at ``address`` ("tcp://host:port" or "host:port").

    The key comes from ``auth_key``, $SHMDASK_AUTH_KEY or the scheduler's key
    file on this host; TLS options default to $SHMDASK_TLS_CA/_CERT/_KEY."""
    env = tls_from_env()
    hello = {"pid": os.getpid(), "host": socket.gethostname()}
    comm, welcome = open_comm(address, "client", hello, auth_key, timeout,
                              tls_ca or env["tls_ca"], tls_cert or env["tls_cert"],
                              tls_key or env["tls_key"])
    return RemoteConnection(comm, welcome, address)


# ----------------------------------------------------------------------------- the command


def serve_scheduler(host: str = "127.0.0.1", port: int = 8786, n_workers: int = 0,
                    auth_key: str | bytes | None = None,
                    ready_callback: Callable[[str], None] | None = None,
                    dashboard_address: Any = ":8787", **options: Any) -> None:
    """Run a scheduler (a LocalCluster with ``n_workers`` local workers) and a
    listener until SIGINT/SIGTERM; what ``shmdask scheduler`` runs."""
    from shmdask.cluster.local_cluster import LocalCluster

    if not logging.getLogger("shmdask").handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger("shmdask").addHandler(handler)
        logging.getLogger("shmdask").setLevel(logging.INFO)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    from shmdask.diagnostics.dashboard import DashboardPortWarning

    with warnings.catch_warnings():  # a taken port is said in the banner below
        warnings.simplefilter("ignore", DashboardPortWarning)
        cluster = LocalCluster(n_workers=n_workers, dashboard_address=dashboard_address)
    try:
        listener = attach_listener(cluster, format_address("tcp", host, port), auth_key,
                                   **options)
        try:
            print(f"Scheduler started at {listener.address}", flush=True)
            where = (f"key file {listener.key_path}" if listener.key_path
                     else "the key you gave (auth_key / SHMDASK_AUTH_KEY)")
            print(f"Connect workers with:  shmdask worker {listener.address}\n"
                  f"Connect clients with:  Client({listener.address!r})\n"
                  f"Peers prove they hold the cluster key: {where}", flush=True)
            if cluster.dashboard_link:
                from shmdask.diagnostics.dashboard.service import moved_note

                print(f"Dashboard at {cluster.dashboard_link}"
                      f"{moved_note(dashboard_address, cluster.dashboard_link)}", flush=True)
            if ready_callback is not None:
                ready_callback(listener.address)
            while not stop.wait(0.2):
                pass
            print("Scheduler stopping", flush=True)
        finally:
            listener.close()
    finally:
        cluster.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["Listener", "RemoteWorkerHandle", "ClientSession", "RemoteConnection",
           "start_listener", "attach_listener", "connect_client", "open_comm", "serve_scheduler"]
