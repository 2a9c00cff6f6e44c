"""Chunk specs in bytes ('64 MB', '100 MiB') and 'auto' with ``array.chunk-size``,
checked against dask.array where it is installed."""

from __future__ import annotations

import numpy as np
import pytest

import shmdask
import shmdask.array as da
from shmdask.array.chunks import normalize_chunks

SPECS = [
    ((10_000, 1000, 10), ("64 MB", None, None)),
    ((10_000, 1000, 10), "100 MiB"),
    ((10_000, 1000, 10), "auto"),
    ((100_000, 100_000), "auto"),
    ((10_000, 1000, 10), ("auto", 100, "auto")),
    ((10_000, 1000, 10), ("10MB", 100, "auto")),
    ((100,), "1kB"),
    ((10_000, 1000), {0: "8MB"}),
]


@pytest.mark.parametrize(("shape", "chunks"), SPECS)
def test_byte_sizes_give_blocks_of_about_that_size(shape, chunks):
    x = da.ones(shape, chunks=chunks)
    assert x.shape == shape
    block_bytes = np.prod(x.chunksize) * 8
    limit = 128 * 2**20
    for c in (chunks if isinstance(chunks, tuple) else (chunks,)):
        if isinstance(c, str) and c != "auto":
            limit = shmdask.units.parse_bytes(c)
    assert block_bytes <= limit


@pytest.mark.parametrize(("shape", "chunks"), SPECS)
def test_same_chunks_as_dask(shape, chunks):
    dask_array = pytest.importorskip("dask.array")
    assert normalize_chunks(chunks, shape, dtype="f8") == dask_array.core.normalize_chunks(
        chunks, shape, dtype=np.dtype("f8"))


def test_auto_follows_the_array_chunk_size_setting():
    with shmdask.config.set({"array.chunk-size": "1MiB"}):
        assert da.ones((100_000, 100_000), chunks="auto").chunksize == (362, 362)
        assert da.random.random((1 << 20,), chunks="auto").chunksize == (131072,)
    assert da.ones((100_000, 100_000), chunks="auto").chunksize == (4096, 4096)


def test_values_are_right_with_byte_chunks():
    x = da.arange(1000, chunks="800 B")
    assert x.chunks[0][:2] == (100, 100)
    assert x.sum().compute(scheduler="sync") == sum(range(1000))


def test_bad_byte_sizes_name_the_problem():
    with pytest.raises(ValueError, match=r"chunks\[0\]='lots' not understood: neither"):
        da.ones((10, 10), chunks="lots")
    with pytest.raises(ValueError, match="different block sizes"):
        da.ones((1000, 100, 10), chunks=("10MB", 100, "5MB"))
    with pytest.raises(ValueError, match=r"chunks\[1\]='1x'"):
        da.ones((10, 10), chunks=(5, "1x"))
