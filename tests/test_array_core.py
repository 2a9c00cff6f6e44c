"""shmdask.array: chunk specs, metadata, repr, protocols, fusion, random, I/O helpers."""

from __future__ import annotations

import importlib.util

import cloudpickle
import numpy as np
import pytest

import shmdask
import shmdask.array as da
from shmdask.graph import execute_task, key_split, toposort


@pytest.fixture
def scheduler(any_scheduler):
    return any_scheduler

# --------------------------------------------------------------------------- chunk specs

@pytest.mark.parametrize("spec, shape, expected", [
    (3, (7,), ((3, 3, 1),)),
    ((2, 5), (4, 10), ((2, 2), (5, 5))),
    (((1, 3), (4, 6)), (4, 10), ((1, 3), (4, 6))),
    ({0: 2}, (4, 10), ((2, 2), (10,))),
    ({1: -1, 0: None}, (4, 10), ((4,), (10,))),
    (-1, (4, 10), ((4,), (10,))),
    (None, (4, 10), ((4,), (10,))),
    ((None, 3), (4, 7), ((4,), (3, 3, 1))),
    ((0,), (0,), ((0,),)),
])
def test_chunk_specs(spec, shape, expected):
    assert da.ones(shape, chunks=spec).chunks == expected


def test_auto_chunks_are_about_128_mib():
    x = da.ones((20_000, 20_000), chunks="auto")
    nbytes = np.prod(x.chunksize) * 8
    assert 32 * 2**20 <= nbytes <= 128 * 2**20
    assert sum(x.chunks[0]) == 20_000
    small = da.ones((100, 100), chunks="auto")
    assert small.chunks == ((100,), (100,))
    mixed = da.ones((10, 50_000_000), chunks=(5, "auto"))
    assert mixed.chunks[0] == (5, 5)
    assert mixed.chunksize[1] * 5 * 8 <= 128 * 2**20


@pytest.mark.parametrize("spec, message", [
    (((2, 2),), "1 axes"),
    (((1, 1), (4, 6)), "sum to 2"),
    ((2, 2, 2), "3 axes"),
    (0, "positive"),
    ("big", "not understood"),
    ({5: 2}, "outside"),
    (((2, -1), (10,)), "negative"),
])
def test_bad_chunk_specs_raise_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        da.ones((3, 10), chunks=spec)


# --------------------------------------------------------------------------- metadata & repr

def test_metadata():
    x = da.ones((10, 20), chunks=(3, 7), dtype="f4")
    assert x.shape == (10, 20)
    assert x.chunks == ((3, 3, 3, 1), (7, 7, 6))
    assert x.chunksize == (3, 7)
    assert x.numblocks == (4, 3)
    assert x.npartitions == 12
    assert x.dtype == np.float32
    assert x.ndim == 2
    assert x.size == 200
    assert x.nbytes == 800
    assert x.name.startswith("ones-")
    assert len(x) == 10


def test_repr_is_one_line_with_shape_dtype_chunksize():
    x = da.random.random((10000, 20000, 10), chunks=(1000, 1000, 5))
    text = repr(x)
    assert "\n" not in text
    assert "shape=(10000, 20000, 10)" in text
    assert "dtype=float64" in text
    assert "chunksize=(1000, 1000, 5)" in text
    assert text.startswith("shmdask.array<random_sample")


@pytest.mark.parametrize("shape, chunks", [((100,), 10), ((100, 50), 10), ((40, 30, 20), 10)])
def test_repr_html_has_table_and_svg(shape, chunks):
    x = da.ones(shape, chunks=chunks)
    html = x._repr_html_()
    assert "<table>" in html and "<svg" in html
    assert "Bytes" in html and "Shape" in html and "tasks" in html and "chunks" in html
    assert str(x.dtype) in html
    assert f"{x.npartitions} chunks" in html


def test_repr_html_without_sketch_for_4d_and_big_grids_stay_small():
    assert "<svg" not in da.ones((2, 2, 2, 2), chunks=1)._repr_html_()
    big = da.ones(10_000_000, chunks=1000)._repr_html_()
    assert big.count("<line") < 200


def test_repr_html_task_count_counts_fused_graph():
    x = da.random.random((40, 40), chunks=10)
    y = (x + 1).sum()
    html = y._repr_html_()
    assert f"{len(y.__shmdask_graph__())} tasks" in html


# --------------------------------------------------------------------------- protocol

def test_collection_protocol_and_keys():
    x = da.ones((4, 6), chunks=(2, 3))
    keys = x.__shmdask_keys__()
    assert keys == [[(x.name, 0, 0), (x.name, 0, 1)], [(x.name, 1, 0), (x.name, 1, 1)]]
    assert shmdask.base.is_collection(x)
    (result,) = shmdask.compute(x)
    np.testing.assert_array_equal(result, np.ones((4, 6)))
    assert result.flags.writeable
    s = x.sum()
    assert s.__shmdask_keys__() == [(s.name,)]
    assert shmdask.compute(s)[0] == 24


