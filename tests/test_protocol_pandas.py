"""pandas objects in the data plane: their columns travel through shared memory
and are read in place, as numpy chunks are."""

from __future__ import annotations

import sys

import cloudpickle
import numpy as np
import pytest
from conftest import mapped_file

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")

import shmdask  # noqa: E402
from shmdask.cluster import shm  # noqa: E402
from shmdask.cluster.protocol import deserialize_value, serialize_value  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests

N = 50_000


def frames() -> dict:
    rng = np.random.default_rng(0)
    ints = np.arange(N)
    return {
        "numpy columns": pd.DataFrame({"i": ints, "f": rng.random(N), "b": ints % 2 == 0}),
        "series": pd.Series(rng.random(N), name="s"),
        "index": pd.Index(ints * 3, name="ix"),
        "datetimes": pd.DataFrame({"t": pd.date_range("2024", periods=N, freq="s"),
                                   "tz": pd.date_range("2024", periods=N, freq="s", tz="UTC"),
                                   "d": pd.to_timedelta(ints, "ms")}),
        "arrow columns": pd.DataFrame({
            "i": pd.array(ints, dtype="int64[pyarrow]"),
            "s": pd.array([f"name-{i % 1000}" for i in range(N)], dtype="string[pyarrow]"),
        }),
        "nullable and categorical": pd.DataFrame({
            "n": pd.array(ints, dtype="Int64"),
            "c": pd.Categorical(ints % 7),
        }),
        "indexed": pd.DataFrame({"v": rng.random(N)},
                                index=pd.MultiIndex.from_arrays([ints % 5, ints])),
    }


def data_pointers(obj) -> list[tuple[str, int, int]]:
    """(what, address, bytes) of every large memory block holding obj's values."""
    if isinstance(obj, pd.Index) and not isinstance(obj, pd.MultiIndex):
        return _array_pointers("index", obj.array)
    if isinstance(obj, pd.Series):
        return _array_pointers(str(obj.name), obj.array)
    out = []
    for name in obj.columns:
        out += _array_pointers(str(name), obj[name].array)
    return out


def _array_pointers(what: str, arr) -> list:
    if isinstance(arr, pd.arrays.ArrowExtensionArray | pd.arrays.ArrowStringArray):
        chunked = arr._pa_array
        return [(what, b.address, b.size) for c in chunked.chunks for b in c.buffers()
                if b is not None and b.size >= 16 * 1024]
    if isinstance(arr, pd.Categorical):
        codes = arr.codes
        return [(what, codes.__array_interface__["data"][0], codes.nbytes)]
    for attr in ("_ndarray", "_data"):
        inner = getattr(arr, attr, None)
        if isinstance(inner, np.ndarray):
            return [(what, inner.__array_interface__["data"][0], inner.nbytes)]
    raise AssertionError(f"unknown array type {type(arr)}")


@pytest.fixture
def allocator():
    alloc = shm.SlabAllocator(shm.new_cluster_id(), "w")
    yield alloc
    alloc.close()


@pytest.mark.parametrize("name", list(frames()))
def test_pandas_values_go_to_shm_and_read_back_in_place(name, allocator):
    obj = frames()[name]
    stored = serialize_value(obj, allocator, "w")
    assert stored.where == "shm"
    assert len(stored.header) < 10_000  # the values are not in the pickle
    reader = shm.MappingCache()
    back = deserialize_value(stored, reader)
    if isinstance(obj, pd.Index):
        pd.testing.assert_index_equal(back, obj)
    elif isinstance(obj, pd.Series):
        pd.testing.assert_series_equal(back, obj)
    else:
        pd.testing.assert_frame_equal(back, obj)
    # every large block of the result lies inside a mapped segment
    def start_of(segment: str) -> int:
        view = np.frombuffer(reader.view(segment, 0, 1), dtype=np.uint8)
        return view.__array_interface__["data"][0]

    spans = [(start_of(seg) + off, start_of(seg) + off + length)
             for seg, off, length in stored.blocks]
    pointers = data_pointers(back)
    assert pointers
    for what, addr, nbytes in pointers:
        assert any(lo <= addr and addr + nbytes <= hi for lo, hi in spans), what
    # what the user gets is private and writeable
    copy = deserialize_value(stored, reader, copy=True)
    if isinstance(copy, pd.DataFrame) and "f" in copy:
        copy.loc[0, "f"] = -1.0
        assert back["f"].iloc[0] != -1.0
    del back, copy
    reader.close()


def make_partition(kind: str, i: int):
    obj = frames()[kind]
    return obj + i if kind == "numpy columns" else obj


def where_columns_live(part) -> dict:
    """On the reading worker: the file mapped at each column's data."""
    return {what: mapped_file(addr) for what, addr, _ in data_pointers(part)}


@pytest.mark.parametrize("kind", ["numpy columns", "arrow columns", "datetimes"])
def test_a_worker_reads_another_workers_partition_in_place(kind, process_client):
    dsk = {("part", i): (make_partition, kind, i) for i in range(4)}
    dsk.update({("where", i): (where_columns_live, ("part", i)) for i in range(4)})
    out = shmdask.get(dsk, [("where", i) for i in range(4)], scheduler=process_client,
                      optimize_graph=False)  # not fused: the partition is stored, then read
    for where in out:
        assert where and all(path and path.startswith("/dev/shm/shmdask-")
                             for path in where.values()), where
    # and a partition comes back to the user whole and writeable
    back = shmdask.get(dsk, ("part", 1), scheduler=process_client)
    pd.testing.assert_frame_equal(back, make_partition(kind, 1))
