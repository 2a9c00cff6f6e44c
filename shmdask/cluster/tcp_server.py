"""The TCP listener: lets remote workers and clients join one engine.

What flows where::

    socket ──accept──▶ handshake thread per peer (admitted, with a deadline):
                         HMAC proof (auth.py), then ("hello", role, info)
                         ├─ role "worker" ─▶ RemoteWorkerHandle ─▶ engine.add_worker
                         └─ role "client" ─▶ ClientSession
                       then that thread is the session's reader (tcp_sessions.py)
    heartbeat thread ──ping──▶ every session; a peer silent too long is dropped

One engine: a remote worker is one more :class:`WorkerHandle`; its reader
thread posts the same events as a local worker's.  Remote workers cannot map
this host's shared memory, so task inputs leave as frames read straight out
of the store's blocks, and results arrive as frames read straight into the
store's blocks.

Admission: a peer that has not proved it holds the key yet is *pending*.
Pending peers have an absolute deadline (``handshake_timeout`` from accept,
however slowly they trickle bytes), and there are at most
``MAX_UNAUTHENTICATED_PER_ADDRESS`` of them per remote address and
``MAX_UNAUTHENTICATED`` in all.  When a newcomer would exceed a bound, the
*oldest* pending peer is dropped, never the newcomer: a real worker or client
authenticates within milliseconds, so sockets that never do cannot lock it out.

Liveness: the listener pings every peer each ``heartbeat_interval`` seconds
and each peer answers (which also measures the clock offset of remote
hosts, used to shift their task-stream stamps); a socket silent for
``heartbeat_timeout`` seconds is dropped, and a dropped worker's tasks are
rescheduled (``("worker-lost", id, reason)``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from shmdask.cluster.address import format_address, parse_address
from shmdask.cluster.auth import (
    HANDSHAKE_TIMEOUT,
    as_key,
    new_key,
    owner_file,
    remove_stale_key_files,
    server_handshake,
    server_ssl_context,
    write_key_file,
)
from shmdask.cluster.comm import (
    MAX_FRAME_BYTES,
    Comm,
    CommClosedError,
    ProtocolError,
    header_frames,
    recv_message,
)
from shmdask.cluster.tcp_sessions import ClientSession, RemoteWorkerHandle, _Session
from shmdask.scheduler.engine import Engine

log = logging.getLogger("shmdask.tcp")

HEARTBEAT_INTERVAL = 1.0  # seconds between pings
HEARTBEAT_TIMEOUT = 30.0  # a peer silent this long is dropped
MAX_UNAUTHENTICATED = 64  # peers still proving they hold the key, in all
MAX_UNAUTHENTICATED_PER_ADDRESS = 16  # ... and from one remote address


class _Pending:
    """A connection that has not authenticated yet."""

    __slots__ = ("sock", "address", "deadline", "dropped")

    def __init__(self, sock: socket.socket, address: str, deadline: float):
        self.sock = sock
        self.address = address
        self.deadline = deadline
        self.dropped: str | None = None  # why it was dropped

    def drop(self) -> None:
        # The plain socket's shutdown (also under TLS): it wakes the handshake
        # thread blocked on this socket, which then closes it.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


class _Admission:
    """The pending connections of a listener, oldest first; see the module docstring."""

    def __init__(self, timeout: float, per_address: int = MAX_UNAUTHENTICATED_PER_ADDRESS,
                 total: int = MAX_UNAUTHENTICATED):
        self.timeout = timeout
        self.per_address = per_address
        self.total = total
        self.dropped = 0
        self._lock = threading.Lock()
        self._pending: dict[_Pending, None] = {}  # insertion order: oldest first
        self._by_address: dict[str, dict[_Pending, None]] = {}

    def admit(self, sock: socket.socket, address: str) -> _Pending:
        """Register a new connection, dropping the oldest pending one if full."""
        entry = _Pending(sock, address, time.monotonic() + self.timeout)
        with self._lock:
            same = self._by_address.get(address, {})
            victim = None
            if len(same) >= self.per_address:
                victim = next(iter(same))
                victim.dropped = (f"more than {self.per_address} unauthenticated "
                                  f"connections from {address}; dropped the oldest")
            elif len(self._pending) >= self.total:
                victim = next(iter(self._pending))
                victim.dropped = (f"more than {self.total} unauthenticated connections; "
                                  "dropped the oldest")
            if victim is not None:
                self._remove(victim)
            self._pending[entry] = None
            self._by_address.setdefault(address, {})[entry] = None
        if victim is not None:
            victim.drop()
        return entry

    def wrapped(self, entry: _Pending, sock: socket.socket) -> None:
        """The connection is now ``sock`` (TLS wraps the accepted socket)."""
        with self._lock:
            entry.sock = sock
            dropped = entry.dropped is not None
        if dropped:
            entry.drop()

    def authenticated(self, entry: _Pending) -> None:
        """``entry`` proved it holds the key: it is no longer pending."""
        with self._lock:
            if entry.dropped is None:
                self._remove(entry)
                return
        raise CommClosedError(entry.dropped)

    def forget(self, entry: _Pending) -> None:
        with self._lock:
            if entry in self._pending:
                self._remove(entry)

    def expire(self) -> None:
        """Drop every pending connection past its deadline."""
        now = time.monotonic()
        late = []
        with self._lock:
            for entry in self._pending:  # oldest first: deadlines are in order
                if entry.deadline > now:
                    break
                late.append(entry)
            for entry in late:
                entry.dropped = f"timed out: did not authenticate within {self.timeout:g} s"
                self._remove(entry)
        for entry in late:
            entry.drop()

    def _remove(self, entry: _Pending) -> None:
        del self._pending[entry]
        same = self._by_address[entry.address]
        del same[entry]
        if not same:
            del self._by_address[entry.address]
        if entry.dropped is not None:
            self.dropped += 1

    def __len__(self) -> int:
        return len(self._pending)


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
                 restart: Callable[[], None] | None = None,
                 calls: Callable[[str, dict], Any] | None = None):
        scheme, host, port = parse_address(address)
        if heartbeat_interval <= 0 or heartbeat_timeout <= heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval < heartbeat_timeout, got "
                             f"{heartbeat_interval} and {heartbeat_timeout}")
        self.engine = engine
        self.store = store
        self.ssl = server_ssl_context(tls_cert, tls_key, tls_ca)
        if scheme == "tls" and self.ssl is None:
            raise ValueError(f"{address}: a tls:// listener needs tls_cert= and tls_key=")
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.handshake_timeout = handshake_timeout
        self.max_frame_bytes = max_frame_bytes
        self._info = info
        self._restart = restart
        self._calls = calls
        self.closing = False
        self._closed = threading.Event()  # wakes the heartbeat thread at close
        self.sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self.admission = _Admission(handshake_timeout)
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
            if given:  # no key file of ours: drop a dead scheduler's, peers would use it
                remove_stale_key_files()
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
        # accept() wakes up at least every `tick` to enforce the deadlines of
        # pending connections.
        self.sock.settimeout(min(0.25, self.handshake_timeout / 4))
        while not self.closing:
            self.admission.expire()
            try:
                sock, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.closing:
                    return
                time.sleep(0.05)  # e.g. out of file descriptors: try again shortly
                continue
            peer = f"{addr[0]}:{addr[1]}"
            entry = self.admission.admit(sock, addr[0])
            threading.Thread(target=self._welcome, args=(sock, peer, entry), daemon=True,
                             name=f"shmdask-peer-{peer}").start()

    def _welcome(self, sock: socket.socket, peer: str, entry: _Pending) -> None:
        try:
            session = self._handshake(sock, peer, entry)
        except Exception as exc:  # every refusal is logged and costs only this peer
            self.refused += 1
            log.warning("refused connection from %s: %s", peer, entry.dropped or exc)
            with contextlib.suppress(OSError):
                sock.close()
            return
        finally:
            self.admission.forget(entry)
        session.serve()

    def _handshake(self, sock: socket.socket, peer: str, entry: _Pending) -> _Session:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.handshake_timeout)
        if self.ssl is not None:
            sock = self.ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            self.admission.wrapped(entry, sock)
        try:
            if self.ssl is not None:
                sock.do_handshake()
            return self._greet(sock, peer, entry)
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()  # the TLS wrapper, if any, owns the connection now
            raise

    def _greet(self, sock: socket.socket, peer: str, entry: _Pending) -> _Session:
        server_handshake(sock, self.key, self.handshake_timeout)
        self.admission.authenticated(entry)
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
        comm.settimeout(self.heartbeat_timeout)
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
        while not self._closed.wait(self.heartbeat_interval):
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

    def call(self, name: str, kwargs: dict) -> Any:
        """A client's scheduler-side call (shmdask.cluster.scheduler_calls)."""
        if self._calls is None:
            raise ValueError(f"this scheduler does not serve {name!r}")
        return self._calls(name, kwargs)

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
        self._closed.set()
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
        for p in (path, owner_file(path)):
            with contextlib.suppress(OSError):
                os.unlink(p)


