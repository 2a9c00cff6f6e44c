"""One serialization path for everything that crosses a process boundary.

What flows in and out:

- **Values** (task results, scattered data) become :class:`Stored`: a pickle
  protocol 5 header plus its out-of-band buffers.  numpy arrays and what is
  built of them (pandas DataFrame, Series and Index, numpy- or Arrow-backed
  columns, datetimes included) give their data as such buffers.  A buffer of at least
  ``threshold`` bytes is copied once into a shared-memory block and only its
  address travels; smaller ones travel inline.  Reading a ``Stored`` back maps
  the blocks zero-copy and read-only (numpy then refuses writes with its own
  "assignment destination is read-only"), or copies them into private writeable
  memory (``copy=True``: what the user gets back).  A tiny immutable result
  (None, a number, a short string: :func:`is_immediate`) skips all that and
  travels, and is held by the scheduler, as itself.
- **Messages** (batches of tasks, batches of results, frees) are a small header
  (what the message is, e.g. ``("run", keys)``) and an optional body: one pickle
  frame followed by its out-of-band buffers.  Transports only move frames
  (:func:`join_frames` / :func:`split_frames` turn them into one byte string and
  back), so the pipe and a TCP socket share this module.
- **Functions** are cloudpickled once per process (:func:`function_token`) and
  sent once per connection: a :class:`MessagePickler` replaces each function by
  a call ``_function_from_token(token)`` and ships the payloads new to this
  connection in a frame of their own; a :class:`MessageUnpickler` on the far
  side routes that call to its connection's token -> function table.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import itertools
import logging
import pickle
import struct
import sys
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

import cloudpickle

# Buffers at least this large go to shared memory; smaller ones travel inline.
# Measured (benchmarks/workloads_cluster.py threshold: one producer -> consumer
# handoff between worker processes, all-inline vs all-shm, 2 cores): inline wins
# up to ~12 KiB (75 vs 76-107 us at 2-4 KiB, 98 vs 135 us at 12 KiB), shm from
# ~16 KiB on (97-115 vs 118-138 us at 16 KiB, 79 vs 215 us at 32 KiB, 0.8 vs
# 9 ms at 4 MiB).
SHM_THRESHOLD = 16 * 1024

FRAME_COUNT = struct.Struct("!I")


# ----------------------------------------------------------------------------- frames


def frame_table(lengths: list[int]) -> bytes:
    """The head of every message, on pipes and sockets alike: ``!I`` frame
    count, then one ``!Q`` length per frame (a socket flags data frames in
    the top bit of the length)."""
    return FRAME_COUNT.pack(len(lengths)) + struct.pack(f"!{len(lengths)}Q", *lengths)


def join_frames(frames: list) -> bytes:
    """Frames (bytes-like) -> one byte string: the frame table, then the data."""
    return b"".join([frame_table([memoryview(f).nbytes for f in frames]), *frames])


def split_frames(data: bytes | memoryview) -> list[memoryview]:
    """Inverse of :func:`join_frames`; the frames are views into ``data``."""
    view = memoryview(data)
    (count,) = FRAME_COUNT.unpack_from(view, 0)
    lengths = struct.unpack_from(f"!{count}Q", view, FRAME_COUNT.size)
    pos = FRAME_COUNT.size + 8 * count
    frames = []
    for n in lengths:
        frames.append(view[pos : pos + n])
        pos += n
    if pos != view.nbytes:
        raise ValueError(f"malformed message: {view.nbytes - pos} trailing bytes")
    return frames


# ----------------------------------------------------------------------------- values


NOT_LOADED = object()  # Stored.loaded before a worker read the value


class Stored:
    """A value in the data plane: pickle header + buffers (inline bytes or shm blocks).

    ``buffers`` (a list, or ``()`` when there are none) items are either
    bytes-like (inline) or a ``(segment, offset, length)`` tuple (a
    shared-memory block; a segment name that is an absolute path is a spill
    file, mapped the same way).  ``owner`` names the allocator that
    holds the blocks (a worker id, or ``"client"``), so a release can be routed
    to it.  The engine treats a ``Stored`` as opaque.
    """

    __slots__ = ("header", "buffers", "nbytes", "owner", "live", "loaded", "__weakref__")

    def __init__(self, header, buffers: list | tuple, nbytes: int, owner: str):
        self.header = header
        self.buffers = buffers
        self.nbytes = nbytes
        self.owner = owner
        self.live = False  # counted by a store (between adopt and release)
        # In a worker: the value, once a task has read it.  The tasks of one
        # batch that share an input share one Stored (one message), so they
        # read it once, and the value goes when the last of them lets go.
        # Never pickled.
        self.loaded = NOT_LOADED

    @property
    def blocks(self) -> list[tuple]:
        return [b for b in self.buffers if type(b) is tuple]

    @property
    def where(self) -> str:
        """"shm", "disk" (every block in spill files: see spill.py) or "inline"."""
        blocks = self.blocks
        if not blocks:
            return "inline"
        return "disk" if all(b[0][:1] == "/" for b in blocks) else "shm"

    def detach(self) -> Stored:
        """Copy inline pieces out of the message they arrived in, so a value
        kept for long does not pin a whole batch of results in memory."""
        if type(self.header) is not bytes:
            self.header = bytes(self.header)
        if self.buffers:  # none stays ``()``: no list for the collector to walk
            self.buffers = [bytes(b) if type(b) is memoryview else b for b in self.buffers]
        return self

    def load(self) -> Any:
        """The value, when every buffer is inline (no shared memory to map)."""
        return deserialize_value(self)

    def __reduce__(self):
        # Inline buffers and the header travel as out-of-band frames: no copy
        # into the pickle stream.
        # No buffers travel as the empty tuple: a value that arrives without any
        # (most small results) then holds no list for the collector to walk.
        buffers = [_out_of_band(b) if type(b) is not tuple else b
                   for b in self.buffers] if self.buffers else ()
        return (Stored, (_out_of_band(self.header), buffers, self.nbytes, self.owner))

    def __repr__(self) -> str:
        return f"<Stored {self.nbytes} bytes {self.where} owner={self.owner}>"


def _out_of_band(b):
    # Tiny pieces are cheaper in the pickle stream than as frames of their own.
    return pickle.PickleBuffer(b) if len(b) >= 1024 else bytes(b)


def _rebuild_time_array(ints: Any, dtype: Any) -> Any:
    return ints.view(dtype)


def _small_array(buffer: Any, dtype: str, shape: tuple, order: str) -> Any:
    """A small array from its bytes (see :func:`_small_array_header`): writeable
    when its buffer is, as numpy's own out-of-band arrays."""
    np = sys.modules["numpy"]
    return np.frombuffer(buffer, dtype).reshape(shape, order=order)


