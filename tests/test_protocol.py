"""Serialization: frames, values in shared memory, function tokens, exceptions."""

import operator
import pickle
import threading
import time

import numpy as np
import pytest

from shmdask.cluster import protocol, shm
from shmdask.cluster.protocol import (
    ConnectionState,
    Stored,
    decode_message,
    deserialize_value,
    dump_exception,
    dumps_message,
    encode_message,
    is_immediate,
    join_frames,
    load_exception,
    loads_message,
    serialize_value,
    split_frames,
)


@pytest.fixture
def allocator():
    alloc = shm.SlabAllocator(shm.new_cluster_id(), "w")
    yield alloc
    alloc.close()


def test_frames_roundtrip():
    frames = [b"", b"abc", bytearray(b"x" * 1000), memoryview(b"tail")]
    out = split_frames(join_frames(frames))
    assert [bytes(f) for f in out] == [b"", b"abc", b"x" * 1000, b"tail"]
    with pytest.raises(ValueError, match="trailing"):
        split_frames(join_frames([b"ab"]) + b"junk")


def test_small_values_travel_inline(allocator):
    for obj in [1, "s", None, {"a": (1, 2.5)}, np.arange(10), b"x" * 100]:
        s = serialize_value(obj, allocator, "w")
        assert s.where == "inline"
        back = deserialize_value(s)
        if isinstance(obj, np.ndarray):
            np.testing.assert_array_equal(back, obj)
        else:
            assert back == obj
    assert allocator.segments_created == 0


def test_plain_values_of_any_size_stay_in_the_header(allocator):
    # str and bytes never pickle out of band: even a big one stays inline,
    # owned by the caller's name, with its true size
    for obj in [True, 3 + 4j, 2**100, -0.5, "é" * 40_000, b"y" * 40_000]:
        s = serialize_value(obj, allocator, "w")
        assert (s.buffers, s.owner, s.where) == ((), "w", "inline")
        # through a message it stays without a list (nothing for the collector)
        back = loads_message(dumps_message([s]))[0]
        assert back.buffers == () and bytes(back.header) == bytes(s.header)
        assert s.nbytes == len(s.header)
        assert deserialize_value(s) == obj and type(deserialize_value(s)) is type(obj)
    assert allocator.segments_created == 0


def test_large_arrays_go_to_shm_and_read_back_zero_copy(allocator):
    x = np.arange(1_000_000, dtype="f8")
    s = serialize_value(x, allocator, "w")
    assert s.where == "shm" and len(s.blocks) == 1
    assert s.nbytes >= x.nbytes
    assert len(s.header) < 1000  # the data is not in the pickle
    reader = shm.MappingCache()
    y = deserialize_value(s, reader)
    np.testing.assert_array_equal(x, y)
    assert not y.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        y[0] = 1
    # zero-copy: the array's memory is inside the segment's mapping
    whole = np.frombuffer(reader.view(s.blocks[0][0], 0, 1), dtype=np.uint8)
    assert y.__array_interface__["data"][0] - whole.__array_interface__["data"][0] == \
        s.blocks[0][1]
    # a private copy is writeable and independent
    z = deserialize_value(s, reader, copy=True)
    z[0] = 42
    assert y[0] == 0
    del y, whole
    reader.close()
    with pytest.raises(ValueError, match="MappingCache"):
        deserialize_value(s)


def test_layouts_and_containers(allocator):
    reader = shm.MappingCache()
    f = np.asfortranarray(np.random.default_rng(0).random((300, 200)))
    nc = np.arange(200_000)[::2]  # not contiguous: pickled in-band
    objs = np.array([{"a": 1}, None, "s"] * 3, dtype=object)
    value = {"f": f, "nc": nc, "objs": objs, "list": [np.ones(50_000), 3]}
    back = deserialize_value(serialize_value(value, allocator, "w"), reader)
    np.testing.assert_array_equal(back["f"], f)
    assert back["f"].flags.f_contiguous
    np.testing.assert_array_equal(back["nc"], nc)
    assert list(back["objs"]) == list(objs)
    np.testing.assert_array_equal(back["list"][0], np.ones(50_000))
    del back
    reader.close()


