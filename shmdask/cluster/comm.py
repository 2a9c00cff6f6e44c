"""Frames over an authenticated socket, and values on the wire.

What flows in and out:

- **Messages**: ``!I`` frame count, ``!Q`` per frame length (bit 63 flags a
  *data buffer* frame, bit 62 a frame that the next one continues), then the
  frames (:func:`~shmdask.cluster.protocol.frame_table`, the same table the
  pipes use).  No frame is longer than ``max_frame_bytes``
  (``$SHMDASK_MAX_FRAME_BYTES``): a larger buffer leaves as several frames
  and is read back into one buffer, so a value of any size can travel.
  Counts and lengths are checked against limits before a byte is allocated.
  Under TLS, reads and writes make one OpenSSL call at a time
  (:class:`_TlsChannel`): an SSL object read and written at once by two
  threads can report a live connection as closed.
  Frames are sent with one ``sendmsg`` over all buffers (large buffers are
  never joined into one bytes object) and read with ``recv_into`` straight
  into buffers allocated for them; an ``alloc`` hook lets the scheduler read
  a data buffer directly into its shared memory.
- **Memory follows the data**: what a peer *announces* reserves nothing.
  Private buffers above a megabyte are anonymous mappings, whose pages exist
  once written; a data buffer larger than ``RESERVE_AHEAD`` is read into such
  a mapping and moved into shared memory only once it has arrived whole.  A
  peer that announces 4 GiB and stalls holds what it sent, not 4 GiB of
  ``/dev/shm``.
- **Values into the scheduler** (results of remote workers, data scattered by
  remote clients): :func:`dumps_values` replaces each
  :class:`~shmdask.cluster.protocol.Stored` by a reference to its pieces, the
  large pieces become flagged frames, and :func:`loads_values` rebuilds the
  ``Stored`` around whatever the frames were read into (shared-memory blocks
  or private bytearrays).  Values travelling the other way (task inputs,
  fetched results) use ``Stored``'s own out-of-band pickling.
- **Clocks**: :class:`ClockOffset` estimates a peer's clock from pings, so
  remote task-stream stamps land on our time line.

Why this shape: a frame's length is known before it is read, so memory is
allocated once at the right size and in the right place; the header of each
message is a tiny plain pickle, so a receiver always knows what a message is
even when its body cannot be loaded.  Who may connect at all is
:mod:`shmdask.cluster.auth`'s business; addresses are :mod:`.address`'s.
"""

from __future__ import annotations

import contextlib
import errno
import io
import mmap
import os
import pickle
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from shmdask.cluster.protocol import FRAME_COUNT, Stored, frame_table

MAX_FRAME_BYTES = int(os.environ.get("SHMDASK_MAX_FRAME_BYTES", 4 << 30))
MAX_FRAMES = 1 << 20
DATA_FLAG = 1 << 63
MORE_FLAG = 1 << 62  # the next frame continues this buffer
_LENGTH = MORE_FLAG - 1
RESERVE_AHEAD = 16 << 20  # at most this much shared memory is reserved before data arrives
LAZY_BUFFER = 1 << 20  # private buffers from this size on are committed as they are written
INLINE_PIECE = 1024  # value pieces smaller than this travel inside the pickle
_SMALL_SEND = 64 * 1024  # below this a message is joined and sent with one sendall
_IOV_MAX = 512


class CommClosedError(ConnectionError):
    """The peer went away (EOF, reset, timeout) or the connection was closed."""


class ProtocolError(ConnectionError):
    """The peer sent something that is not the shmdask protocol."""


class AuthenticationError(ProtocolError):
    """The peer (or we) could not prove holding the cluster key."""


# ----------------------------------------------------------------------------- frames

def _byte_view(frame: Any) -> memoryview:
    m = frame.raw() if type(frame) is pickle.PickleBuffer else memoryview(frame)
    if m.ndim != 1 or m.format != "B" or not m.c_contiguous:
        m = pickle.PickleBuffer(m).raw()
    return m