def test_persist_keeps_values_and_shrinks_graph():
    x = da.random.random((20, 20), chunks=5, )
    y = (x * 2).persist()
    assert isinstance(y, da.Array)
    assert len(y.__shmdask_graph__()) == y.npartitions
    np.testing.assert_allclose(y.compute(), (x * 2).compute())
    np.testing.assert_allclose((y + 1).sum().compute(), (x * 2 + 1).sum().compute())


def test_numpy_asarray_and_scalar_conversions():
    x = da.arange(10, chunks=3)
    np.testing.assert_array_equal(np.asarray(x), np.arange(10))
    assert float(x.sum()) == 45.0
    assert int(x[3]) == 3
    assert bool(x[1] == 1)
    with pytest.raises(ValueError, match="ambiguous"):
        bool(x)


def test_numpy_dispatch_returns_arrays():
    a = np.arange(12.0).reshape(3, 4)
    x = da.from_array(a, chunks=2)
    for result, want in [
        (np.sin(x), np.sin(a)),
        (np.sum(x, axis=0), a.sum(axis=0)),
        (np.concatenate([x, x]), np.concatenate([a, a])),
        (np.mean(x), a.mean()),
        (np.add(x, 1), a + 1),
        (np.transpose(x), a.T),
        (np.where(x > 3, x, -x), np.where(a > 3, a, -a)),
        (np.add.reduce(x), np.add.reduce(a)),
        (x @ x.T, a @ a.T),
        (np.matmul(x, x.T), a @ a.T),
        (np.dot(x, x.T), a @ a.T),
    ]:
        assert isinstance(result, da.Array), result
        np.testing.assert_allclose(result.compute(), want)


def test_unsupported_numpy_functions_name_themselves():
    x = da.ones((4, 4), chunks=2)
    with pytest.raises(NotImplementedError, match="numpy.linalg.svd"):
        np.linalg.svd(x)
    with pytest.raises(NotImplementedError, match="numpy.cov"):
        np.cov(x)
    with pytest.raises(NotImplementedError, match="add.accumulate"):
        np.add.accumulate(x)
    with pytest.raises(NotImplementedError, match="out="):
        np.sin(x, out=np.empty((4, 4)))
    with pytest.raises(NotImplementedError, match="assignment"):
        x[0, 0] = 1
    with pytest.raises(NotImplementedError, match="more than one array"):
        x[[0, 1], [1, 2]]
    with pytest.raises(NotImplementedError, match="ndim > 2"):
        da.ones((2, 2, 2)) @ da.ones((2, 2, 2))
    with pytest.raises(NotImplementedError, match="einsum"):
        da.einsum("ii", x)
    with pytest.raises(NotImplementedError, match="nonzero"):
        x.nonzero()
    assert not hasattr(da, "einsum") and not hasattr(x, "searchsorted")
    with pytest.raises(AttributeError, match="no attribute"):
        _ = da.not_a_numpy_name


def test_every_numpy_ufunc_is_exposed():
    names = [n for n in dir(np) if isinstance(getattr(np, n), np.ufunc)]
    assert len(names) > 80
    for n in names:
        assert hasattr(da, n), n
    x = da.from_array(np.linspace(0.1, 0.9, 10), chunks=3)
    np.testing.assert_allclose(da.arctanh(x).compute(), np.arctanh(np.linspace(0.1, 0.9, 10)))
    assert da.sin(0.5) == np.sin(0.5)  # no Array in, no Array out
    frac, whole = da.modf(x * 10)
    np.testing.assert_allclose(frac.compute(), np.modf(np.linspace(1, 9, 10))[0])
    np.testing.assert_allclose(whole.compute(), np.modf(np.linspace(1, 9, 10))[1])


def test_operators_reflected_and_unary():
    a = np.arange(1, 13).reshape(3, 4)
    x = da.from_array(a, chunks=2)  # noqa: F841 (used by the eval below)
    cases = {
        "x + 2": a + 2, "2 + x": 2 + a, "2 - x": 2 - a, "3 * x": 3 * a, "1 / x": 1 / a,
        "7 // x": 7 // a, "7 % x": 7 % a, "2 ** x": 2 ** a, "x ** 2": a ** 2, "-x": -a,
        "+x": +a, "abs(-x)": a, "~x": ~a, "x & 3": a & 3, "3 | x": 3 | a, "x ^ 1": a ^ 1,
        "x << 1": a << 1, "x >> 1": a >> 1, "x < 5": a < 5, "x >= 5": a >= 5,
        "x == 5": a == 5, "x != 5": a != 5, "x + np.arange(4)": a + np.arange(4),
        "np.arange(3)[:, None] * x": np.arange(3)[:, None] * a,
    }
    for expr, want in cases.items():
        got = eval(expr)
        assert isinstance(got, da.Array), expr
        np.testing.assert_array_equal(got.compute(), want, err_msg=expr)


