"""The dashboard's HTTP server: the page, its static files, the JSON API and /metrics.

In: GET (or HEAD) requests.  Out: the page (``/status``), its script and style
(``/static/...``, package data), JSON bodies (``/api/...``, built by the
collector) and Prometheus text (``/metrics``); a 4xx with a one-line reason
for anything else.  Nothing a request says can run code or change the cluster:
the routes are a fixed table of read-only functions, and query parameters are
parsed strictly into numbers.

Why the standard library: ``http.server.ThreadingHTTPServer`` gives a thread per
connection, which is what keeps one slow client from holding up the others,
and the traffic is a few small requests per second per viewer -- nothing that
would justify a dependency.  Its rough edges are filed off here:

* a connection's socket times out after ``SOCKET_TIMEOUT`` seconds, so a client
  that never sends its request or never reads the answer costs one idle thread
  for that long, and nothing else;
* at most ``MAX_CONNECTIONS`` connections are served at once; the next ones get
  a 503 at once instead of a thread;
* the accept loop (:meth:`DashboardHTTPServer.serve_until_closed`) sleeps in
  ``select`` on the listening socket and a wake-up socket, so closing ends it
  at once -- ``serve_forever`` polls, and its ``shutdown`` waits for the next
  poll (a tenth of a second on every cluster's close) -- then closes the
  listening socket (the port is free again at once) and hangs up the
  connections still open, without waiting for their threads;
* binding does not ask DNS for the host's name (``HTTPServer`` would).
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import json
import logging
import math
import selectors
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .metrics import prometheus_text

logger = logging.getLogger("shmdask.dashboard")

SOCKET_TIMEOUT = 10.0  # seconds a connection may sit idle (reading or writing)
MAX_CONNECTIONS = 128
DEFAULT_WINDOW = 60.0  # seconds of task stream /api/task-stream returns by default
MAX_WINDOW = 3600.0

STATIC_FILES = {
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
PAGE_FILE = "index.html"

# The live page loads everything from this server and nothing inline.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
               "img-src 'self' data:; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'")


def static_text(name: str) -> str:
    """A file of the page (package data under ``static/``)."""
    return (resources.files(__package__) / "static" / name).read_text(encoding="utf-8")


class BadRequest(ValueError):
    """A request we understand but refuse: answered with a 400 and this message."""


# ----------------------------------------------------------------------------- routes


def _int_param(query: Mapping[str, list[str]], name: str, default: int | None = None,
               low: int = 0) -> int | None:
    values = query.get(name)
    if not values:
        return default
    text = values[-1]
    if not text.isdigit() or len(text) > 18:
        raise BadRequest(f"parameter {name!r} must be a whole number >= {low}, got {text!r}")
    return max(low, int(text))


def _float_param(query: Mapping[str, list[str]], name: str, default: float, low: float,
                 high: float) -> float:
    values = query.get(name)
    if not values:
        return default
    try:
        value = float(values[-1])
    except ValueError:
        raise BadRequest(f"parameter {name!r} must be a number, got {values[-1]!r}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise BadRequest(f"parameter {name!r} must be between {low:g} and {high:g}, "
                         f"got {values[-1]!r}")
    return value


def _json(payload: Any) -> tuple[str, bytes]:
    return ("application/json",
            json.dumps(payload, separators=(",", ":"), allow_nan=False, default=str).encode())


def _metrics(collector: Any) -> dict:
    position = collector.memory.position
    return {"info": collector.info_payload(), "progress": collector.progress_payload(),
            "workers": collector.workers_payload(),
            "memory": collector.memory_payload(max(0, position - 1))}


def _update(collector: Any, query: Mapping) -> dict:
    """What the page needs for one update, in one answer (one request per update
    instead of five: the scheduler's process parses fewer requests)."""
    out = {
        "task_stream": collector.task_stream_payload(
            _int_param(query, "since"),
            _float_param(query, "window", DEFAULT_WINDOW, 1.0, MAX_WINDOW)),
        "progress": collector.progress_payload(),
        "workers": collector.workers_payload(),
        "memory": collector.memory_payload(_int_param(query, "memory_since")),
    }
    for part, build in (("graph", collector.graph_payload), ("info", collector.info_payload)):
        if _int_param(query, part, 0):
            out[part] = build()
    return out


# path -> (parameters it takes, function(collector, query) -> (content type, body))
ROUTES: dict[str, tuple[frozenset, Callable[[Any, Mapping], tuple[str, bytes]]]] = {
    "/api/info": (frozenset(), lambda c, q: _json(c.info_payload())),
    "/api/workers": (frozenset(), lambda c, q: _json(c.workers_payload())),
    "/api/progress": (frozenset(), lambda c, q: _json(c.progress_payload())),
    "/api/graph": (frozenset(), lambda c, q: _json(c.graph_payload())),
    "/api/task-stream": (frozenset({"since", "window"}), lambda c, q: _json(
        c.task_stream_payload(_int_param(q, "since"),
                              _float_param(q, "window", DEFAULT_WINDOW, 1.0, MAX_WINDOW)))),
    "/api/memory": (frozenset({"since"}),
                    lambda c, q: _json(c.memory_payload(_int_param(q, "since")))),
    "/api/update": (frozenset({"since", "window", "memory_since", "graph", "info"}),
                    lambda c, q: _json(_update(c, q))),
    "/metrics": (frozenset(), lambda c, q: (
        "text/plain; version=0.0.4; charset=utf-8",
        prometheus_text(**_metrics(c)).encode())),
}


# ----------------------------------------------------------------------------- handler


class DashboardRequestHandler(http.server.BaseHTTPRequestHandler):
    """Answers one connection's requests (keep-alive: possibly several)."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # even a garbled request gets a status line
    server_version = "shmdask-dashboard"
    sys_version = ""
    timeout = SOCKET_TIMEOUT
    server: DashboardHTTPServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(head=True)

    def _refuse_method(self) -> None:
        self._send(405, "application/json",
                   _json({"error": f"method {self.command} not allowed: the dashboard is "
                                   "read-only (GET and HEAD)"})[1],
                   extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = (  # noqa: N815
        _refuse_method)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # http.server answers a method it has no do_X for with 501 and an unknown
        # HTTP version with 505; both are the client's mistake: 405 and 400
        if code == 501:
            self.send_response(405, "Method Not Allowed")
            body = b"the dashboard is read-only: GET and HEAD only\n"
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.close_connection = True
            self.end_headers()
            self.wfile.write(body)
            return
        if code == 505:  # an HTTP version we do not speak: a bad request too
            code, message = 400, "unsupported HTTP version"
        super().send_error(code, message, explain)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        if logger.isEnabledFor(logging.DEBUG):  # one call per request: stay cheap
            logger.debug("%s %s", self.address_string(), format % args)

    def _answer(self, head: bool) -> None:
        try:
            status, ctype, body, extra = self._route()
        except BadRequest as exc:
            status, ctype, body, extra = 400, *_json({"error": str(exc)}), {}
        except Exception as exc:  # a bug of ours: say so briefly, log the rest
            logger.exception("dashboard: %s failed", self.path)
            status, ctype, body, extra = 500, *_json(
                {"error": f"internal error: {type(exc).__name__}"}), {}
        self._send(status, ctype, body, head=head, extra=extra)

    def _route(self) -> tuple[int, str, bytes, dict]:
        try:
            url = urlsplit(self.path)
            query = parse_qs(url.query, keep_blank_values=True,
                             strict_parsing=bool(url.query), max_num_fields=8)
        except ValueError as exc:
            raise BadRequest(f"malformed URL: {exc}") from None
        path = url.path
        server = self.server
        if path in ("/", "/index.html"):
            return 302, "text/plain", b"see /status\n", {"Location": "/status"}
        if path == "/health":
            return 200, "text/plain; charset=utf-8", b"ok\n", {}
        if path == "/status":
            return 200, "text/html; charset=utf-8", server.page, {
                "Content-Security-Policy": PAGE_POLICY}
        if path in STATIC_FILES:
            return 200, STATIC_FILES[path][1], server.static[path], {}
        route = ROUTES.get(path)
        if route is None:
            return 404, *_json({"error": f"no such page: {path}"}), {}
        allowed, build = route
        unknown = sorted(set(query) - allowed)
        if unknown:
            raise BadRequest(f"unknown parameter(s) for {path}: {', '.join(unknown)}")
        collector = server.collector
        collector.touch()
        request = (path, tuple(sorted((k, tuple(v)) for k, v in query.items())))
        ctype, body = collector.answer(request, lambda: build(collector, query))
        return 200, ctype, body, {}

    def _send(self, status: int, ctype: str, body: bytes, head: bool = False,
              extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head:
            self.wfile.write(body)


# ----------------------------------------------------------------------------- server


class DashboardHTTPServer(http.server.ThreadingHTTPServer):
    """A thread per connection, capped and closable; see the module docstring."""

    daemon_threads = True
    block_on_close = False  # close() must not wait for a client that never reads
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], collector: Any,
                 max_connections: int = MAX_CONNECTIONS):
        self.collector = collector
        self.page = static_text(PAGE_FILE).encode()
        self.static = {path: static_text(name).encode()
                       for path, (name, _) in STATIC_FILES.items()}
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, DashboardRequestHandler)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._serving = threading.Lock()  # held by the accept loop while it runs
        self._closed = False

    def server_bind(self) -> None:
        # HTTPServer.server_bind would ask DNS for the host's name (slow, useless here)
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._open.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread to release the slot: do it here
            self._done_with(request)
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that went away or stopped reading ends its own connection;
        # socketserver would print a traceback to stderr for it
        logger.debug("dashboard: connection from %s ended with an error", client_address,
                     exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        threading.current_thread().name = f"shmdask-dashboard-connection-{self.server_port}"
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done_with(request)

    def _done_with(self, request: Any) -> None:
        with self._open_lock:
            if request not in self._open:
                return
            self._open.discard(request)
        self._slots.release()

    def serve_until_closed(self) -> None:
        """Accept connections, each served on its own thread, until :meth:`close`."""
        with self._serving, selectors.DefaultSelector() as selector:
            if self._closed:
                return
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                selector.select()
                if self._closed:  # set before close() wakes us: the wake-up needs no look
                    return
                self._handle_request_noblock()

    def close(self) -> None:
        """Stop serving, free the port, hang up open connections."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")
        with self._serving:  # the accept loop is over (or never ran)
            self.server_close()
            self._wake_reader.close()
            self._wake_writer.close()
        with self._open_lock:
            still_open = list(self._open)
        for sock in still_open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _IPv6Server(DashboardHTTPServer):
    address_family = socket.AF_INET6


def bind_server(host: str, port: int, collector: Any) -> tuple[DashboardHTTPServer, bool]:
    """A server on ``host:port``, or on a free port of ``host`` when ``port`` is taken;
    returns ``(server, moved)``."""
    cls = _IPv6Server if ":" in host else DashboardHTTPServer
    try:
        return cls((host, port), collector), False
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise
    return cls((host, 0), collector), True