def test_threshold_decides_where(allocator):
    x = np.ones(1000, dtype="u1")
    assert serialize_value(x, allocator, "w", threshold=1000).where == "shm"
    assert serialize_value(x, allocator, "w", threshold=1001).where == "inline"
    assert serialize_value(x, None, "w", threshold=1).where == "inline"  # no allocator


def test_inline_buffers_are_copies():
    x = np.zeros(100)
    s = serialize_value(x)
    x[:] = 7
    assert deserialize_value(s).sum() == 0


def test_unpicklable_by_pickle_falls_back_to_cloudpickle(allocator):
    y = 10
    s = serialize_value(lambda v: v + y, allocator, "w")
    assert deserialize_value(s)(1) == 11
    # ... and buffers allocated by the failed first attempt are given back
    big = np.ones(100_000)
    s = serialize_value((big, lambda: 1), allocator, "w")
    assert allocator.free_bytes > 0
    assert deserialize_value(s, shm.MappingCache(allocator))[1]() == 1


def test_stored_pickles_through_messages(allocator):
    a = serialize_value(np.arange(100_000), allocator, "w")
    b = serialize_value("small", allocator, "w")
    header, frames = decode_message(encode_message(("results", []), [a, b, a]))
    assert header == ("results", [])
    a2, b2, a3 = loads_message(frames)
    assert a2 is a3  # shared values travel once and stay shared
    assert isinstance(a2, Stored) and a2.blocks == a.blocks and a2.owner == "w"
    assert deserialize_value(b2) == "small"
    assert deserialize_value(a2, shm.MappingCache(allocator))[-1] == 99_999


def _double(x):
    return 2 * x


def test_functions_are_sent_once_per_connection():
    y = 3
    fn = lambda v: v + y  # noqa: E731
    before = protocol.pickled_functions
    sender, receiver = ConnectionState(), ConnectionState()
    tasks = [("k", (fn, i), {}) for i in range(50)] + [("d", (_double, 2), {})]
    first = encode_message(("run",), tasks, sender)
    second = encode_message(("run",), tasks, sender)
    assert len(second) < len(first)
    assert sender.functions_sent == 2
    for data in (first, second):
        _, frames = decode_message(data)
        out = loads_message(frames, receiver)
        assert out[0][1][0](1) == 4
        assert out[-1][1][0] is out[-1][1][0]
    assert receiver.functions_loaded == 2
    # another connection gets the payload again, but it is not re-pickled
    other = ConnectionState()
    _, frames = decode_message(encode_message(("run",), tasks, ConnectionState()))
    assert loads_message(frames, other)[0][1][0](0) == 3
    assert protocol.pickled_functions - before == 2


def test_unknown_function_token_is_an_error():
    _, frames = decode_message(encode_message(("run",), [_double], ConnectionState()))
    stranger = ConnectionState()
    loads_message(frames, stranger)
    replay = encode_message(("run",), [_double], _sent_all(stranger))
    with pytest.raises(pickle.UnpicklingError, match="never sent"):
        loads_message(decode_message(replay)[1], ConnectionState())


def _sent_all(received: ConnectionState) -> ConnectionState:
    state = ConnectionState()
    state.sent_tokens = set(received.functions)
    return state


def test_failed_message_does_not_mark_functions_sent():
    state = ConnectionState()
    with pytest.raises(TypeError):
        dumps_message([_double, threading.Lock()], state)
    assert state.sent_tokens == set()
    out = loads_message(dumps_message([_double], state), ConnectionState())
    assert out[0](4) == 8


def test_builtins_and_methods_still_work():
    state = ConnectionState()
    msg = [operator.add, np.add, sum, [1, 2].count, time.time]
    out = loads_message(dumps_message(msg, state), ConnectionState())
    assert out[0](1, 2) == 3 and out[1](1, 2) == 3 and out[2]([1]) == 1


class NeedsTwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


class CarriesALock(Exception):
    def __init__(self):
        super().__init__("locked")
        self.lock = threading.Lock()


def test_exceptions_survive_or_degrade_to_text():
    exc = load_exception(dump_exception(ValueError("bad value")))
    assert type(exc) is ValueError and str(exc) == "bad value"
    # unpicklable: a RuntimeError that still says what happened
    exc = load_exception(dump_exception(CarriesALock()))
    assert isinstance(exc, RuntimeError) and "CarriesALock: locked" in str(exc)
    # pickles, but does not unpickle (unless tblib, which dask imports, made it
    # picklable in this process): either way the message survives
    exc = load_exception(dump_exception(NeedsTwoArgs(1, 2)))
    assert type(exc) in (RuntimeError, NeedsTwoArgs) and "1-2" in str(exc)
    exc = load_exception(b"not a pickle", "Traceback: boom")
    assert isinstance(exc, RuntimeError) and "boom" in str(exc)


def test_detach_copies_inline_pieces_out_of_the_message():
    big_inline = serialize_value(np.arange(1500))  # 12 KB: inline, an out-of-band frame
    _, frames = decode_message(encode_message(("results", []), [big_inline]))
    (received,) = loads_message(frames)
    assert any(type(b) is memoryview for b in received.buffers)
    received.detach()
    assert type(received.header) is bytes
    assert all(type(b) is bytes for b in received.buffers)
    np.testing.assert_array_equal(deserialize_value(received), np.arange(1500))


def test_detach_keeps_no_buffers_as_the_empty_tuple():
    big_header = serialize_value("x" * 3000)  # a header sent out of band, no buffers
    _, frames = decode_message(encode_message(("results", []), [big_header]))
    (received,) = loads_message(frames)
    assert type(received.header) is not bytes and received.buffers == ()
    received.detach()
    assert type(received.header) is bytes and received.buffers == ()
    assert deserialize_value(received) == "x" * 3000


def test_full_shm_falls_back_to_inline(allocator, monkeypatch, caplog):
    import errno

    def full(nbytes):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(allocator, "alloc", full)
    monkeypatch.setattr(protocol, "_warned_shm_full", False)
    with caplog.at_level("WARNING", logger="shmdask.cluster"):
        s = serialize_value(np.ones(100_000), allocator, "w")
    assert "cannot allocate shared memory" in caplog.text  # logged: not the user's mistake
    assert s.where == "inline"
    np.testing.assert_array_equal(deserialize_value(s), np.ones(100_000))


def test_strided_arrays_go_to_shm_not_into_the_header(allocator):
    x = np.arange(400_000.0).reshape(400, 1000)[:, ::2]
    assert not x.flags.c_contiguous and not x.flags.f_contiguous
    s = serialize_value(x, allocator, "w")
    assert s.where == "shm" and len(s.header) < 1000
    np.testing.assert_array_equal(deserialize_value(s, shm.MappingCache(allocator)), x)


def test_unpicklable_value_gives_its_blocks_back(allocator):
    before = allocator.free_bytes
    with pytest.raises(TypeError):
        serialize_value((np.ones(100_000), threading.Lock()), allocator, "w")
    assert allocator.segments_created == 1
    assert allocator.free_bytes >= before  # every block it took is free again
    ref, _ = allocator.alloc(800_000)
    assert allocator.segments_created == 1  # ... and reused
    allocator.free([ref])


class _Registered:
    def __init__(self, x):
        self.x = x


def _rebuild_registered(x):
    return _Registered(x * 10)


def test_copyreg_reducers_registered_later_are_used(allocator):
    import copyreg

    serialize_value(np.arange(3), allocator, "w")  # our table exists now
    copyreg.pickle(_Registered, lambda obj: (_rebuild_registered, (obj.x,)))
    try:
        back = deserialize_value(serialize_value([_Registered(4), np.arange(3)], allocator, "w"))
    finally:
        del copyreg.dispatch_table[_Registered]
    assert back[0].x == 40
    np.testing.assert_array_equal(back[1], np.arange(3))