class Comm:
    """One authenticated connection: thread-safe ``send``, single-reader ``recv``.

    ``post`` queues frames for a background sender thread, for callers that
    must not block (the engine loop, listener callbacks).
    """

    def __init__(self, sock: socket.socket, peer: str, max_frame_bytes: int = MAX_FRAME_BYTES):
        self.sock = sock
        self.peer = peer
        self.max_frame_bytes = max_frame_bytes
        self.tls = isinstance(sock, ssl.SSLSocket)
        # Under TLS every read and write goes through one _TlsChannel (see there).
        channel: Any = _TlsChannel(sock) if self.tls else sock
        self._recv_into = channel.recv_into
        self._sendall = channel.sendall
        self._channel = channel
        self.closed = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.last_received = time.monotonic()
        self._send_lock = threading.Lock()
        self._buf = bytearray(256 * 1024)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._outbox: list | None = None
        self._outbox_cond = threading.Condition()
        self._sender: threading.Thread | None = None
        self._sending = False

    # -- sending -------------------------------------------------------------

    def _encode(self, frames: list, data_frames) -> tuple[bytes, list, int]:
        if not frames:
            raise ValueError("a message has at least one frame")
        limit = self.max_frame_bytes
        views = []
        lengths = []
        for i, frame in enumerate(frames):
            view = _byte_view(frame)
            flag = DATA_FLAG if i in data_frames else 0
            while view.nbytes > limit:  # a buffer larger than a frame: split it
                views.append(view[:limit])
                lengths.append(limit | flag | MORE_FLAG)
                view = view[limit:]
            views.append(view)
            lengths.append(view.nbytes | flag)
        if len(views) > MAX_FRAMES:
            raise ValueError(f"a message has 1 to {MAX_FRAMES} frames, not {len(views)}")
        head = frame_table(lengths)
        return head, views, len(head) + sum(v.nbytes for v in views)

    def _write(self, messages: list[tuple[bytes, list, int]]) -> None:
        """Write encoded messages in order: small ones joined into one write,
        large buffers handed to the kernel as they are."""
        try:
            with self._send_lock:
                if self.closed:
                    raise CommClosedError(f"connection to {self.peer} is closed")
                small: list = []
                small_bytes = 0
                for head, views, total in messages:
                    if total <= _SMALL_SEND:
                        small.append(head)
                        small.extend(views)
                        small_bytes += total
                        if small_bytes < _SMALL_SEND:
                            continue
                    if small:
                        self._sendall(b"".join(small))
                        self.bytes_sent += small_bytes
                        small, small_bytes = [], 0
                    if total <= _SMALL_SEND:
                        continue
                    if self.tls:
                        self._sendall(head)
                        for v in views:
                            self._sendall(v)
                    else:
                        _sendmsg_all(self.sock, [memoryview(head), *views])
                    self.bytes_sent += total
                if small:
                    self._sendall(b"".join(small))
                    self.bytes_sent += small_bytes
        except (OSError, ValueError) as exc:
            if isinstance(exc, CommClosedError):
                raise
            self.abort()
            raise CommClosedError(f"lost the connection to {self.peer}: {exc}") from None

    def send(self, frames: list, data_frames: set | frozenset = frozenset()) -> int:
        """Send one message; ``data_frames`` are indices of frames that are data buffers."""
        message = self._encode(frames, data_frames)
        self._write([message])
        return message[2]

    def post(self, frames: list, data_frames: frozenset = frozenset(),
             on_sent: Callable[[float, float, int], None] | None = None,
             on_done: Callable[[], None] | None = None) -> None:
        """Queue a message for the sender thread; ``on_sent(start, stop, nbytes)``
        once it is sent, and ``on_done()`` once it is sent *or* dropped with the
        connection (the message's buffers are not read any more: a reader of
        shared memory may let go of them).

        ``frames`` may be a callable returning them, called when the message
        is sent (to gather what piled up meanwhile into one message)."""
        with self._outbox_cond:
            closed = self.closed
            if not closed:
                if self._sender is None:
                    self._outbox = []
                    self._sender = threading.Thread(target=self._send_loop, daemon=True,
                                                    name=f"shmdask-send-{self.peer}")
                    self._sender.start()
                self._outbox.append((frames, data_frames, on_sent, on_done))
                self._outbox_cond.notify()
        if closed and on_done is not None:
            on_done()

    def _drop_outbox(self, batch: list) -> None:
        """The connection is gone: ``batch`` and whatever is queued will never be sent."""
        with self._outbox_cond:
            dropped, self._outbox = batch + self._outbox, []
            self._sending = False
            self._outbox_cond.notify_all()
        _call_on_done(dropped)

    def _send_loop(self) -> None:
        while True:
            with self._outbox_cond:
                while not self._outbox and not self.closed:
                    self._outbox_cond.wait()
                # Everything queued goes at once: many small messages (statuses,
                # pongs) cost one system call.
                batch, self._outbox = self._outbox, []
                closed = self.closed
                self._sending = not closed
            if closed:
                self._drop_outbox(batch)
                return
            start = time.time()
            try:
                encoded = [self._encode(frames() if callable(frames) else frames, data)
                           for frames, data, _, _ in batch]
                self._write(encoded)
            except Exception:
                # A dead connection (or a message that cannot be encoded, which
                # would leave the peer waiting forever): hang up, and the
                # reader reports the loss.
                self.abort()
                self._drop_outbox(batch)
                return
            stop = time.time()
            with self._outbox_cond:
                self._sending = False
                self._outbox_cond.notify_all()  # flush() waits for this
            for (_, _, on_sent, _), message in zip(batch, encoded, strict=True):
                if on_sent is not None:
                    on_sent(start, stop, message[2])
            del encoded
            _call_on_done(batch)
            del batch

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until posted messages are sent (or the connection is gone)."""
        with self._outbox_cond:
            self._outbox_cond.wait_for(
                lambda: not (self._outbox or self._sending) or self.closed, timeout)

    # -- receiving -------------------------------------------------------------

    def _read_into(self, target: memoryview, what: str) -> None:
        n = target.nbytes
        pos = 0
        avail = self._end - self._start
        if avail:
            k = min(avail, n)
            target[:k] = self._view[self._start:self._start + k]
            self._start += k
            pos = k
        recv_into = self._recv_into
        while pos < n:
            remaining = n - pos
            try:
                if remaining >= len(self._buf) // 2:
                    got = recv_into(target[pos:])
                    if got:
                        pos += got
                else:
                    got = recv_into(self._view)
                    if got:
                        k = min(got, remaining)
                        target[pos:pos + k] = self._view[:k]
                        self._start, self._end = k, got
                        pos += k
            except TimeoutError:
                raise CommClosedError(f"{self.peer} was silent for too long") from None
            except OSError as exc:
                raise CommClosedError(f"lost the connection to {self.peer}: {exc}") from None
            if not got:
                # Mid-message too, the peer is gone: a worker killed while it sent
                # results is lost (its tasks run again), not a protocol breaker.
                middle = "" if pos == 0 and what == "a message" else f" in the middle of {what}"
                raise CommClosedError(f"{self.peer} closed the connection{middle}")
        self.bytes_received += n

    def recv(self, alloc: Callable[[int], tuple | None] | None = None,
             free: Callable[[list], None] | None = None) -> tuple[list, dict]:
        """Read one message -> (frames, refs).  Data buffers for which ``alloc(n)``
        returns ``(ref, writeable view)`` are read into that view; ``refs`` maps
        their frame index to ``ref``.  If the message breaks off, ``free(refs)``
        gives those blocks back before the error propagates.

        A buffer is asked of ``alloc`` before its bytes are read only up to
        ``RESERVE_AHEAD``; a larger one is asked for once it has arrived whole
        (and copied in), so an announcement alone reserves no shared memory."""
        head = bytearray(FRAME_COUNT.size)
        self._read_into(memoryview(head), "a message")
        self.last_received = time.monotonic()
        (n,) = FRAME_COUNT.unpack(head)
        if n == 0 or n > MAX_FRAMES:
            raise ProtocolError(f"{self.peer} sent a message of {n} frames "
                                f"(allowed: 1 to {MAX_FRAMES})")
        table = bytearray(8 * n)
        self._read_into(memoryview(table), "a frame table")
        buffers = self._buffers(struct.unpack(f"!{n}Q", table))
        frames: list = []
        refs: dict = {}
        try:
            for i, (data, pieces) in enumerate(buffers):
                size = sum(pieces)
                target = None
                direct = alloc is not None and data and size <= RESERVE_AHEAD
                if direct:
                    got = alloc(size)
                    if got is not None:
                        refs[i], target = got
                if target is None:
                    target = _private_buffer(size)
                pos = 0
                for piece in pieces:
                    self._read_into(target[pos:pos + piece], "a frame")
                    pos += piece
                if alloc is not None and data and not direct:
                    got = alloc(size)
                    if got is not None:
                        refs[i], block = got
                        block[:] = target
                        target.release()
                        target = block
                frames.append(target)
        except BaseException:
            if refs and free is not None:
                for i in refs:
                    if i < len(frames):
                        frames[i].release()
                free(list(refs.values()))
            raise
        self.last_received = time.monotonic()
        return frames, refs

    def _buffers(self, lengths: tuple) -> list[tuple[bool, list[int]]]:
        """A frame table -> buffers as (is data, sizes of their frames), checked."""
        buffers: list = []
        pieces: list = []
        for raw in lengths:
            size = raw & _LENGTH
            if size > self.max_frame_bytes:
                raise ProtocolError(f"{self.peer} announced a frame of {size} bytes "
                                    f"(maximum {self.max_frame_bytes})")
            data = bool(raw & DATA_FLAG)
            if pieces and data != buffers[-1][0]:
                raise ProtocolError(f"{self.peer} sent a buffer whose frames disagree "
                                    "on whether it is data")
            if not pieces:
                buffers.append((data, pieces))
            pieces.append(size)
            if not raw & MORE_FLAG:
                pieces = []
        if pieces:
            raise ProtocolError(f"{self.peer} sent a message whose last frame "
                                "announces a continuation")
        return buffers

    def settimeout(self, seconds: float | None) -> None:
        """How long a read or a write may wait for the peer before the
        connection counts as lost (the socket's timeout, which under TLS the
        Comm keeps itself: the socket is non-blocking underneath)."""
        self._channel.settimeout(seconds)

    # -- closing ---------------------------------------------------------------

    def abort(self) -> None:
        """Close at once: wakes a reader blocked on this socket."""
        self.closed = True
        with self._outbox_cond:
            self._outbox_cond.notify_all()
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, also under TLS: SSLSocket.shutdown
            # would pull the TLS state from under a reader that is using it.
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def close(self) -> None:
        self.abort()


class _TlsChannel:
    """The reads and writes of one TLS socket, one OpenSSL call at a time.

    A connection is read by one thread while others write, and an SSL object
    is not safe for that, not even one reader and one writer: both go through
    the one socket BIO, and a write landing between a read's ``EAGAIN`` and
    OpenSSL's look at why the read failed makes "no data yet" an error, which
    Python reports as an EOF (``recv_into`` returns 0).  A busy connection
    then looked closed by a peer that was alive.  So the socket is
    non-blocking, every OpenSSL call runs under one lock and returns at once,
    and the waits for the socket (``poll``) happen outside the lock: a reader
    waiting for data holds up no writer.  ``timeout`` bounds each wait, as a
    socket timeout would (``TimeoutError``)."""

    def __init__(self, sock: ssl.SSLSocket):
        self.sock = sock
        self.timeout = sock.gettimeout()
        self._lock = threading.Lock()
        sock.setblocking(False)

    def settimeout(self, seconds: float | None) -> None:
        self.timeout = seconds

    def recv_into(self, view: memoryview) -> int:
        return self._call(self.sock.recv_into, view)

    def sendall(self, data: Any) -> None:
        view = _byte_view(data)
        pos = 0
        while pos < view.nbytes:
            # A write that could not finish is retried with the same bytes (as
            # OpenSSL requires): pos moves only when a write succeeds.
            pos += self._call(self.sock.send, view[pos:])

    def _call(self, io: Callable[[memoryview], int], view: memoryview) -> int:
        """``io(view)`` under the lock, waiting outside it as long as OpenSSL asks."""
        while True:
            with self._lock:
                try:
                    return io(view)
                except ssl.SSLWantReadError:
                    events = select.POLLIN
                except ssl.SSLWantWriteError:
                    events = select.POLLOUT
            self._wait(events)

    def _wait(self, events: int) -> None:
        fd = self.sock.fileno()
        if fd < 0:
            raise OSError(errno.EBADF, "the connection is closed")
        poller = select.poll()
        poller.register(fd, events)
        # Hang-ups and errors wake the poll too: the retried call reports them.
        if not poller.poll(None if self.timeout is None else self.timeout * 1000):
            raise TimeoutError("timed out")


def _call_on_done(entries: list) -> None:
    for entry in entries:
        if entry[3] is not None:
            entry[3]()


def _private_buffer(size: int) -> memoryview:
    """A writeable buffer of ``size`` bytes whose memory is committed as it is
    written (an anonymous mapping), not when it is made (a zero-filled bytearray)."""
    if size < LAZY_BUFFER:
        return memoryview(bytearray(size))
    try:
        return memoryview(mmap.mmap(-1, size))
    except (OSError, OverflowError, ValueError) as exc:
        raise ProtocolError(f"cannot make room for a buffer of {size} bytes: {exc}") from None


def _sendmsg_all(sock: socket.socket, views: list[memoryview]) -> None:
    i = 0
    while i < len(views):
        sent = sock.sendmsg(views[i:i + _IOV_MAX])
        while sent:
            n = views[i].nbytes
            if sent >= n:
                sent -= n
                i += 1
            else:
                views[i] = views[i][sent:]
                sent = 0
        while i < len(views) and views[i].nbytes == 0:
            i += 1


def recv_message(comm: Comm, alloc=None, free=None) -> tuple[tuple, list, dict]:
    """Read one message -> (header, body frames, refs of body frames by body index)."""
    frames, refs = comm.recv(alloc, free)
    try:
        header = pickle.loads(frames[0])
    except Exception as exc:
        if refs and free is not None:
            free(list(refs.values()))
        raise ProtocolError(f"{comm.peer} sent a message whose header cannot be "
                            f"read: {exc!r}") from None
    if type(header) is not tuple or not header or type(header[0]) is not str:
        if refs and free is not None:
            free(list(refs.values()))
        raise ProtocolError(f"{comm.peer} sent a malformed message header {header!r:.80}")
    return header, frames[1:], {i - 1: r for i, r in refs.items()}


def header_frames(header: tuple) -> list:
    return [pickle.dumps(header, protocol=5)]


# ----------------------------------------------------------------------------- values

def _wire_stored(pieces, nbytes, owner):  # pragma: no cover - resolved by _ValueUnpickler
    raise pickle.UnpicklingError("a value reference needs its frames")


class _ValuePickler(pickle.Pickler):
    def __init__(self, file, frames: list, first_index: int):
        super().__init__(file, protocol=5)
        self.frames = frames
        self.first_index = first_index

    def reducer_override(self, obj):
        if type(obj) is not Stored:
            return NotImplemented
        pieces: list = [bytes(obj.header)]
        for b in obj.buffers:
            if type(b) is tuple:
                raise ValueError("a value in this host's shared memory cannot be sent as is")
            m = _byte_view(b)
            if m.nbytes < INLINE_PIECE:
                pieces.append(bytes(m))
            else:
                pieces.append(self.first_index + len(self.frames))
                self.frames.append(m)
        return (_wire_stored, (pieces, obj.nbytes, obj.owner))


def dumps_values(header: tuple, body: Any) -> tuple[list, frozenset]:
    """A message whose body holds :class:`Stored` values -> (frames, data frame indices)."""
    data: list = []
    f = io.BytesIO()
    _ValuePickler(f, data, 1).dump(body)
    frames = [pickle.dumps(header, protocol=5), f.getbuffer(), *data]
    return frames, frozenset(range(2, len(frames)))


class _ValueUnpickler(pickle.Unpickler):
    def __init__(self, file, frames: list, refs: dict, owner: str | None):
        super().__init__(file)
        self.frames = frames
        self.refs = refs
        self.owner = owner
        self.claimed: set = set()

    def find_class(self, module: str, name: str):
        if module == __name__ and name == "_wire_stored":
            return self._build
        return super().find_class(module, name)

    def _build(self, pieces, nbytes, owner):
        if type(pieces) is not list or not pieces:
            raise pickle.UnpicklingError("malformed value")
        out = []
        in_shm = False
        for p in pieces[1:]:
            if type(p) is int:
                if p in self.refs:
                    out.append(self.refs[p])
                    in_shm = True
                elif 0 <= p < len(self.frames):
                    out.append(self.frames[p])
                else:
                    raise pickle.UnpicklingError(f"value refers to missing frame {p}")
                self.claimed.add(p)
            else:
                out.append(p)
        header = pieces[0]
        if type(header) is int:  # pragma: no cover - dumps_values keeps headers inline
            raise pickle.UnpicklingError("malformed value header")
        owner = "client" if in_shm else (self.owner or owner)
        return Stored(header, out, nbytes, owner)


def loads_values(body: list, refs: dict, owner: str | None = None) -> tuple[Any, list]:
    """Inverse of :func:`dumps_values` on the body frames -> (body, unclaimed refs).

    ``refs`` (frame index in ``body`` -> shared-memory block) come from
    :func:`recv_message`; values with blocks get owner ``"client"`` (the
    scheduler's store frees them), others ``owner`` (the sender's id)."""
    frames = {i: f for i, f in enumerate(body)}
    u = _ValueUnpickler(io.BytesIO(body[0]), frames, refs, owner)
    u.frames = frames
    value = u.load()
    unclaimed = [r for i, r in refs.items() if i not in u.claimed]
    return value, unclaimed


# ----------------------------------------------------------------------------- clocks

class ClockOffset:
    """Offset of a peer's ``time.time()`` from ours, from ping round trips.

    A ping stamped ``t0`` here, answered with the peer's clock ``tp``, back at
    ``t1``: offset ~ ``tp - (t0 + t1) / 2``, with error at most half the round
    trip; the sample with the shortest round trip among the recent ones wins.
    """

    def __init__(self, window: int = 32):
        self.samples: list[tuple[float, float]] = []  # (rtt, offset)
        self.window = window
        self.offset = 0.0
        self.rtt = float("inf")

    def add(self, t0: float, peer_time: float, t1: float) -> None:
        rtt = max(0.0, t1 - t0)
        self.samples.append((rtt, peer_time - (t0 + t1) / 2))
        if len(self.samples) > self.window:
            del self.samples[0]
        self.rtt, self.offset = min(self.samples)

    def to_local(self, peer_time: float) -> float:
        return peer_time - self.offset