def test_broadcast_against_arrays_with_other_chunks():
    a = np.arange(24.0).reshape(4, 6)
    x = da.from_array(a, chunks=(2, 3))
    y = da.from_array(a, chunks=(3, 2))
    row = da.from_array(np.arange(6.0), chunks=4)
    z = x + y + row
    np.testing.assert_array_equal(z.compute(), a + a + np.arange(6.0))
    with pytest.raises(ValueError, match="broadcast"):
        x + da.ones(5, chunks=2)
    # an Array's length-1 axis broadcasting against a numpy operand's full axis
    np.testing.assert_array_equal((da.ones((1, 5), chunks=1) + np.ones((4, 5))).compute(),
                                  np.full((4, 5), 2.0))
    np.testing.assert_array_equal((np.arange(4.0)[:, None] + da.ones(5, chunks=2)).compute(),
                                  np.arange(4.0)[:, None] + np.ones(5))


# --------------------------------------------------------------------------- fusion

def _groups(dsk):
    return {key_split(k) for k in dsk}


def test_arcsin_arccos_sum_is_one_task_per_chunk_plus_tree():
    x = da.random.random((20, 200, 10), chunks=(10, 10, 5))
    y = da.random.random((20, 200, 10), chunks=(10, 10, 5))
    z = (da.arcsin(x) + da.arccos(y)).sum(axis=(1, 2))
    dsk = z.__shmdask_graph__()
    n_chunks = x.npartitions  # 2 * 20 * 2 = 80
    tree = len(dsk) - n_chunks
    assert tree <= n_chunks // 4
    assert not _groups(dsk) & {"random_sample", "arcsin", "arccos", "add"}
    # one task per chunk holds the whole chain: two draws, two ufuncs, add, chunk sum
    chunk_tasks = [v for k, v in dsk.items() if key_split(k) == "sum-chunk"]
    assert len(chunk_tasks) == n_chunks
    want = (np.arcsin(x.compute()) + np.arccos(y.compute())).sum(axis=(1, 2))
    np.testing.assert_allclose(z.compute(), want)


def test_shared_inputs_are_not_duplicated():
    x = da.random.random((40, 40), chunks=10)
    z = (x + x.T).sum(axis=0)
    dsk = z.__shmdask_graph__()
    random_keys = [k for k in dsk if key_split(k) == "random_sample"]
    assert len(random_keys) == 16  # x is read twice, so it keeps its own tasks
    assert "transpose" not in _groups(dsk) and "add" not in _groups(dsk)
    xv = x.compute()
    np.testing.assert_allclose(z.compute(), (xv + xv.T).sum(axis=0))


def test_random_sum_graph_is_small_and_tree_shaped():
    x = da.random.random(100_000, chunks=100)
    s = x.sum()
    dsk = s.__shmdask_graph__()
    assert len(dsk) == 1000 + 32 + 1  # chunks, one partial level (32 wide), aggregate
    assert len(x.sum(split_every=10).__shmdask_graph__()) == 1000 + 100 + 10 + 1


def test_single_chunk_reduction_is_one_task():
    x = da.random.random(1000, chunks=-1)
    assert len(x.sum().__shmdask_graph__()) == 1
    assert 0 < x.sum().compute() < 1000


def test_graph_pickles_and_runs_after_roundtrip():
    x = da.random.random((30, 30), chunks=7)
    y = (da.sin(x)[::2, 1:] @ x[1::2, 1:].T).mean(axis=0) + x.rechunk(10)[0, :15:2].sum()
    dsk = y.__shmdask_graph__()
    keys = y.__shmdask_keys__()
    restored = cloudpickle.loads(cloudpickle.dumps(dsk))
    got = shmdask.get(restored, keys, scheduler="sync")
    np.testing.assert_allclose(np.concatenate(got), y.compute())


def _readonly_get(dsk, keys):
    """Run a graph with every intermediate result made read-only (like shm views)."""
    data = {}
    for k in toposort(dsk):
        value = execute_task(dsk[k], data)
        if isinstance(value, np.ndarray):
            value = value.view()
            value.flags.writeable = False
        data[k] = value
    return [data[k] for k in keys]


def test_no_task_writes_into_its_inputs():
    a = np.random.default_rng(0).standard_normal((12, 10))
    x = da.from_array(a, chunks=(5, 4))
    exprs = [
        x + 1, (x * 2).sum(axis=0), x.T @ x, x[::-1, [3, 1]], x.reshape(10, 12),
        x.rechunk(3), x.std(axis=1), x.argmax(axis=0), da.concatenate([x, x]),
        da.where(x > 0, x, 0), x.round(1), da.stack([x, x]), x.astype("f4"), x.var(),
        da.broadcast_to(x[0], (3, 10)), x.clip(-0.5, 0.5), da.nanmean(x, axis=1),
    ]
    for e in exprs:
        keys = list(shmdask.graph.flatten(e.__shmdask_keys__()))
        got = _readonly_get(e.__shmdask_graph__(), keys)
        assert len(got) == len(keys)
        np.testing.assert_allclose(e.__shmdask_postcompute__()[0](
            _nest(e.__shmdask_keys__(), dict(zip(keys, got, strict=False))), e.ndim), e.compute())


