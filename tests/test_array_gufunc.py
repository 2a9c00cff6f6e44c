"""Generalized ufuncs on Arrays: numpy's own gufuncs through ``__array_ufunc__``,
``np.vectorize(signature=...)`` through ``apply_gufunc``/``gufunc``, numba's
``@guvectorize`` when numba is installed; compared with numpy (and dask.array)."""

from __future__ import annotations

import numpy as np
import pytest

import shmdask.array as da


def _smooth(a):
    return np.convolve(a, np.ones(3) / 3, mode="same")


@pytest.fixture
def xy():
    x = da.random.random((60, 20), chunks=(15, 20))
    y = da.random.random((60, 20), chunks=(20, 20))
    return x, y


def test_numpy_gufuncs_dispatch_to_arrays(xy):
    x, y = xy
    r = np.vecdot(x, y)
    assert isinstance(r, da.Array) and r.shape == (60,)
    np.testing.assert_allclose(r.compute(), np.vecdot(x.compute(), y.compute()))
    m = da.random.random((4, 6, 5), chunks=(2, 6, 5))
    v = da.random.random(5, chunks=5)
    if hasattr(np, "matvec"):
        np.testing.assert_allclose(np.matvec(m, v).compute(), np.matvec(m.compute(),
                                                                          v.compute()))


def test_np_vectorize_with_a_signature(xy):
    x, _ = xy
    smooth = np.vectorize(_smooth, signature="(n)->(n)")
    s = da.apply_gufunc(smooth, None, x)  # the signature is read from the vectorize object
    assert s.chunks == x.chunks
    np.testing.assert_allclose(s.compute(), smooth(x.compute()))
    g = da.gufunc(_smooth, signature="(n)->(n)", vectorize=True)
    np.testing.assert_allclose(g(x).compute(), smooth(x.compute()))
    assert np.allclose(g(np.arange(5.0)), smooth(np.arange(5.0)))  # numpy in, numpy out


def test_several_outputs_and_new_core_dims(xy):
    x, _ = xy

    @da.as_gufunc(signature="(i)->(),()", vectorize=True, output_dtypes=(float, float))
    def low_high(a):
        return a.min(), a.max()

    lo, hi = low_high(x)
    np.testing.assert_allclose(lo.compute(), x.compute().min(axis=1))
    np.testing.assert_allclose(hi.compute(), x.compute().max(axis=1))
    pairs = da.apply_gufunc(lambda a: np.stack([a.sum(-1), a.mean(-1)], axis=-1),
                            "(i)->(k)", x, output_sizes={"k": 2})
    assert pairs.shape == (60, 2)
    np.testing.assert_allclose(pairs.compute()[:, 0], x.compute().sum(axis=1))


def test_axes_and_axis_choose_the_core_dimensions(xy):
    x, _ = xy
    r = da.apply_gufunc(lambda a: np.cumsum(a, axis=-1), "(i)->(i)", x,
                        axes=[(0,), (0,)], allow_rechunk=True)
    np.testing.assert_allclose(r.compute(), np.cumsum(x.compute(), axis=0))
    m = da.apply_gufunc(lambda a: a.mean(axis=-1), "(i)->()", x, axis=0, allow_rechunk=True)
    np.testing.assert_allclose(m.compute(), x.compute().mean(axis=0))


def test_a_split_core_dimension_is_an_error_naming_it(xy):
    x, _ = xy
    with pytest.raises(ValueError, match=r"core dimension 'n' \(axis 0\) of argument 0 is "
                                         r"split into 4 chunks.*allow_rechunk=True"):
        da.apply_gufunc(_smooth, "(n)->(n)", x, axis=0, vectorize=True)
    with pytest.raises(ValueError, match="output_sizes"):
        da.apply_gufunc(np.sum, "(i)->(j)", x)
    with pytest.raises(ValueError, match="not a gufunc signature"):
        da.apply_gufunc(np.sum, "(i)", x)
    with pytest.raises(TypeError, match="takes 2 argument"):
        da.apply_gufunc(np.vecdot, "(n),(n)->()", x)
    with pytest.raises(ValueError, match="length 20 in one argument and 5"):
        np.vecdot(x, da.ones((60, 5), chunks=(15, 5)))


def test_same_result_as_dask_apply_gufunc():
    dask_array = pytest.importorskip("dask.array")
    data = np.random.default_rng(0).random((30, 8))
    ours = da.apply_gufunc(_smooth, "(n)->(n)", da.from_array(data, chunks=(10, 8)),
                           vectorize=True, output_dtypes=float)
    theirs = dask_array.apply_gufunc(_smooth, "(n)->(n)",
                                     dask_array.from_array(data, chunks=(10, 8)),
                                     vectorize=True, output_dtypes=float)
    assert ours.chunks == theirs.chunks
    np.testing.assert_allclose(ours.compute(), theirs.compute())


@pytest.mark.slow  # numba compiles the gufunc
def test_numba_guvectorize(process_client):
    numba = pytest.importorskip("numba")

    @numba.guvectorize(["void(float64[:], intp, float64[:])"], "(n),()->(n)")
    def move_mean(a, window, out):
        total = 0.0
        for i in range(a.shape[0]):
            total += a[i]
            if i >= window:
                total -= a[i - window]
            out[i] = total / min(i + 1, window)

    x = da.random.random((8, 50), chunks=(2, 50))
    r = move_mean(x, 3)  # numpy hands the call to Array.__array_ufunc__
    assert isinstance(r, da.Array)
    expected = move_mean(x.compute(scheduler="sync"), 3)
    np.testing.assert_allclose(r.compute(scheduler="sync"), expected)
    if hasattr(x, "__dask_graph__"):
        # numba then hands over its picklable wrapper, not the compiled ufunc
        np.testing.assert_allclose(r.compute(scheduler=process_client), expected)
