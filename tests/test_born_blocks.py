"""Arrays born in shared memory (result_buffers.empty + cluster.born_blocks)."""

import gc

import numpy as np
import pytest

import shmdask
import shmdask.array as da
from shmdask import result_buffers
from shmdask.cluster import shm
from shmdask.cluster.born_blocks import BornBlocks
from shmdask.cluster.protocol import deserialize_value, serialize_value
from shmdask.distributed import Client, LocalCluster

THRESHOLD = 16 * 1024


@pytest.fixture
def born():
    alloc = shm.SlabAllocator(shm.new_cluster_id(), "w")
    blocks = BornBlocks(alloc, THRESHOLD)
    result_buffers.install(blocks.make)
    try:
        yield blocks
    finally:
        result_buffers.install(None)
        gc.collect()
        alloc.close()


def test_outside_a_worker_empty_is_numpys():
    a = result_buffers.empty((3, 4), np.float32)
    assert type(a) is np.ndarray and a.shape == (3, 4) and a.dtype == np.float32
    assert a.flags.writeable and a.flags.c_contiguous


def test_a_result_made_in_a_block_is_kept_there_without_a_copy(born):
    a = result_buffers.empty((300, 300))
    a[:] = 3.0
    address = a.__array_interface__["data"][0]
    stored = serialize_value(a, born.allocator, "w", THRESHOLD, born.claim)
    (block,) = stored.blocks
    slab_view = born.allocator.readonly_view(*block)
    assert np.frombuffer(slab_view, np.uint8).__array_interface__["data"][0] == address
    assert born.claimed == 1 and born.outstanding == 0
    del a
    gc.collect()  # the claimed block is the store's now: the array's death frees nothing
    mappings = shm.MappingCache(born.allocator)
    try:
        assert float(deserialize_value(stored, mappings).sum()) == 3.0 * 300 * 300
    finally:
        mappings.close()
    born.allocator.free(stored.blocks)


def test_an_unclaimed_block_is_freed_when_its_array_dies_and_not_before(born):
    free_before = born.allocator.free_bytes
    a = result_buffers.empty((100, 100))
    half = a[:50]  # a view keeps the block
    del a
    gc.collect()
    assert born.outstanding == 1
    other = serialize_value(half, born.allocator, "w", THRESHOLD, born.claim)
    assert born.claimed == 0  # a part of a block is copied, not claimed
    born.allocator.free(other.blocks)
    del half
    gc.collect()
    assert born.outstanding == 0 and born.allocator.free_bytes >= free_before


def test_small_and_object_arrays_are_numpys(born):
    assert type(result_buffers.empty((10,))) is np.ndarray and born.outstanding == 0
    assert result_buffers.empty((10_000,), object).dtype == object and born.outstanding == 0


def test_random_blocks_are_drawn_in_place_on_a_cluster_with_the_same_values():
    x = da.random.default_rng(42).random((2000, 2000), chunks=1000)
    expected = x.compute(scheduler="threads")
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, \
            Client(cluster, set_as_default=False) as client:
        got = shmdask.compute(x, scheduler=client)[0]
        born = sum(h.stats()["results_born"] for h in cluster.workers.values())
    np.testing.assert_array_equal(got, expected)
    assert born == 4