def _nest(keys, values):
    if isinstance(keys, list):
        return [_nest(k, values) for k in keys]
    return values[keys]


# --------------------------------------------------------------------------- random

@pytest.mark.parametrize("make", [
    lambda: da.random.RandomState(42).random_sample((50, 40), chunks=(10, 15)),
    lambda: da.random.RandomState(42).normal(3, 2, size=(50, 40), chunks=(10, 15)),
    lambda: da.random.RandomState(42).randint(0, 10, size=(50, 40), chunks=(10, 15)),
    lambda: da.random.default_rng(7).standard_normal((50, 40), chunks=(10, 15)),
    lambda: da.random.default_rng(7).uniform(-1, 1, size=(50, 40), chunks=(10, 15)),
])
def test_random_same_seed_same_numbers_on_every_scheduler(make, scheduler):
    a = make().compute(scheduler="sync")
    b = make().compute(scheduler=scheduler)
    np.testing.assert_array_equal(a, b)
    blocks = [a[i:i + 10, j:j + 15] for i in range(0, 50, 10) for j in range(0, 30, 15)]
    assert all(not np.array_equal(blocks[0], b) for b in blocks[1:])


def test_random_distributions_and_ranges():
    rs = da.random.RandomState(0)
    u = rs.uniform(2, 3, size=10_000, chunks=1000).compute()
    assert u.min() >= 2 and u.max() < 3
    n = rs.normal(5, 2, size=100_000, chunks=10_000).compute()
    assert abs(n.mean() - 5) < 0.05 and abs(n.std() - 2) < 0.05
    r = da.random.randint(3, 7, size=1000, chunks=100).compute()
    assert set(np.unique(r)) <= {3, 4, 5, 6} and r.dtype.kind == "i"
    s = da.random.standard_normal((100, 100), chunks=50)
    assert s.dtype == np.float64 and s.shape == (100, 100)
    assert 0 <= da.random.random(10, chunks=5).compute().min() < 1


def test_unseeded_random_is_fixed_once_built_and_differs_between_builds():
    x = da.random.random(100, chunks=10)
    np.testing.assert_array_equal(x.compute(), x.compute(scheduler="sync"))
    assert not np.array_equal(x.compute(), da.random.random(100, chunks=10).compute())
    rs = da.random.RandomState(1)
    assert not np.array_equal(rs.random_sample(10, chunks=5).compute(),
                              rs.random_sample(10, chunks=5).compute())


# --------------------------------------------------------------------------- creation

def test_creation_functions_match_numpy():
    cases = [
        (da.ones((5, 4), chunks=2), np.ones((5, 4))),
        (da.zeros((5, 4), chunks=2, dtype=int), np.zeros((5, 4), dtype=int)),
        (da.full((5, 4), 7.5, chunks=3), np.full((5, 4), 7.5)),
        (da.empty((3, 3), chunks=2), np.zeros((3, 3))),
        (da.arange(17, chunks=5), np.arange(17)),
        (da.arange(2, 30, 3, chunks=4), np.arange(2, 30, 3)),
        (da.arange(0.5, 4.0, 0.25, chunks=4), np.arange(0.5, 4.0, 0.25)),
        (da.linspace(0, 1, 11, chunks=4), np.linspace(0, 1, 11)),
        (da.linspace(-3, 9, 50, endpoint=False, chunks=7), np.linspace(-3, 9, 50,
                                                                       endpoint=False)),
        (da.eye(7, chunks=3), np.eye(7)),
        (da.eye(5, M=8, k=2, chunks=3), np.eye(5, 8, k=2)),
    ]
    for got, want in cases:
        assert got.shape == want.shape and got.dtype == want.dtype, (got, want.dtype)
        np.testing.assert_allclose(got.compute(), want)
    x = da.ones((6, 4), chunks=(2, 3), dtype="i2")
    for like, want in [(da.ones_like(x), 1), (da.zeros_like(x), 0), (da.full_like(x, 5), 5),
                       (da.empty_like(x), 0)]:
        assert like.chunks == x.chunks and like.dtype == x.dtype
        np.testing.assert_array_equal(like.compute(), np.full((6, 4), want, dtype="i2"))
    assert da.ones_like(np.ones(3)).shape == (3,)