_small_headers: dict[tuple, bytes] = {}


def _small_array_header(dtype: str, shape: tuple, order: str) -> bytes:
    """The pickle header of a small array whose one buffer travels out of band.

    It names :func:`_small_array` and the array's dtype, shape and memory
    order, never its data, so arrays of one kind share one header, made once.
    numpy's own reduce costs ~13 us to pickle a 1-element array and ~8 us to
    load it; this costs a dict lookup and ~1.5 us to load (a chunk's partial
    sum, read by the reduction above it, is the commonest result there is)."""
    key = (dtype, shape, order)
    header = _small_headers.get(key)
    if header is None:
        if len(_small_headers) >= 4096:  # shapes seen once must not pile up
            _small_headers.clear()
        header = pickle.dumps(_SmallArrayHeader(key), protocol=5,
                              buffer_callback=lambda _: False)
        _small_headers[key] = header
    return header


class _SmallArrayHeader:
    __slots__ = ("key",)

    def __init__(self, key: tuple):
        self.key = key

    def __reduce__(self):
        # (a writeable buffer: a read-only one would make every load read-only)
        return (_small_array, (pickle.PickleBuffer(bytearray()), *self.key))


def _reduce_ndarray(a: Any) -> Any:
    """numpy pickles datetime64/timedelta64 arrays in-band (they export no
    buffer); as int64 views they go out of band like any other array, so
    pandas datetime columns reach shared memory too.  Everything else reduces
    as numpy does."""
    if a.dtype.kind in "mM" and a.dtype.itemsize == 8 and a.size and (
            a.flags.c_contiguous or a.flags.f_contiguous):
        return _rebuild_time_array, (a.view("i8"), a.dtype)
    return a.__reduce_ex__(5)


