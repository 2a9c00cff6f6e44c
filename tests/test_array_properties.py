"""Property tests: shmdask.array against numpy over random shapes and chunkings.

Each test draws a shape, a chunking of it and (where it matters) an operation
argument, builds the same expression in numpy and in shmdask.array, computes
it on each scheduler and compares.  Example counts are kept small so the file
runs in seconds.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmdask.array as da


@pytest.fixture
def scheduler(any_scheduler):
    return any_scheduler


FEW = settings(max_examples=int(os.environ.get("SHMDASK_ARRAY_EXAMPLES", "25")), deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow])


@st.composite
def shapes_and_chunks(draw, min_dims=1, max_dims=3, max_side=9):
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=min_dims,
                                max_size=max_dims)))
    chunks = []
    for n in shape:
        blocks = []
        left = n
        while left:
            b = draw(st.integers(1, left))
            blocks.append(b)
            left -= b
        chunks.append(tuple(blocks))
    return shape, tuple(chunks)


@st.composite
def arrays(draw, **kw):
    shape, chunks = draw(shapes_and_chunks(**kw))
    seed = draw(st.integers(0, 2**16))
    a = np.random.default_rng(seed).standard_normal(shape)
    return a, da.from_array(a, chunks=chunks)


def close(got, want):
    got = np.asarray(got)
    assert got.shape == np.shape(want), (got.shape, np.shape(want))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True)


@FEW
@given(data=arrays(), other=st.integers(0, 2**16),
       op=st.sampled_from(["add", "sub_r", "mul", "sin_plus_cos", "abs_neg", "pow2",
                           "where", "clip", "maximum", "isnan", "round", "astype32"]))
def test_elementwise_matches_numpy(scheduler, data, other, op):
    a, x = data
    b = np.random.default_rng(other).standard_normal(a.shape)
    y = da.from_array(b, chunks=tuple(max(1, c[0] // 2 + 1) for c in x.chunks))
    funcs = {
        "add": lambda m, p, q: p + q,
        "sub_r": lambda m, p, q: 2.5 - p,
        "mul": lambda m, p, q: p * q * 3,
        "sin_plus_cos": lambda m, p, q: m.sin(p) + m.cos(q),
        "abs_neg": lambda m, p, q: abs(-p),
        "pow2": lambda m, p, q: p ** 2,
        "where": lambda m, p, q: m.where(p > 0, p, q),
        "clip": lambda m, p, q: m.clip(p, -0.5, 0.5),
        "maximum": lambda m, p, q: m.maximum(p, q),
        "isnan": lambda m, p, q: m.isnan(m.log(p)),
        "round": lambda m, p, q: m.round(p * 100, 1),
        "astype32": lambda m, p, q: p.astype(np.float32),
    }
    with np.errstate(all="ignore"):
        want = funcs[op](np, a, b)
        got = funcs[op](da, x, y).compute(scheduler=scheduler)
    close(got, want)
    assert got.dtype == want.dtype


@FEW
@given(data=arrays(), keepdims=st.booleans(), split_every=st.sampled_from([None, 2, 3]),
       name=st.sampled_from(["sum", "mean", "prod", "min", "max", "std", "var", "any", "all",
                             "nansum", "nanmean", "nanmin", "nanmax", "argmin", "argmax"]),
       axis_seed=st.integers(0, 1000))
def test_reductions_match_numpy(scheduler, data, keepdims, split_every, name, axis_seed):
    a, x = data
    rng = np.random.default_rng(axis_seed)
    if name in ("argmin", "argmax"):
        axis = None if axis_seed % 3 == 0 else int(rng.integers(a.ndim))
    else:
        choice = axis_seed % 3
        if choice == 0:
            axis = None
        elif choice == 1:
            axis = int(rng.integers(a.ndim))
        else:
            k = int(rng.integers(1, a.ndim + 1))
            axis = tuple(int(v) for v in rng.choice(a.ndim, size=k, replace=False))
    if name in ("any", "all"):
        a, x = a > 0.3, x > 0.3
    if name.startswith("nan"):
        a = np.where(a > 1.0, np.nan, a)
        x = da.where(x > 1.0, np.nan, x)
    want = getattr(np, name)(a, axis=axis, keepdims=keepdims)
    got = getattr(da, name)(x, axis=axis, keepdims=keepdims, split_every=split_every)
    assert got.shape == np.shape(want)
    close(got.compute(scheduler=scheduler), want)


@st.composite
def index_for(draw, shape):
    index = []
    for n in shape:
        kind = draw(st.sampled_from(["slice", "int", "full", "none_then_slice"]))
        if kind == "int":
            index.append(draw(st.integers(-n, n - 1)))
        elif kind == "full":
            index.append(slice(None))
        else:
            start = draw(st.one_of(st.none(), st.integers(-n - 2, n + 2)))
            stop = draw(st.one_of(st.none(), st.integers(-n - 2, n + 2)))
            step = draw(st.one_of(st.none(), st.integers(-3, 3).filter(lambda s: s != 0)))
            if kind == "none_then_slice":
                index.append(None)
            index.append(slice(start, stop, step))
    if draw(st.booleans()) and len(index) > 1:
        index = index[:1] + [Ellipsis]
    return tuple(index)


@FEW
@given(data=st.data())
def test_slicing_matches_numpy(scheduler, data):
    a, x = data.draw(arrays())
    index = data.draw(index_for(a.shape))
    want = a[index]
    got = x[index]
    assert got.shape == want.shape
    close(got.compute(scheduler=scheduler), want)


@FEW
@given(data=st.data())
def test_fancy_indexing_matches_numpy(scheduler, data):
    a, x = data.draw(arrays())
    axis = data.draw(st.integers(0, a.ndim - 1))
    n = a.shape[axis]
    if data.draw(st.booleans()):
        idx = np.array(data.draw(st.lists(st.integers(-n, n - 1), max_size=12)), dtype=int)
    else:
        idx = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    index = (slice(None),) * axis + (idx,)
    close(x[index].compute(scheduler=scheduler), a[index])


@FEW
@given(data=arrays(), perm_seed=st.integers(0, 1000))
def test_transpose_matches_numpy(scheduler, data, perm_seed):
    a, x = data
    axes = tuple(int(v) for v in np.random.default_rng(perm_seed).permutation(a.ndim))
    close(x.transpose(axes).compute(scheduler=scheduler), a.transpose(axes))
    close((x.T + 1).compute(scheduler=scheduler), a.T + 1)


@st.composite
def reshape_targets(draw, shape):
    size = int(np.prod(shape))
    dims = []
    left = size
    for _ in range(draw(st.integers(0, 3))):
        divisors = [d for d in range(1, left + 1) if left % d == 0]
        d = draw(st.sampled_from(divisors))
        dims.append(d)
        left //= d
    dims.append(left)
    if draw(st.booleans()):
        k = draw(st.integers(0, len(dims) - 1))
        dims[k] = -1
    return tuple(dims)


@FEW
@given(data=st.data())
def test_reshape_matches_numpy(scheduler, data):
    a, x = data.draw(arrays())
    target = data.draw(reshape_targets(a.shape))
    want = a.reshape(target)
    got = x.reshape(target)
    assert got.shape == want.shape
    close(got.compute(scheduler=scheduler), want)
    close(x.ravel().compute(scheduler=scheduler), a.ravel())


@FEW
@given(data=arrays(), target=shapes_and_chunks())
def test_rechunk_preserves_values(scheduler, data, target):
    a, x = data
    rng = np.random.default_rng(len(target[1]))
    new_chunks = []
    for n in a.shape:
        blocks, left = [], n
        while left:
            b = int(rng.integers(1, left + 1))
            blocks.append(b)
            left -= b
        new_chunks.append(tuple(blocks))
    y = x.rechunk(tuple(new_chunks))
    assert y.chunks == tuple(new_chunks)
    close(y.compute(scheduler=scheduler), a)


@FEW
@given(data=arrays(min_dims=2, max_dims=2), other=st.integers(1, 7))
def test_dot_matches_numpy(scheduler, data, other):
    a, x = data
    b = np.arange(a.shape[1] * other, dtype=float).reshape(a.shape[1], other)
    y = da.from_array(b, chunks=(max(1, a.shape[1] // 2), 3))
    close((x @ y).compute(scheduler=scheduler), a @ b)
    close(da.tensordot(x, x, axes=([0], [0])).compute(scheduler=scheduler),
          np.tensordot(a, a, axes=([0], [0])))


@FEW
@given(data=arrays(max_dims=2), n=st.integers(1, 3))
def test_concatenate_and_stack_match_numpy(scheduler, data, n):
    a, x = data
    axis = a.ndim - 1
    close(da.concatenate([x] * n, axis=axis).compute(scheduler=scheduler),
          np.concatenate([a] * n, axis=axis))
    close(da.stack([x, x + 1], axis=0).compute(scheduler=scheduler), np.stack([a, a + 1]))


@st.composite
def broadcastable_pair(draw):
    shape = draw(st.lists(st.integers(1, 7), min_size=1, max_size=3))
    other = [n if draw(st.booleans()) else 1 for n in shape]
    other = other[draw(st.integers(0, len(other) - 1)):]  # maybe fewer leading axes
    return tuple(shape), tuple(other)


def _random_chunks(draw, shape):
    out = []
    for n in shape:
        blocks, left = [], n
        while left:
            b = draw(st.integers(1, left))
            blocks.append(b)
            left -= b
        out.append(tuple(blocks))
    return tuple(out)


@FEW
@given(data=st.data())
def test_broadcasting_between_differently_chunked_arrays(scheduler, data):
    shape_a, shape_b = data.draw(broadcastable_pair())
    if data.draw(st.booleans()):
        shape_a, shape_b = shape_b, shape_a
    a = np.arange(np.prod(shape_a), dtype=float).reshape(shape_a)
    b = np.arange(np.prod(shape_b), dtype=float).reshape(shape_b) * 10
    x = da.from_array(a, chunks=_random_chunks(data.draw, shape_a))
    y = da.from_array(b, chunks=_random_chunks(data.draw, shape_b))
    want = a * 2 - b
    close((x * 2 - y).compute(scheduler=scheduler), want)
    close((x * 2 - b).compute(scheduler=scheduler), want)
    close((a * 2 - y).compute(scheduler=scheduler), want)