class _ArrayLike:
    """Minimal array-like: shape, dtype and slicing only (like an h5py dataset)."""

    def __init__(self, data):
        self._data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.reads = 0

    def __getitem__(self, index):
        self.reads += 1
        return self._data[index]


def test_from_array_numpy_and_array_like_and_asarray():
    a = np.arange(30.0).reshape(5, 6)
    like = _ArrayLike(a)
    x = da.from_array(like, chunks=(2, 4))
    assert x.chunks == ((2, 2, 1), (4, 2))
    np.testing.assert_array_equal(x.compute(scheduler="sync"), a)
    np.testing.assert_array_equal(da.asarray([[1, 2], [3, 4]]).compute(), [[1, 2], [3, 4]])
    y = da.from_array(a, chunks=3)
    assert da.from_array(a, chunks=3).name == y.name  # tokenized by content
    assert da.asarray(y) is y
    ro = a.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal((da.from_array(ro, chunks=2) * 2).compute(), a * 2)


def test_from_delayed_and_to_delayed():
    from shmdask import delayed
    value = delayed(np.arange)(6)
    x = da.from_delayed(value, shape=(6,), dtype=int)
    np.testing.assert_array_equal((x + 1).compute(), np.arange(1, 7))
    bad = da.from_delayed(value, shape=(5,), dtype=int)
    with pytest.raises(ValueError, match="shape"):
        bad.compute()
    y = da.from_array(np.arange(12).reshape(3, 4), chunks=2)
    parts = y.to_delayed()
    assert parts.shape == (2, 2)
    np.testing.assert_array_equal(parts[1, 1].compute(), [[10, 11]])
    total = delayed(sum)([p.sum() for p in parts.ravel()])
    assert total.compute() == 66


def test_store_into_numpy_and_custom_targets():
    a = np.random.default_rng(1).standard_normal((7, 9))
    x = da.from_array(a, chunks=(3, 4))
    target = np.zeros((7, 9))
    assert da.store(x * 2, target) is None
    np.testing.assert_allclose(target, a * 2)

    class Target:
        shape = (7, 9)

        def __init__(self):
            self.data = np.zeros(self.shape)

        def __setitem__(self, index, value):
            self.data[index] = value

    t = Target()
    x.store(t)
    np.testing.assert_allclose(t.data, a)
    lazy_target = np.zeros((7, 9))
    stored = da.store(x + 1, lazy_target, compute=False)
    stored.compute(scheduler="threads")
    np.testing.assert_allclose(lazy_target, a + 1)
    with pytest.raises(ValueError, match="shape"):
        da.store(x, np.zeros((2, 2)))


def test_map_blocks_and_blockwise():
    a = np.arange(24.0).reshape(4, 6)
    x = da.from_array(a, chunks=(2, 3))
    np.testing.assert_array_equal(x.map_blocks(np.negative).compute(), -a)
    as_int = x.map_blocks(lambda b: b.astype(int), meta=np.array((), dtype=int), token="f")
    assert as_int.dtype == int and as_int.compute().dtype == int
    ids = x.map_blocks(lambda b, block_id=None: np.full(b.shape, block_id[0] * 10 + block_id[1]),
                       dtype=int).compute()
    assert ids[0, 0] == 0 and ids[3, 5] == 11
    sums = x.map_blocks(lambda b: b.sum(axis=1), drop_axis=1, dtype=float)
    np.testing.assert_allclose(sums.compute(), a.sum(axis=1))
    twice = da.map_blocks(lambda b: np.repeat(b, 2, axis=0), x, chunks=((4, 4), (3, 3)))
    assert twice.shape == (8, 6)
    np.testing.assert_array_equal(twice.compute(), np.repeat(a.reshape(2, 2, 6), 2,
                                                             axis=1).reshape(8, 6))
    lits = x.map_blocks(lambda b, s, t: np.full(b.shape, len(s) + t[1]), "abc", ("k", 1),
                        dtype=int)
    np.testing.assert_array_equal(lits.compute(), np.full(a.shape, 4))
    np.testing.assert_array_equal(da.where(x > 10, "big", "small").compute(),
                                  np.where(a > 10, "big", "small"))
    out = da.blockwise(lambda p, q: p + q.T, "ij", x, "ij", x.T, "ji", dtype=float)
    np.testing.assert_array_equal(out.compute(), a + a)
    contracted = da.blockwise(lambda p: np.sum(p, axis=1, keepdims=True)[:, :1], "i", x, "ij",
                              concatenate=True, dtype=float)
    assert contracted.shape == (4,)


