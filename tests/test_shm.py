"""Shared-memory segments, the slab allocator, the mapping cache and the janitor."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from shmdask.cluster import shm
from shmdask.cluster.local_cluster import JANITOR

WORKTREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


LEAKED: list[str] = []  # segments a test left behind (swept, then reported)


@pytest.fixture(autouse=True, scope="module")
def no_segments_left_behind():
    # (conftest checks /dev/shm for this process's clusters after every module;
    # segments under the per-test ids below are swept after each test, so
    # they are counted here instead)
    yield
    assert LEAKED == []


@pytest.fixture
def cluster_id():
    cid = shm.new_cluster_id()
    yield cid
    LEAKED.extend(shm.sweep(shm.cluster_prefix(cid)))


def test_size_class_bounds_slack():
    sizes = [1, 4095, 4096, 4097, 10_000, 65_536, 65_537, 1 << 20, 40_000_000, 123_456_789]
    for n in sizes:
        c = shm.size_class(n)
        assert c >= n
        assert c % shm.PAGE == 0
        if n > shm.PAGE:
            assert c <= 1.25 * n + shm.PAGE
    # equal chunks share a class; a class is monotone in the size
    assert shm.size_class(40_000_000) == shm.size_class(39_999_999)
    cs = [shm.size_class(n) for n in range(1, 300_000, 997)]
    assert cs == sorted(cs)


def test_create_attach_unlink(cluster_id):
    name = shm.segment_name(cluster_id, "t", 0)
    m = shm.create_segment(name, 10_000)
    m[:5] = b"hello"
    r = shm.attach_segment(name)
    assert r[:5] == b"hello"
    with pytest.raises(TypeError):
        r[:1] = b"x"  # readers cannot write
    assert name in shm.list_segments(shm.cluster_prefix(cluster_id))
    assert shm.unlink_segment(name)
    assert not shm.unlink_segment(name)
    assert r[:5] == b"hello"  # mappings outlive the name
    r.close()
    m.close()
    with pytest.raises(ValueError, match="positive"):
        shm.create_segment(name, 0)


def test_attach_in_other_process_does_not_unlink_or_warn(cluster_id):
    # multiprocessing.shared_memory would register the attach with the resource
    # tracker, which unlinks the segment (and warns) when the reader exits.
    name = shm.segment_name(cluster_id, "t", 1)
    m = shm.create_segment(name, 4096)
    m[:3] = b"abc"
    code = (
        "from shmdask.cluster import shm\n"
        f"m = shm.attach_segment({name!r})\n"
        "assert m[:3] == b'abc'\n"
        "m.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": WORKTREE}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "resource_tracker" not in out.stderr
    assert name in shm.list_segments(name)
    m.close()
    shm.unlink_segment(name)


def test_allocator_reuses_freed_blocks(cluster_id):
    alloc = shm.SlabAllocator(cluster_id, "w")
    ref, view = alloc.alloc(40_000_000)
    view[:4] = b"abcd"
    del view
    assert alloc.segments_created == 1
    alloc.free([ref])
    for _ in range(5):
        ref2, view = alloc.alloc(40_000_000)
        del view
        assert ref2[:2] == ref[:2]  # same segment, same offset: pages already there
        alloc.free([ref2])
    assert alloc.segments_created == 1
    alloc.close()
    assert shm.list_segments(shm.cluster_prefix(cluster_id)) == []


def test_small_blocks_share_a_slab(cluster_id):
    alloc = shm.SlabAllocator(cluster_id, "w")
    refs = []
    for _ in range(10):
        ref, view = alloc.alloc(50_000)
        view[:] = b"x" * 50_000
        del view
        refs.append(ref)
    assert alloc.segments_created == 1
    assert len({(r[0], r[1]) for r in refs}) == 10  # distinct blocks
    assert len({r[0] for r in refs}) == 1
    alloc.close()


def test_cache_budget_unlinks_whole_free_slabs(cluster_id):
    alloc = shm.SlabAllocator(cluster_id, "w", cache_bytes=10 << 20)
    refs = [alloc.alloc(8 << 20)[0] for _ in range(4)]
    assert alloc.segments_created == 4
    unlinked = alloc.free(refs)
    # 32 MiB freed, 10 MiB may stay cached: at least two slabs go
    assert len(unlinked) >= 2
    assert alloc.free_bytes <= 10 << 20
    assert sorted(alloc.take_unlinked()) == sorted(unlinked)
    assert alloc.take_unlinked() == []
    remaining = shm.list_segments(shm.cluster_prefix(cluster_id))
    assert not set(unlinked) & set(remaining)
    alloc.close()


def test_mapping_cache_maps_each_segment_once(cluster_id):
    alloc = shm.SlabAllocator(cluster_id, "w")
    refs = []
    for i in range(3):
        ref, view = alloc.alloc(100_000)
        view[:] = bytes([i]) * 100_000
        del view
        refs.append(ref)
    reader = shm.MappingCache()
    arrays = [np.frombuffer(reader.view(*r), dtype=np.uint8) for r in refs]
    assert reader.attached == 1
    assert [int(a[0]) for a in arrays] == [0, 1, 2]
    assert not arrays[0].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        arrays[0][0] = 9
    # The owner reads its own blocks through its own mapping.
    own = shm.MappingCache(alloc)
    assert own.view(*refs[1])[0] == 1
    assert own.attached == 0
    # forget keeps a mapping that is still viewed, and closes it once unused
    reader.forget([refs[0][0]])
    assert refs[0][0] not in reader
    assert int(arrays[2][5]) == 2
    del arrays
    reader.forget([])
    reader.close()
    alloc.close()


def test_sweep_leaves_others(cluster_id):
    a = shm.create_segment(shm.segment_name(cluster_id, "w1", 0), 4096)
    b = shm.create_segment(shm.segment_name(cluster_id, "w11", 0), 4096)
    c = shm.create_segment(shm.segment_name(cluster_id, "w1", 1), 4096)
    keep = shm.segment_name(cluster_id, "w1", 1)
    removed = shm.sweep(shm.cluster_prefix(cluster_id, "w1"), keep=[keep])
    assert removed == [shm.segment_name(cluster_id, "w1", 0)]
    left = sorted(shm.list_segments(shm.cluster_prefix(cluster_id)))
    assert left == sorted([keep, shm.segment_name(cluster_id, "w11", 0)])
    assert sorted(shm.sweep(shm.cluster_prefix(cluster_id))) == left
    for m in (a, b, c):
        m.close()


def wait_until_ignoring_sigint(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as f:
            ignored = next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn"))
        if ignored & (1 << 1):  # bit for signal 2
            return
        time.sleep(0.01)
    raise TimeoutError("janitor never ignored SIGINT")


def _start_janitor(cid):
    return subprocess.Popen([sys.executable, "-I", "-S", JANITOR, cid], stdin=subprocess.PIPE)


def test_janitor_sweeps_when_its_parent_vanishes(cluster_id):
    janitor = _start_janitor(cluster_id)
    maps = [shm.create_segment(shm.segment_name(cluster_id, "w", i), 8192) for i in range(3)]
    assert len(shm.list_segments(shm.cluster_prefix(cluster_id))) == 3
    # SIGINT (Ctrl-C to the process group) must not kill it
    wait_until_ignoring_sigint(janitor.pid)
    janitor.send_signal(2)
    time.sleep(0.2)
    assert janitor.poll() is None
    janitor.stdin.close()  # what the kernel does when the client dies
    assert janitor.wait(timeout=10) == 0
    assert shm.list_segments(shm.cluster_prefix(cluster_id)) == []
    for m in maps:
        m.close()


def test_janitor_rejects_bad_arguments():
    out = subprocess.run([sys.executable, "-I", "-S", JANITOR, "../etc"], capture_output=True,
                         stdin=subprocess.DEVNULL, timeout=30)
    assert out.returncode == 2
    assert b"usage" in out.stderr


def test_a_block_freed_twice_is_handed_out_once(cluster_id):
    alloc = shm.SlabAllocator(cluster_id, "w")
    ref, _ = alloc.alloc(100_000)
    alloc.free([ref])
    alloc.free([ref])  # a confused caller must not make two owners of one block
    a, _ = alloc.alloc(100_000)
    b, _ = alloc.alloc(100_000)
    assert a[:2] != b[:2]
    alloc.close()
