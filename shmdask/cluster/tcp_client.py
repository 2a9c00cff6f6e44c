"""The client side of TCP: ``Client("tcp://host:port")`` and ``shmdask worker``'s connection.

What flows where::

    Client ──verbs──▶ RemoteConnection ──frames──▶ scheduler's ClientSession
       submit(graph), scatter(values), unwant(keys)        one-way, posted in order
       fetch / scheduler_info / task_stream / restart      request ──▶ reply
    listener(key, status, exc) ◀── reader thread ◀── ("statuses", ...) messages

:class:`RemoteConnection` implements :class:`shmdask.connection.Connection`, the
same verbs as the in-process connection, so a Client does not know which one
it holds.  :func:`open_comm` (connect, authenticate, say hello) is shared with
remote workers.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from shmdask.cluster.address import parse_address
from shmdask.cluster.auth import (
    as_key,
    client_handshake,
    client_ssl_context,
    find_key,
    key_file,
    tls_from_env,
)
from shmdask.cluster.comm import (
    MAX_FRAME_BYTES,
    Comm,
    ProtocolError,
    dumps_values,
    header_frames,
    recv_message,
)
from shmdask.cluster.protocol import (
    ConnectionState,
    Stored,
    dumps_message,
    load_exception,
    loads_message,
    pickle_any,
)
from shmdask.cluster.requests import Requests
from shmdask.connection import Connection


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
    comm.settimeout(welcome[3])
    return comm, welcome


class RemoteConnection(Connection):
    """The connection verbs of :class:`shmdask.connection.Connection`, over TCP."""

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
        self._retry_listener: Callable | None = None
        self._requests = Requests()  # requests waiting for the scheduler's reply
        self._stream: Any = None
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"shmdask-client-{address}")
        self._reader.start()

    # -- one-way verbs ------------------------------------------------------------

    def submit(self, dsk, dependencies, wanted, priorities, listener,
               annotations: Mapping | None = None) -> None:
        self._check()
        wanted = list(wanted)
        with self._lock:
            for key in wanted:
                self._listeners[key] = listener
        with self._post_lock:  # function tokens must go out in pickling order
            frames = [*header_frames(("submit", wanted)),
                      *dumps_message((dsk, dependencies, wanted, priorities, annotations),
                                     self.functions)]
            self._post(frames)

    def retry(self, keys: list, listener) -> None:
        self._check()
        with self._lock:
            # erred inputs that run again are announced as "pending": they are
            # heard by this listener too
            self._retry_listener = listener
            for key in keys:
                self._listeners[key] = listener
        self._post(header_frames(("retry", list(keys))))

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
        def send(req: int) -> None:
            # Checked after the slot is taken: a loss noted later answers it.
            self._check()
            self._post(header_frames((op, req, *args)))

        ok, payload = self._requests.ask(send, timeout,
                                         f"{op!r} from the scheduler at {self.address}")
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

    def call(self, verb: str, **kwargs: Any) -> Any:
        # Arguments may hold functions (client.run): pickled here, by cloudpickle
        # if plain pickle refuses them.
        return self._request("call", verb, pickle_any(kwargs))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._post(header_frames(("goodbye", "client closed")))  # dropped if gone already
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
                            if status == "pending":  # a retry: not the last word
                                listener = self._listeners.setdefault(key,
                                                                      self._retry_listener)
                            else:
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
                    self._requests.answer(req, (ok, payload))
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
            self._requests.cancel_all(
                (False, ConnectionError(f"the connection to {self.address} was closed")))
            return
        self.lost_reason = reason
        self._requests.cancel_all((False, ConnectionError(reason)))
        with self._lock:
            pending, self._listeners = self._listeners, {}
        for key, listener in pending.items():
            listener(key, "erred", ConnectionError(reason))


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
    buffers: list = []

    def keep(pb: pickle.PickleBuffer) -> bool:
        buffers.append(pb.raw())
        return False

    header = pickle_any(obj, keep, buffers.clear)
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


__all__ = ["RemoteConnection", "connect_client", "open_comm"]