def test_bool_array_mask_has_unknown_chunks_but_computes():
    a = np.arange(20.0).reshape(4, 5)
    x = da.from_array(a, chunks=2)
    picked = x[x > 7]
    assert np.isnan(picked.shape[0])
    np.testing.assert_array_equal(picked.compute(), a[a > 7])
    assert picked.sum().compute() == a[a > 7].sum()
    rows = x[da.from_array(np.array([True, False, True, True]), chunks=2)]
    np.testing.assert_array_equal(rows.compute(), a[[0, 2, 3]])
    known = picked.compute_chunk_sizes()
    assert known.shape == (12,)
    np.testing.assert_array_equal(known[::2].compute(), a[a > 7][::2])
    with pytest.raises(ValueError, match="unknown"):
        da.from_array(a, chunks=2)[x > 7][1:]


def test_indexing_errors():
    x = da.ones((4, 5), chunks=2)
    with pytest.raises(IndexError, match="out of bounds"):
        x[4]
    with pytest.raises(IndexError, match="out of bounds"):
        x[:, [0, 7]]
    with pytest.raises(IndexError, match="too many"):
        x[0, 0, 0]
    with pytest.raises(IndexError, match="boolean index"):
        x[np.array([True, False])]
    with pytest.raises(ValueError, match="cannot reshape"):
        x.reshape(3, 7)
    with pytest.raises(ValueError, match="out of bounds"):
        x.sum(axis=2)


