"""address.py, auth.py and comm.py alone: addresses, key files, the HMAC handshake, frames and
values on a socketpair."""

import os
import pickle
import socket
import stat
import threading
import time

import numpy as np
import pytest

from shmdask.cluster import address, auth, comm
from shmdask.cluster.address import parse_address
from shmdask.cluster.auth import client_handshake, server_handshake
from shmdask.cluster.comm import (
    AuthenticationError,
    ClockOffset,
    Comm,
    CommClosedError,
    ProtocolError,
    dumps_values,
    loads_values,
    recv_message,
)
from shmdask.cluster.protocol import FRAME_COUNT, Stored, deserialize_value, serialize_value


def test_parse_address():
    assert parse_address("tcp://127.0.0.1:8786") == ("tcp", "127.0.0.1", 8786)
    assert parse_address("127.0.0.1:9000") == ("tcp", "127.0.0.1", 9000)
    assert parse_address("localhost") == ("tcp", "localhost", 8786)
    assert parse_address("tls://[::1]:1234") == ("tls", "::1", 1234)
    assert address.format_address("tcp", "::1", 5) == "tcp://[::1]:5"
    with pytest.raises(ValueError, match="unknown scheme"):
        parse_address("http://127.0.0.1:80")
    with pytest.raises(ValueError, match="out of range"):
        parse_address("127.0.0.1:99999")
    with pytest.raises(TypeError):
        parse_address(8786)


