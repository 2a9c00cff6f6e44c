"""xarray objects backed by shmdask arrays, the chunk-manager entry point, and
conversions between shmdask and dask arrays."""

from __future__ import annotations

import configparser
import os
from importlib.metadata import EntryPoint, entry_points

import numpy as np
import pytest

xr = pytest.importorskip("xarray")
da = pytest.importorskip("dask.array")
import xarray.namedarray.parallelcompat as parallelcompat  # noqa: E402

import shmdask  # noqa: E402
import shmdask.array as sda  # noqa: E402


def data():
    return sda.random.default_rng(7).random((40, 60), chunks=(10, 20))


def test_dataarray_of_a_shmdask_array_stays_lazy_and_computes(process_client):
    x = data()
    expected = x.compute()
    a = xr.DataArray(x, dims=("t", "s"), coords={"t": np.arange(40)})
    assert isinstance(a.data, sda.Array) and a.chunks == x.chunks
    mean = a.mean("t")
    assert isinstance(mean.data, sda.Array)  # still lazy
    with shmdask.config.set(scheduler=process_client):
        done = process_client.connection.tasks_done()
        computed = mean.compute()
        assert process_client.connection.tasks_done() > done  # it ran on shmdask's cluster
    assert isinstance(computed.data, np.ndarray)
    np.testing.assert_allclose(computed.values, expected.mean(axis=0))
    loaded = (a * 2).load()
    np.testing.assert_allclose(loaded.values, expected * 2)
    rechunked = a.chunk({"t": 20})
    assert isinstance(rechunked.data, sda.Array) and rechunked.chunks[0] == (20, 20)
    persisted = a.persist()
    assert isinstance(persisted.data, sda.Array)
    np.testing.assert_allclose(persisted.values, expected)
    ds = xr.Dataset({"v": a, "w": a.isel(s=0)})
    total = ds.sum().compute()
    np.testing.assert_allclose(total.v.values, expected.sum())
    np.testing.assert_allclose(total.w.values, expected[:, 0].sum())


def _declared_entry_point() -> EntryPoint:
    setup_cfg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "setup.cfg")
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    lines = cfg["options.entry_points"]["xarray.chunkmanagers"].strip().splitlines()
    (line,) = lines
    name, value = (p.strip() for p in line.split("="))
    return EntryPoint(name=name, value=value, group="xarray.chunkmanagers")


@pytest.fixture
def chunkmanagers(monkeypatch):
    """xarray's chunk managers with shmdask's: found through the installed entry
    point, or (a checkout not reinstalled since) loaded from setup.cfg's."""
    declared = _declared_entry_point()
    installed = list(entry_points(group="xarray.chunkmanagers"))
    if not any(ep.name == declared.name for ep in installed):
        managers = parallelcompat.load_chunkmanagers([*installed, declared])
        monkeypatch.setattr(parallelcompat, "list_chunkmanagers", lambda: managers)
    return parallelcompat.list_chunkmanagers()


def test_chunk_manager_entry_point_makes_shmdask_arrays(chunkmanagers):
    assert "shmdask" in chunkmanagers and "dask" in chunkmanagers
    values = np.arange(24.0).reshape(4, 6)
    a = xr.DataArray(values, dims=("a", "b")).chunk({"a": 2}, chunked_array_type="shmdask")
    assert isinstance(a.data, sda.Array) and a.chunks == ((2, 2), (6,))
    assert float(a.sum()) == values.sum()
    np.testing.assert_allclose((a + 1).mean("a").compute().values, values.mean(0) + 1)
    b = (a * 2).chunk({"b": 3})
    assert isinstance(b.data, sda.Array) and b.chunks == ((2, 2), (3, 3))
    # xarray's default stays dask
    assert isinstance(xr.DataArray(values).chunk(2).data, da.Array)


def test_to_dask_array_and_back():
    x = data()
    expected = x.compute()
    d = x.to_dask_array()
    assert isinstance(d, da.Array) and d.chunks == x.chunks and d.dtype == x.dtype
    np.testing.assert_allclose(d.compute(scheduler="sync"), expected)
    np.testing.assert_allclose((d + d).sum(axis=1).compute(scheduler="threads"),
                               (expected * 2).sum(axis=1))
    y = da.random.RandomState(0).random_sample((30, 30), chunks=10)
    sy = sda.from_dask_array(y)
    assert isinstance(sy, sda.Array) and sy.chunks == y.chunks
    yv = y.compute(scheduler="sync")
    np.testing.assert_allclose(sy.compute(scheduler="threads"), yv)
    np.testing.assert_allclose((sy + sy.T).sum(axis=0).compute(scheduler="sync"),
                               (yv + yv.T).sum(axis=0))
    with pytest.raises(TypeError, match="needs a dask.array.Array"):
        sda.from_dask_array(np.ones(3))