def test_small_arrays_and_numpy_numbers_travel_inline_and_read_back_alike(allocator):
    values = [np.arange(6.0).reshape(2, 3), np.asfortranarray(np.arange(6).reshape(2, 3)),
              np.zeros(0), np.array(7), np.float64(2.5), np.int8(-3), np.bool_(True),
              np.array(["2020-01-01"], dtype="datetime64[ns]")]
    for obj in values:
        s = serialize_value(obj, allocator, "w")
        assert s.where == "inline" and s.owner == "w"
        assert s.nbytes == len(s.header) + sum(len(b) for b in s.buffers)
        mine, view = deserialize_value(s, copy=True), deserialize_value(s)
        assert type(mine) is type(obj) and np.array_equal(mine, obj)
        if isinstance(obj, np.ndarray):
            assert mine.dtype == obj.dtype and mine.shape == obj.shape
            assert mine.flags.f_contiguous == obj.flags.f_contiguous
            assert mine.flags.writeable  # a private copy
            if obj.size:
                assert not view.flags.writeable  # a task's input: read-only
    x = np.arange(4.0)
    s = serialize_value(x, allocator, "w")
    x[0] = 99  # the value was copied when it was stored
    assert deserialize_value(s)[0] == 0
    assert allocator.segments_created == 0


@pytest.mark.parametrize("value, immediate", [
    (None, True), (True, True), (7, True), (2.5, True), (1j, True), ("short", True),
    (b"short", True), (np.float64(1.5), True), (np.int32(3), True), (np.bool_(True), True),
    ("x" * 257, False), (b"x" * 257, False), ("<huge int>", False), ((1, 2), False),
    ([1], False), ({"a": 1}, False), (np.ones(2), False), (np.datetime64("2020-01-01"), False),
])
def test_only_small_immutable_values_are_immediate(value, immediate):
    if isinstance(value, str) and value == "<huge int>":  # (pytest would print its digits)
        value = 10 ** 20000
    assert is_immediate(value) is immediate
    if immediate:  # the data plane reads it as itself
        assert deserialize_value(value) is value


@pytest.mark.parametrize("make", [
    lambda: np.ones(1), lambda: np.arange(6, dtype="i4").reshape(2, 3),
    lambda: np.asfortranarray(np.arange(6.0).reshape(2, 3)), lambda: np.zeros((0, 3)),
    lambda: np.array([True, False]), lambda: np.array([1 + 2j]), lambda: np.float16([1.5]),
    lambda: np.ones(2, dtype=">f8"), lambda: np.array(["ab"]),
    lambda: np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
])
def test_small_arrays_come_back_equal_read_only_or_as_private_copies(make):
    a = make()
    stored = serialize_value(a, None, "w")
    view, copy = deserialize_value(stored), deserialize_value(stored, copy=True)
    for b in (view, copy):
        assert b.dtype == a.dtype and b.shape == a.shape and (b == a).all()
        assert b.flags.f_contiguous == a.flags.f_contiguous
    assert not view.flags.writeable and copy.flags.writeable
    a[...] = 0  # the Stored holds its own bytes
    assert (deserialize_value(stored) == make()).all()


def test_an_array_whose_dtype_came_through_a_pickle_takes_the_small_array_path():
    dtype = pickle.loads(pickle.dumps(np.dtype("float64")))  # equal, but not numpy's own
    stored = serialize_value(np.full(2, 1.5, dtype=dtype), None, "w")
    assert b"_small_array" in stored.header
    assert (deserialize_value(stored) == 1.5).all()


def test_small_arrays_of_one_kind_share_one_header():
    one, two = (serialize_value(np.full(3, v), None, "w") for v in (1.0, 2.0))
    assert one.header is two.header
    assert serialize_value(np.ones(4), None, "w").header != one.header