def test_shape_ops_metadata():
    x = da.ones((4, 1, 6), chunks=(2, 1, 3))
    assert x.squeeze().shape == (4, 6)
    assert da.expand_dims(x, 0).shape == (1, 4, 1, 6)
    assert x.swapaxes(0, 2).chunks == ((3, 3), (1,), (2, 2))
    assert da.moveaxis(x, 0, -1).shape == (1, 6, 4)
    assert x.reshape(-1).shape == (24,)
    assert x.reshape(4, 6).chunks == ((2, 2), (3, 3))
    assert x.reshape(4, 2, 3).chunks == ((2, 2), (1, 1), (3,))
    np.testing.assert_array_equal(da.hstack([da.ones(3, chunks=2), da.zeros(2, chunks=1)]),
                                  [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(np.asarray(da.vstack([da.ones(3, chunks=2)] * 2)),
                                  np.ones((2, 3)))


@pytest.mark.skipif(importlib.util.find_spec("shmdask.visualize") is None,
                    reason="shmdask.visualize not available")
def test_visualize_writes_a_file(tmp_path):
    x = da.ones((4, 4), chunks=2).sum()
    out = tmp_path / "graph.png"
    x.visualize(filename=str(out))
    assert out.exists() and out.stat().st_size > 0


def test_arrays_on_a_client_compute_and_persist():
    local = pytest.importorskip("shmdask.scheduler.local")
    client_mod = pytest.importorskip("shmdask.client")
    if not hasattr(local, "ThreadCluster"):
        pytest.skip("no in-process cluster")
    cluster = local.ThreadCluster(n_workers=2)
    client = client_mod.Client(cluster, set_as_default=False)
    try:
        x = da.random.RandomState(3).random((60, 50), chunks=(25, 20))
        want = x.compute(scheduler="sync")
        np.testing.assert_allclose(x.compute(scheduler=client), want)
        y = (x + x.T[:50, :60].T).persist(scheduler=client)
        np.testing.assert_allclose(y.sum(axis=0).compute(scheduler=client),
                                   (want * 2).sum(axis=0))
        np.testing.assert_allclose(client.compute(x.mean()).result(), want.mean())
    finally:
        client.close()
        cluster.close()


def test_only_needed_blocks_are_computed():
    like = _ArrayLike(np.arange(100.0).reshape(10, 10))
    x = da.from_array(like, chunks=2)
    np.testing.assert_array_equal(x[:2, 4:6].compute(scheduler="sync"), like._data[:2, 4:6])
    assert like.reads == 1
    y = x[:2, :2] + 1
    dsk = y.__shmdask_graph__()
    small = da.core.optimize(dsk, y.__shmdask_keys__(), cull_and_fuse=True)
    assert len(small) < len(dsk)
    np.testing.assert_array_equal(shmdask.get(small, y.__shmdask_keys__(), scheduler="sync")[0][0],
                                  like._data[:2, :2] + 1)


@pytest.mark.parametrize("name", ["cumsum", "cumprod", "nancumsum", "nancumprod"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_cumulative_matches_numpy(name, axis):
    a = np.random.default_rng(2).uniform(0.5, 1.5, size=(7, 9))
    a[2, 3] = np.nan
    x = da.from_array(a, chunks=(3, 4))
    got = getattr(da, name)(x, axis=axis)
    want = getattr(np, name)(a, axis=axis)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.compute(), want, equal_nan=True)
    np.testing.assert_allclose(getattr(np, name)(x, axis=axis).compute(), want, equal_nan=True)
    if name == "cumsum":
        np.testing.assert_allclose(x.cumsum(axis=axis).compute(), want, equal_nan=True)


def test_small_routines_match_numpy():
    a = np.random.default_rng(5).integers(0, 6, size=(7, 8))
    x = da.from_array(a, chunks=(3, 5))
    for got, want in [
        (da.flip(x, 1), np.flip(a, 1)), (np.flipud(x), np.flipud(a)), (da.fliplr(x), a[:, ::-1]),
        (np.count_nonzero(x, axis=0), np.count_nonzero(a, axis=0)),
        (da.count_nonzero(x), np.count_nonzero(a)),
        (np.isin(x, [1, 3]), np.isin(a, [1, 3])),
        (da.block([[x, x], [x, x]]), np.block([[a, a], [a, a]])),
        (np.unique(x), np.unique(a)),
    ]:
        assert isinstance(got, da.Array)
        np.testing.assert_array_equal(got.compute(), want)


_DRAWS = []


def _counting_draw(*args, **kwargs):
    from shmdask.array import random as random_module
    _DRAWS.append(args[-1][0])
    return random_module._real_draw(*args, **kwargs)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])  # counts need this process
def test_each_random_block_is_drawn_once(monkeypatch, scheduler):
    from shmdask.array import random as random_module
    monkeypatch.setattr(random_module, "_real_draw", random_module._draw, raising=False)
    monkeypatch.setattr(random_module, "_draw", _counting_draw)
    _DRAWS.clear()
    x = da.random.random((40, 40), chunks=10)
    (x + x.T).sum(axis=0).compute(scheduler=scheduler)
    assert sorted(_DRAWS) == list(range(16))  # diagonal blocks are read twice, drawn once
    _DRAWS.clear()
    y = da.random.random((40, 20), chunks=(10, 20))
    (y @ y.T).compute(scheduler=scheduler)
    assert sorted(_DRAWS) == list(range(4))


def test_long_elementwise_chains_evaluate():
    x = da.ones((10, 10), chunks=5)
    for _ in range(1000):
        x = x + 1
    assert x.sum().compute() == 100 * 1001


def test_blocks_and_array_equal():
    a = np.arange(42.0).reshape(6, 7)
    x = da.from_array(a, chunks=(2, 3))
    np.testing.assert_array_equal(x.blocks[1].compute(), a[2:4])
    np.testing.assert_array_equal(x.blocks[:, ::2].compute(), a[:, [0, 1, 2, 6]])
    np.testing.assert_array_equal(x.blocks[-1, [0, 2]].compute(), a[4:, [0, 1, 2, 6]])
    assert x.blocks.shape == (3, 3)
    with pytest.raises(IndexError, match="out of range"):
        x.blocks[3]
    assert bool(np.array_equal(x, a))
    assert not bool(np.array_equal(x, a + 1))
    assert np.array_equal(x, a[:2]) is False
    with pytest.raises(NotImplementedError, match="numpy.linalg.norm"):
        np.linalg.norm(x)


def test_seed_tutorial_expressions_on_every_scheduler(scheduler):
    x = da.random.RandomState(11).random((40, 60, 10), chunks=(10, 10, 5))
    y = da.random.RandomState(12).random((40, 60, 10), chunks=(10, 10, 5))
    z = (da.arcsin(x) + da.arccos(y)).sum(axis=(1, 2))
    xv, yv = x.compute(scheduler="sync"), y.compute(scheduler="sync")
    np.testing.assert_allclose(z.compute(scheduler=scheduler),
                               (np.arcsin(xv) + np.arccos(yv)).sum(axis=(1, 2)))
    r = da.random.RandomState(13).random(100_000, chunks=1000)
    np.testing.assert_allclose(r.sum().compute(scheduler=scheduler),
                               r.compute(scheduler="sync").sum())
    w, wv = x[:, :40, 0], xv[:, :40, 0]
    np.testing.assert_allclose((w + w.T).mean(axis=0).compute(scheduler=scheduler),
                               (wv + wv.T).mean(axis=0))


def test_arrays_on_a_local_cluster_client():
    from shmdask.client import Client
    with Client(n_workers=2, set_as_default=False) as client:
        x = da.random.RandomState(5).normal(size=(300, 200), chunks=(100, 50))
        want = x.compute(scheduler="sync")
        y = (x @ x.T).persist(scheduler=client)
        np.testing.assert_allclose(y.compute(scheduler=client), want @ want.T)
        np.testing.assert_allclose(client.compute(y.sum(axis=0)).result(),
                                   (want @ want.T).sum(axis=0))
        got = (y[::7, ::3] + 1).std(axis=1).compute(scheduler=client)
        np.testing.assert_allclose(got, ((want @ want.T)[::7, ::3] + 1).std(axis=1))


def test_to_hdf5_roundtrip(tmp_path):
    h5py = pytest.importorskip("h5py")
    x = da.arange(20, chunks=6).reshape(4, 5)
    fn = str(tmp_path / "out.hdf5")
    x.to_hdf5(fn, "/x")
    da.to_hdf5(fn, {"/y": x * 2})
    with h5py.File(fn, "r") as f:
        np.testing.assert_array_equal(f["/x"][:], np.arange(20).reshape(4, 5))
        back = da.from_array(f["/y"], chunks=2)
        np.testing.assert_array_equal(back.sum().compute(scheduler="threads"), 2 * 190)


def test_fused_elementwise_steps_reuse_private_buffers_only():
    from shmdask.array.layers import ufunc_into
    x = da.random.RandomState(4).random((30, 30), chunks=10)
    z = da.arcsin(x) * 2 + 1
    tasks = list(z.__shmdask_graph__().values())
    assert all(t[0].func is ufunc_into for t in tasks)  # random -> arcsin -> mul -> add
    xv = x.compute()
    np.testing.assert_allclose(z.compute(), np.arcsin(xv) * 2 + 1)
    shared = x + 1  # x is read twice below, so it is stored and must stay intact
    both = shmdask.compute(x, shared, shared * 3, x.T - 1, scheduler="threads")
    np.testing.assert_allclose(both[0], xv)
    np.testing.assert_allclose(both[1], xv + 1)
    np.testing.assert_allclose(both[2], (xv + 1) * 3)
    np.testing.assert_allclose(both[3], xv.T - 1)
    f4 = da.ones(5, chunks=2, dtype="f4") + np.float64(1.5)  # result dtype differs: no reuse
    assert f4.dtype == np.float64 and f4.compute().dtype == np.float64
    ints = (da.arange(6, chunks=4) * 2) / 4  # int buffer cannot hold a float result
    np.testing.assert_allclose(ints.compute(), np.arange(6) * 2 / 4)


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_median_percentile_quantile_match_numpy(axis, keepdims):
    a = np.random.default_rng(8).standard_normal((6, 7, 5))
    a[1, 2, 3] = np.nan
    x = da.from_array(a, chunks=(2, 3, 5))
    b = np.nan_to_num(a)
    y = da.from_array(b, chunks=(4, 2, 2))
    for got, want in [
        (da.median(y, axis=axis, keepdims=keepdims), np.median(b, axis=axis, keepdims=keepdims)),
        (np.nanmedian(x, axis=axis, keepdims=keepdims),
         np.nanmedian(a, axis=axis, keepdims=keepdims)),
        (da.percentile(y, 30, axis=axis, keepdims=keepdims),
         np.percentile(b, 30, axis=axis, keepdims=keepdims)),
        (np.quantile(y, 0.9, axis=axis, keepdims=keepdims),
         np.quantile(b, 0.9, axis=axis, keepdims=keepdims)),
    ]:
        assert got.shape == np.shape(want)
        np.testing.assert_allclose(got.compute(), want)


def test_diff_histogram_average_match_numpy():
    a = np.random.default_rng(9).standard_normal((8, 9))
    x = da.from_array(a, chunks=(3, 4))
    np.testing.assert_allclose(np.diff(x).compute(), np.diff(a))
    np.testing.assert_allclose(da.diff(x, n=2, axis=0).compute(), np.diff(a, n=2, axis=0))
    counts, edges = da.histogram(x, bins=7, range=(-2, 2))
    want_counts, want_edges = np.histogram(a, bins=7, range=(-2, 2))
    np.testing.assert_array_equal(counts.compute(), want_counts)
    np.testing.assert_allclose(edges, want_edges)
    w = np.abs(a)
    counts, _ = da.histogram(x, bins=[-3, -1, 0, 0.5, 3], weights=da.from_array(w, chunks=2))
    np.testing.assert_allclose(counts.compute(),
                               np.histogram(a, bins=[-3, -1, 0, 0.5, 3], weights=w)[0])
    dens, _ = da.histogram(x, bins=5, range=(-3, 3), density=True)
    np.testing.assert_allclose(dens.compute(), np.histogram(a, bins=5, range=(-3, 3),
                                                            density=True)[0])
    with pytest.raises(ValueError, match="range"):
        da.histogram(x, bins=5)
    np.testing.assert_allclose(da.average(x, axis=0, weights=w).compute(),
                               np.average(a, axis=0, weights=w))
    np.testing.assert_allclose(np.average(x, axis=1, weights=np.arange(1, 10)).compute(),
                               np.average(a, axis=1, weights=np.arange(1, 10)))
    np.testing.assert_allclose(da.average(x).compute(), np.average(a))


def test_flat_combine_trees_with_several_levels():
    a = np.random.default_rng(0).integers(0, 50, size=1000)
    x = da.from_array(a, chunks=10)  # 100 blocks, combined 3 at a time: 5 levels
    np.testing.assert_array_equal(da.unique(x, split_every=3).compute(scheduler="sync"),
                                  np.unique(a))
    counts, _ = da.histogram(x, bins=5, range=(0, 50))
    np.testing.assert_array_equal(counts.compute(scheduler="sync"),
                                  np.histogram(a, bins=5, range=(0, 50))[0])