_our_dispatch_table: dict = {}
_copyreg_size = -1  # len(copyreg.dispatch_table) when ours was made


def _with_our_reducers(pickler: pickle.Pickler) -> pickle.Pickler:
    """``pickler`` with :func:`_reduce_ndarray` in its dispatch table, once numpy
    is loaded (no numpy array can exist before).

    The table is a plain dict copy of copyreg's, made again when copyreg's
    grows: the C pickler looks a dict up in C, while a ChainMap would cost a
    Python call for every object of a message it pickles."""
    global _our_dispatch_table, _copyreg_size
    np = sys.modules.get("numpy")
    if np is not None:
        if len(copyreg.dispatch_table) != _copyreg_size or np.ndarray not in _our_dispatch_table:
            table = dict(copyreg.dispatch_table)
            table[np.ndarray] = _reduce_ndarray
            _our_dispatch_table, _copyreg_size = table, len(copyreg.dispatch_table)
        pickler.dispatch_table = _our_dispatch_table
    return pickler


def pickle_any(obj: Any, buffer_callback: Callable | None = None,
               undo: Callable[[], None] | None = None) -> bytes:
    """Pickle protocol 5: plain pickle first (fast, functions by reference), then
    cloudpickle for what plain pickle refuses (lambdas, closures, anything of
    ``__main__``).  ``undo()`` runs between the two attempts, to drop what
    ``buffer_callback`` kept of the failed one.  The one pickling path of
    values, messages and exceptions."""
    f = io.BytesIO()
    try:
        _with_our_reducers(pickle.Pickler(f, protocol=5, buffer_callback=buffer_callback)
                           ).dump(obj)
    except (pickle.PicklingError, AttributeError, TypeError):
        if undo is not None:
            undo()
        f = io.BytesIO()
        _with_our_reducers(cloudpickle.CloudPickler(f, protocol=5,
                                                    buffer_callback=buffer_callback)).dump(obj)
    return f.getvalue()


_warned_shm_full = False


def _warn_shm_full(exc: OSError) -> None:
    global _warned_shm_full
    if not _warned_shm_full:
        _warned_shm_full = True
        logging.getLogger("shmdask.cluster").warning(
            "cannot allocate shared memory (%s); large results travel through the pipes "
            "instead (is /dev/shm too small?)", exc)


# Types whose pickle is always in-band (protocol 5 only puts PickleBuffers out
# of band) and never needs cloudpickle.
_INBAND_TYPES = frozenset({type(None), bool, int, float, complex, str, bytes})


# A result this small and immutable travels as itself, not as a Stored: no
# header to pickle in the worker, no Stored to build in the reader, nothing to
# count in the store, nothing to unpickle when the client fetches it.  On a
# graph of tiny tasks those steps were a quarter of the scheduler process's
# time (noop_10k on LocalCluster(2): 0.44-0.46 s -> 0.32-0.35 s).  Immutable,
# so the scheduler may hand the one object to every reader.
IMMEDIATE_MAX_LENGTH = 256  # str and bytes up to this length


def is_immediate(obj: Any) -> bool:
    """Whether a result travels and is held as itself (see above): None, a bool,
    a number (a numpy number too), or a short str or bytes."""
    kind = type(obj)
    if kind is float or kind is type(None) or kind is bool or kind is complex:
        return True
    if kind is int:
        return obj.bit_length() <= 64 * IMMEDIATE_MAX_LENGTH
    if kind is str or kind is bytes:
        return len(obj) <= IMMEDIATE_MAX_LENGTH
    return _is_numpy_number(obj, sys.modules.get("numpy"))