def start_listener(engine: Engine, store: Any, address: str = "tcp://127.0.0.1:8786",
                   auth_key: str | bytes | None = None, **options: Any) -> Listener:
    """Accept remote workers and clients for ``engine`` at ``address`` (port 0: any).

    Options: ``tls_cert``, ``tls_key``, ``tls_ca``, ``heartbeat_interval``,
    ``heartbeat_timeout``, ``handshake_timeout``, ``max_frame_bytes``, and
    ``info`` / ``restart`` / ``calls`` callables of the owning cluster.  Without a key
    (argument or $SHMDASK_AUTH_KEY) a fresh one is written to a user-only
    file that same-host peers find by the address (:func:`key_file`)."""
    return Listener(engine, store, address, auth_key, **options)


def attach_listener(cluster: Any, address: str = "tcp://127.0.0.1:0",
                    auth_key: str | bytes | None = None, **options: Any) -> Listener:
    """Let remote workers and clients join ``cluster`` (a LocalCluster): what
    ``LocalCluster(listen=address)`` needs.  The listener closes with the
    cluster's engine; ``cluster.scheduler_address`` becomes its address."""
    options.setdefault("info", getattr(cluster, "_local_scheduler_info", None)
                       or getattr(cluster, "scheduler_info", None))
    options.setdefault("restart", getattr(cluster, "restart", None))
    if "calls" not in options:
        from shmdask.cluster.scheduler_calls import bound_calls

        options["calls"] = bound_calls(cluster)
    listener = start_listener(cluster.engine, getattr(cluster, "store", None)
                              or cluster.engine.store, address, auth_key, **options)
    with contextlib.suppress(AttributeError):
        cluster.scheduler_address = listener.address
    if getattr(cluster, "_listener", False) is None:  # tasks asking for a client use it
        cluster._listener = listener
    return listener


__all__ = ["Listener", "start_listener", "attach_listener"]