def test_key_file_is_private_and_found_by_address(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("SHMDASK_AUTH_KEY", raising=False)
    key = auth.new_key()
    path = auth.write_key_file("127.0.0.1", 4321, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert auth.find_key("127.0.0.1", 4321) == key
    assert auth.find_key("localhost", 4321) == key  # loopback aliases
    assert auth.find_key("127.0.0.1", 4322) is None
    monkeypatch.setenv("SHMDASK_AUTH_KEY", "from-env")
    assert auth.find_key("127.0.0.1", 4321) == b"from-env"
    with pytest.raises(ValueError, match="empty"):
        auth.as_key("")


def _handshake_pair(server_key: bytes, client_key: bytes):
    a, b = socket.socketpair()
    errors = {}

    def serve():
        try:
            server_handshake(a, server_key, timeout=5)
        except Exception as exc:
            errors["server"] = exc

    t = threading.Thread(target=serve)
    t.start()
    try:
        client_handshake(b, client_key, timeout=5)
    except Exception as exc:
        errors["client"] = exc
    t.join()
    return a, b, errors


def test_handshake_accepts_the_right_key():
    a, b, errors = _handshake_pair(b"k" * 10, b"k" * 10)
    assert errors == {}
    a.close()
    b.close()


def test_handshake_refuses_a_wrong_key_on_both_sides():
    a, b, errors = _handshake_pair(b"right", b"wrong")
    assert isinstance(errors["server"], AuthenticationError)
    assert isinstance(errors["client"], AuthenticationError)
    assert "authentication failed" in str(errors["client"])
    a.close()
    b.close()


def test_handshake_refuses_garbage_and_http():
    for payload, match in ((b"\x00\xff garbage bytes " * 8, "not speaking"),
                           (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP")):
        a, b = socket.socketpair()
        b.sendall(payload)
        with pytest.raises(ProtocolError, match=match):
            server_handshake(a, b"key", timeout=2)
        a.close()
        if b"HTTP" in payload:
            assert b"400 Bad Request" in b.recv(4096)
        b.close()


def test_handshake_times_out_on_a_silent_peer():
    a, b = socket.socketpair()
    with pytest.raises(ProtocolError, match="timed out"):
        server_handshake(a, b"key", timeout=0.3)
    a.close()
    b.close()


def _comm_pair(max_frame_bytes=comm.MAX_FRAME_BYTES):
    a, b = socket.socketpair()
    return Comm(a, "a", max_frame_bytes), Comm(b, "b", max_frame_bytes)


def test_frames_round_trip_with_large_buffers():
    left, right = _comm_pair()
    big = np.arange(3_000_000, dtype=np.float64)  # 24 MB: more than any socket buffer
    frames = [pickle.dumps(("hello",)), b"small", memoryview(big)]
    t = threading.Thread(target=left.send, args=(frames,))
    t.start()
    header, body, refs = recv_message(right)
    t.join()
    assert header == ("hello",)
    assert bytes(body[0]) == b"small"
    assert np.array_equal(np.frombuffer(body[1], dtype=np.float64), big)
    assert refs == {}
    assert left.bytes_sent == right.bytes_received
    left.close()
    right.close()


def test_data_frames_land_where_alloc_says():
    left, right = _comm_pair()
    arr = np.arange(100_000, dtype=np.int64)
    stored = serialize_value(arr)  # inline buffers
    frames, data = dumps_values(("results",), [("done", "x", stored)])
    assert data  # the array's buffer is flagged as data
    t = threading.Thread(target=left.send, args=(frames, data))
    t.start()
    blocks = {}

    def alloc(n):
        buf = bytearray(n)
        ref = ("segment", len(blocks), n)
        blocks[ref] = buf
        return ref, memoryview(buf)

    header, body, refs = recv_message(right, alloc)
    t.join()
    assert header == ("results",)
    (entry,), unclaimed = loads_values(body, refs, owner="remote-0")
    assert unclaimed == []
    value = entry[2]
    assert isinstance(value, Stored) and value.blocks and value.owner == "client"
    (ref,) = value.blocks

    class Mappings:
        def view(self, *block):
            return memoryview(blocks[tuple(block)])

    assert np.array_equal(deserialize_value(value, Mappings()), arr)
    left.close()
    right.close()


def test_a_frame_larger_than_the_maximum_is_refused_before_allocation():
    left, right = _comm_pair(max_frame_bytes=1 << 20)
    left.sock.sendall(FRAME_COUNT.pack(1) + (1 << 40).to_bytes(8, "big"))
    with pytest.raises(ProtocolError, match="announced a frame of 1099511627776 bytes"):
        right.recv()
    left.close()
    right.close()


def test_a_buffer_larger_than_a_frame_travels_in_pieces():
    left, right = _comm_pair(max_frame_bytes=1 << 20)
    big = np.arange(700_000, dtype=np.int64)  # 5.6 MB: six frames of at most 1 MiB
    frames, data = dumps_values(("results",), [("done", "x", serialize_value(big))])
    t = threading.Thread(target=left.send, args=(frames, data))
    t.start()
    sizes = []

    def alloc(n):
        sizes.append(n)
        return ("segment", 0, n), memoryview(bytearray(n))

    header, body, refs = recv_message(right, alloc)
    t.join()
    assert header == ("results",)
    assert sizes == [big.nbytes]  # one buffer, reassembled, moved in once whole
    (entry,), unclaimed = loads_values(body, refs, owner="remote-0")
    assert unclaimed == [] and entry[2].blocks == [("segment", 0, big.nbytes)]
    assert np.array_equal(np.frombuffer(body[1], dtype=np.int64), big)
    assert left.bytes_sent == right.bytes_received
    # A message of many buffers, each split, in both directions of one pair.
    t = threading.Thread(target=right.send, args=([b"h", b"x" * 3_000_001, b"", b"y" * 5],))
    t.start()
    got, _ = left.recv()
    t.join()
    assert [bytes(f) for f in got] == [b"h", b"x" * 3_000_001, b"", b"y" * 5]
    left.close()
    right.close()


def test_a_continuation_must_end_and_agree():
    for lengths in ([5 | comm.MORE_FLAG], [5 | comm.MORE_FLAG | comm.DATA_FLAG, 5]):
        left, right = _comm_pair()
        table = b"".join(n.to_bytes(8, "big") for n in lengths)
        left.sock.sendall(FRAME_COUNT.pack(len(lengths)) + table + b"z" * 10)
        with pytest.raises(ProtocolError, match="continuation|disagree"):
            right.recv()
        left.close()
        right.close()


def test_an_announced_buffer_reserves_nothing_until_it_arrives():
    """A peer announces a 2 GiB data frame, sends a megabyte and stalls: no block
    is asked for and the reader's memory does not grow by the announced size."""
    import psutil

    left, right = _comm_pair()
    announced = 2 << 30
    asked = []

    def alloc(n):
        asked.append(n)
        return ("segment", 0, n), memoryview(bytearray(n))

    rss = psutil.Process().memory_info().rss
    errors = []

    def read():
        try:
            right.recv(alloc, lambda refs: None)
        except Exception as exc:
            errors.append(exc)

    t = threading.Thread(target=read)
    t.start()
    left.sock.sendall(FRAME_COUNT.pack(1) + (announced | comm.DATA_FLAG).to_bytes(8, "big")
                      + b"d" * (1 << 20))
    t.join(1.0)  # the reader is now blocked, waiting for the rest
    assert t.is_alive()
    grown = psutil.Process().memory_info().rss - rss
    assert asked == [] and grown < (256 << 20)
    left.close()  # the peer goes away: the read ends, nothing was reserved
    t.join(10)
    assert isinstance(errors[0], CommClosedError) and asked == []
    right.close()


def test_truncated_frame_and_silence():
    left, right = _comm_pair()
    left.sock.sendall(FRAME_COUNT.pack(1) + (100).to_bytes(8, "big") + b"x" * 50)
    left.sock.close()
    with pytest.raises(CommClosedError, match="middle of a frame"):
        right.recv()
    right.close()
    left, right = _comm_pair()
    right.settimeout(0.2)
    with pytest.raises(CommClosedError, match="silent"):
        right.recv()
    left.close()
    right.close()


def test_failed_read_gives_allocated_blocks_back():
    left, right = _comm_pair()
    n = 1 << 16
    left.sock.sendall(FRAME_COUNT.pack(2) + (5).to_bytes(8, "big")
                      + (n | comm.DATA_FLAG).to_bytes(8, "big") + b"hello" + b"y" * 10)
    left.sock.close()
    freed = []
    with pytest.raises(CommClosedError, match="middle of"):
        right.recv(lambda k: (("seg", 0, k), memoryview(bytearray(k))), freed.extend)
    assert freed == [("seg", 0, n)]
    right.close()


def test_clock_offset_prefers_short_round_trips():
    c = ClockOffset()
    c.add(100.0, 105.5, 101.0)  # rtt 1.0, offset 5.0
    c.add(200.0, 205.0, 200.002)  # rtt 0.002, offset ~4.999
    assert abs(c.offset - 4.999) < 1e-6
    assert abs(c.to_local(1005.0) - 1000.001) < 1e-6


def test_on_done_runs_when_a_message_is_sent_and_when_it_is_dropped():
    left, right = _comm_pair()
    sent = threading.Event()
    left.post([pickle.dumps(("one",))], on_done=sent.set)
    assert recv_message(right)[0] == ("one",)
    assert sent.wait(10)
    # A message the peer never reads blocks the sender; what is queued behind
    # it, and the blocked one, are dropped with the connection, and say so.
    big = np.zeros(4_000_000)  # 32 MB: more than the socket buffers hold
    dropped = [threading.Event(), threading.Event()]
    left.post([pickle.dumps(("big",)), memoryview(big)], frozenset({1}),
              on_done=dropped[0].set)
    left.post([pickle.dumps(("queued",))], on_done=dropped[1].set)
    time.sleep(0.2)
    assert not dropped[0].is_set()  # still being sent: its buffers are in use
    left.abort()
    assert all(e.wait(10) for e in dropped)
    late = threading.Event()
    left.post([pickle.dumps(("late",))], on_done=late.set)  # after close: at once
    assert late.is_set()
    right.close()


def test_a_run_on_a_worker_whose_connection_closed_is_answered_at_once():
    from shmdask.cluster.tcp_sessions import RemoteWorkerHandle

    left, right = _comm_pair()
    left.abort()
    right.close()
    handle = RemoteWorkerHandle(None, left, "worker-gone", {})
    ok, error = handle.call_function(print, timeout=5)  # not a TimeoutError
    assert not ok and isinstance(error, ConnectionError) and "worker-gone" in str(error)


# -- TLS: one thread reads while another writes ---------------------------------------


def _tls_comm_pair(certificate, timeout=10.0):
    """Two Comms over TLS on a socketpair, with timeouts (as the listener and
    open_comm set them: the sockets are non-blocking underneath)."""
    cert, key = certificate
    a, b = socket.socketpair()
    for s in (a, b):
        s.settimeout(timeout)
    server = {}
    t = threading.Thread(target=lambda: server.setdefault(
        "sock", auth.server_ssl_context(cert, key).wrap_socket(a, server_side=True)))
    t.start()
    client = auth.client_ssl_context(cert).wrap_socket(b, server_hostname="127.0.0.1")
    t.join(10)
    return Comm(server["sock"], "server"), Comm(client, "client")


def test_tls_reads_and_writes_at_once_do_not_look_like_a_close(certificate):
    # Every connection is read by one thread while others write (pings, pongs,
    # statuses, results).  OpenSSL gives no such guarantee for one SSL object:
    # a write between a read's EAGAIN and its error check once made the read
    # return a fake EOF, and a busy client "lost the connection" to a live
    # scheduler.  Both ends here read and write small messages at once, which
    # lost the connection within a few hundred messages before the fix.
    left, right = _tls_comm_pair(certificate, timeout=5.0)
    n = 2000
    errors: list = []
    got = {"left": 0, "right": 0}

    def write(c):
        try:
            for i in range(n):
                c.send(comm.header_frames(("ping", i, b"x" * 40)))
                time.sleep(0.0002)  # the reader catches up and waits for more
        except Exception as exc:
            errors.append(exc)

    def read(c, name):
        try:
            for i in range(n):
                header, _, _ = recv_message(c)
                assert header[:2] == ("ping", i)
                got[name] += 1
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f, args=a) for f, a in
               [(write, (left,)), (write, (right,)), (read, (left, "left")),
                (read, (right, "right"))]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    left.close()
    right.close()
    assert errors == [] and got == {"left": n, "right": n}


def test_tls_silence_times_out_and_abort_wakes_the_reader(certificate):
    left, right = _tls_comm_pair(certificate)
    right.settimeout(0.2)  # the socket is non-blocking: the Comm keeps the timeout
    with pytest.raises(CommClosedError, match="silent"):
        right.recv()
    right.settimeout(10)
    errors = []

    def read():
        try:
            right.recv()
        except Exception as exc:
            errors.append(exc)

    t = threading.Thread(target=read)
    t.start()
    time.sleep(0.2)
    right.abort()  # from another thread, as a listener closing does
    t.join(5)
    assert not t.is_alive() and isinstance(errors[0], CommClosedError)
    with pytest.raises(CommClosedError, match="closed the connection"):  # the peer hears it
        left.recv()
    left.close()
