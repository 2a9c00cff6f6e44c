"""The TCP listener: lets remote workers and clients join one engine.

What flows where::

    socket ──accept──▶ handshake thread per peer (bounded, with a deadline):
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
MAX_PENDING_HANDSHAKES = 64


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
        self.closing = False
        self._closed = threading.Event()  # wakes the heartbeat thread at close
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


__all__ = ["Listener", "start_listener", "attach_listener"]