def _is_numpy_number(obj: Any, np: Any) -> bool:
    """A numpy scalar of a number kind (bool, int, uint, float, complex)."""
    return np is not None and isinstance(obj, np.generic) and obj.dtype.kind in "biufc"


def serialize_value(obj: Any, allocator=None, owner: str = "client",
                    threshold: int = SHM_THRESHOLD,
                    claim: Callable[[int, int], Any] | None = None) -> Stored:
    """Pickle ``obj``; buffers of at least ``threshold`` bytes go to ``allocator``'s
    shared memory (if one is given), the rest inline (copied: the caller may
    mutate ``obj`` afterwards).  ``claim(address, nbytes)``: the reference of
    a block ``obj`` was made in (``cluster/born_blocks.py``), kept as is."""
    if type(obj) in _INBAND_TYPES:
        # Most results of tiny tasks: no buffers to place, nothing to fall back
        # to cloudpickle for -- one C call instead of a pickler per value.
        header = pickle.dumps(obj, protocol=5)
        return Stored(header, (), len(header), owner)
    np = sys.modules.get("numpy")
    if np is not None and type(obj) is np.ndarray and not obj.dtype.hasobject:
        if claim is not None and obj.nbytes >= threshold:
            stored = _claimed(obj, claim, owner, np)
            if stored is not None:
                return stored
        if not (obj.flags.c_contiguous or obj.flags.f_contiguous):
            # numpy pickles a strided view's data in-band (into the header, through
            # the pipe); one contiguous copy here sends it through shm instead.
            obj = np.ascontiguousarray(obj)
        elif (obj.nbytes < threshold and obj.dtype.kind in "biufc"
              and obj.dtype.fields is None and obj.dtype.metadata is None):
            # (not dtype.isbuiltin: a dtype that came through a pickle, as in
            # every task's arguments, is an equal but distinct object, never
            # "builtin"; ``dtype.str`` says all a plain number type is)
            # A small array of plain numbers (a chunk's partial sum): its bytes,
            # and a header shared by every array of its dtype and shape.
            order = "F" if obj.flags.f_contiguous and not obj.flags.c_contiguous else "C"
            data = obj.tobytes(order=order)  # a copy: obj may change
            header = _small_array_header(obj.dtype.str, obj.shape, order)
            return Stored(header, [data], len(header) + len(data), owner)
        elif obj.nbytes < threshold and obj.dtype.kind not in "mM":
            # A small array (a chunk's partial sum): all of it inline, by numpy's
            # own reduce (ours differs for datetimes only), in one C call.
            views: list = []
            header = pickle.dumps(obj, protocol=5, buffer_callback=views.append)
            inline = [bytes(view.raw()) for view in views]  # copies: obj may change
            return Stored(header, inline, len(header) + sum(map(len, inline)), owner)
    elif _is_numpy_number(obj, np):
        header = pickle.dumps(obj, protocol=5)  # no buffers
        return Stored(header, (), len(header), owner)
    buffers: list = []

    def keep(pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        n = raw.nbytes
        if allocator is not None and n >= threshold:
            try:
                ref, view = allocator.alloc(n)
            except OSError as exc:  # /dev/shm is full: slower, but it works
                _warn_shm_full(exc)
            else:
                view[:] = raw
                view.release()
                buffers.append(ref)
                return False
        buffers.append(bytes(raw))
        return False

    def undo() -> None:
        if allocator is not None:
            allocator.free([b for b in buffers if type(b) is tuple])
        buffers.clear()

    try:
        header = pickle_any(obj, keep, undo)
    except BaseException:
        undo()  # give back what the failed attempt took
        raise
    nbytes = len(header) + sum(b[2] if type(b) is tuple else len(b) for b in buffers)
    return Stored(header, buffers, nbytes, owner)


def _claimed(obj: Any, claim: Callable[[int, int], Any], owner: str, np: Any) -> Stored | None:
    """``obj`` as the block it was made in, if ``claim`` owns that block: its
    one buffer is exactly the block, so the header is all there is to make."""
    views: list = []
    header = pickle.dumps(obj, protocol=5, buffer_callback=views.append)
    if len(views) != 1:  # (datetimes pickle in-band)
        return None
    raw = views[0].raw()
    ref = claim(np.frombuffer(raw, np.uint8).__array_interface__["data"][0], raw.nbytes)
    if ref is None:
        return None
    return Stored(header, [ref], len(header) + raw.nbytes, owner)


def deserialize_value(stored: Stored, mappings=None, copy: bool = False) -> Any:
    """Rebuild a value. ``copy=False``: shm buffers are zero-copy read-only views;
    ``copy=True``: every buffer is a private writeable copy.  An immediate
    value (:func:`is_immediate`) is its own value."""
    if type(stored) is not Stored:
        return stored
    bufs = []
    for b in stored.buffers:
        if type(b) is tuple:
            if mappings is None:
                raise ValueError("a value in shared memory needs a MappingCache to be read")
            b = mappings.view(*b)
        bufs.append(bytearray(b) if copy else b)
    return pickle.loads(stored.header, buffers=bufs)


# ----------------------------------------------------------------------------- functions

_token_lock = threading.Lock()
_token_counter = itertools.count(1)
_function_tokens: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
pickled_functions = 0  # how many times this process cloudpickled a function


def function_token(fn: types.FunctionType) -> tuple[int, bytes]:
    """(token, cloudpickled payload) for ``fn``, pickled once per process."""
    global pickled_functions
    entry = _function_tokens.get(fn)
    if entry is None:
        with _token_lock:
            entry = _function_tokens.get(fn)
            if entry is None:
                payload = cloudpickle.dumps(fn, protocol=5)
                pickled_functions += 1
                entry = (next(_token_counter), payload)
                _function_tokens[fn] = entry
    return entry


class ConnectionState:
    """What one connection's far side already holds: the function tokens it has
    been sent (sender side) or the functions it has loaded (receiver side)."""

    def __init__(self):
        self.sent_tokens: set[int] = set()
        self.functions: dict[int, Callable] = {}
        self.functions_loaded = 0
        self.functions_sent = 0

    def install(self, payloads: dict[int, bytes]) -> None:
        """Load newly sent functions, one by one: a function that cannot be
        loaded here (say, its module is missing) fails only the tasks that call it."""
        for token, payload in payloads.items():
            try:
                fn = pickle.loads(payload)
            except Exception as exc:
                fn = UnloadableFunction(exc)
            self.functions[token] = fn
            self.functions_loaded += 1


class UnloadableFunction:
    """Stands in for a function that could not be unpickled; calling it raises why."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self.exc.with_traceback(None)

    def __repr__(self) -> str:
        return f"<UnloadableFunction: {self.exc!r}>"


def _function_from_token(token: int):
    # Never called as is: a MessageUnpickler resolves this name to its
    # connection's table (see MessageUnpickler.find_class).
    raise pickle.UnpicklingError("a function token needs a MessageUnpickler")


class MessagePickler(pickle.Pickler):
    """Pickler that sends each function as a token, collecting the payloads of
    tokens this connection has not seen yet in ``new_functions``.

    ``reducer_override`` rather than ``persistent_id``: the C pickler skips it
    for ints, floats, strings and bytes, which are most of a task batch."""

    def __init__(self, file, state: ConnectionState, buffer_callback):
        super().__init__(file, protocol=5, buffer_callback=buffer_callback)
        self.state = state
        self.new_functions: dict[int, bytes] = {}

    def reducer_override(self, obj):
        if type(obj) is not types.FunctionType or obj is _function_from_token:
            return NotImplemented
        token, payload = function_token(obj)
        if token not in self.state.sent_tokens:
            self.new_functions[token] = payload
        return (_function_from_token, (token,))


class MessageUnpickler(pickle.Unpickler):
    """Resolves function tokens through its connection's table."""

    def __init__(self, file, state: ConnectionState, buffers):
        super().__init__(file, buffers=buffers)
        self.state = state

    def find_class(self, module: str, name: str):
        if name == "_function_from_token" and module == __name__:
            return self._function_from_token
        return super().find_class(module, name)

    def _function_from_token(self, token: int):
        try:
            return self.state.functions[token]
        except KeyError:
            raise pickle.UnpicklingError(f"function token {token} was never sent") from None


def dumps_message(msg: Any, state: ConnectionState | None = None) -> list:
    """A message -> frames: the pickle, then its out-of-band buffers.

    With ``state`` (sender side of a task connection) functions go by token and
    one more frame leads: the payloads of functions new to this connection,
    loaded apart from the message (:meth:`ConnectionState.install`) so that
    one bad function cannot leave the far side's table behind ours."""
    frames: list = [None]
    callback = frames.append
    if state is None:
        def drop_buffers() -> None:
            del frames[1:]

        frames[0] = pickle_any(msg, callback, drop_buffers)
        return frames
    f = io.BytesIO()
    p = MessagePickler(f, state, callback)
    p.dump(msg)
    # Only now is it certain the far side will see these payloads.
    state.sent_tokens.update(p.new_functions)
    state.functions_sent += len(p.new_functions)
    frames[0] = f.getbuffer()
    return [pickle.dumps(p.new_functions, protocol=5), *frames]


def loads_message(frames: list, state: ConnectionState | None = None) -> Any:
    """Frames -> the message (functions resolved through ``state``'s table)."""
    if state is None:
        return pickle.Unpickler(io.BytesIO(frames[0]), buffers=frames[1:]).load()
    state.install(pickle.loads(frames[0]))
    return MessageUnpickler(io.BytesIO(frames[1]), state, frames[2:]).load()


def dumps_call(fn: Any, args: tuple, kwargs: dict | None) -> list:
    """A function call for a worker (``client.run``) -> body frames: by value, as
    task functions travel (a function of the client's ``__main__`` means
    nothing in a worker's), in one frame that is the body as is."""
    return [cloudpickle.dumps((fn, args, kwargs or {}), protocol=5)]


def loads_call(body: list) -> tuple:
    """Inverse of :func:`dumps_call` -> ``(fn, args, kwargs)``."""
    return pickle.loads(body[0])


def encode_frames(header: tuple, frames: list) -> bytes:
    """A message whose body frames are made already (:func:`dumps_call`)."""
    return join_frames([pickle.dumps(header, protocol=5), *frames])


def encode_message(header: tuple, body: Any = None, state: ConnectionState | None = None) -> bytes:
    """One transport message: a small plain-pickled ``header`` (what it is) and an
    optional ``body`` (the payload, functions by token if ``state`` is given).

    The two are pickled apart so a receiver can always read the header, and
    knows, say, which task keys to fail when the body cannot be unpickled."""
    return encode_frames(header, [] if body is None else dumps_message(body, state))


def decode_message(data: bytes | memoryview) -> tuple[tuple, list]:
    """-> (header, body frames); read the body with :func:`loads_message`."""
    frames = split_frames(data)
    return pickle.loads(frames[0]), frames[1:]


# ----------------------------------------------------------------------------- errors


def dump_exception(exc: BaseException) -> bytes:
    """Pickle an exception so that a bad one cannot spoil a whole message: it must
    survive a round trip, or a RuntimeError carrying its text goes instead."""
    with contextlib.suppress(Exception):
        data = pickle_any(exc)
        pickle.loads(data)
        return data
    return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"), protocol=5)


def load_exception(data: bytes, text: str = "") -> BaseException:
    try:
        exc = pickle.loads(data)
    except Exception:
        return RuntimeError(text or "task failed with an exception that could not be unpickled")
    if not isinstance(exc, BaseException):
        return RuntimeError(f"task raised a non-exception: {exc!r}")
    return exc
