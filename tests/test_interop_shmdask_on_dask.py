"""shmdask collections on dask and dask.distributed: the collection protocol,
``scheduler=`` a distributed Client or a get function, validated when set."""

from __future__ import annotations

import sys

import cloudpickle
import numpy as np
import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import shmdask  # noqa: E402
import shmdask.array as sda  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests


def inc(x):
    return x + 1


@pytest.fixture(scope="module")
def dist():
    """One dask.distributed cluster (2 worker processes on loopback) per module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


def array():
    x = sda.random.default_rng(3).random((200, 200), chunks=50)
    return (x + x.T).sum(axis=0)


def delayed_tree():
    parts = [shmdask.delayed(inc)(i) for i in range(8)]
    while len(parts) > 1:
        parts = [shmdask.delayed(sum)(parts[i:i + 2]) for i in range(0, len(parts), 2)]
    return parts[0]


@pytest.fixture(scope="module")
def expected():
    return {"array": array().compute(scheduler="sync"), "tree": delayed_tree().compute(
        scheduler="sync")}


def test_shmdask_collections_are_dask_collections(expected):
    x, d = array(), delayed_tree()
    assert dask.is_dask_collection(x) and dask.is_dask_collection(d)
    assert dask.base.tokenize(x) == dask.base.tokenize(array())  # stable names
    got_x, got_d = dask.compute(x, d)  # their default scheduler is shmdask's
    np.testing.assert_allclose(got_x, expected["array"])
    assert got_d == expected["tree"]
    (px,) = dask.persist(x, scheduler="sync")
    assert isinstance(px, sda.Array)
    np.testing.assert_allclose(px.compute(), expected["array"])
    # dask's threads run our graphs too, and dask.delayed takes our collections
    np.testing.assert_allclose(dask.compute(x, scheduler="threads")[0], expected["array"])
    assert dask.delayed(inc)(d).compute(scheduler="sync") == expected["tree"] + 1


def test_distributed_client_computes_and_persists_them(dist, expected):
    x, d = array(), delayed_tree()
    fx, fd = dist.compute([x, d])
    np.testing.assert_allclose(fx.result(), expected["array"])
    assert fd.result() == expected["tree"]
    assert dist.gather(dist.compute({"d": d}))["d"] == expected["tree"]
    px = dist.persist(x)
    assert isinstance(px, sda.Array)
    assert all(isinstance(v, distributed.Future) for v in px.__shmdask_graph__().values())
    np.testing.assert_allclose(dist.compute(px).result(), expected["array"])
    np.testing.assert_allclose(dask.compute(px + 1, scheduler=dist)[0], expected["array"] + 1)
    # a collection travels into a task and computes there
    assert dist.submit(lambda c: c.compute(scheduler="sync"), d).result() == expected["tree"]
    # the data is on the distributed cluster: shmdask's own schedulers say so
    with pytest.raises(TypeError, match="lives on another scheduler"):
        px.compute(scheduler="threads")


def test_scheduler_may_be_a_distributed_client(dist, expected):
    x, d = array(), delayed_tree()
    np.testing.assert_allclose(x.compute(scheduler=dist), expected["array"])
    assert shmdask.compute(d, 5, scheduler=dist) == (expected["tree"], 5)
    with shmdask.config.set(scheduler=dist):
        np.testing.assert_allclose(shmdask.compute(x)[0], expected["array"])
        (px,) = shmdask.persist(x)  # kept on the distributed cluster
        assert all(isinstance(v, distributed.Future) for v in px.dask.values())
        np.testing.assert_allclose(px.compute(), expected["array"])
        assert shmdask.get({"a": 1, "b": (inc, "a")}, "b") == 2


def test_scheduler_may_be_a_get_function(expected):
    x, d = array(), delayed_tree()
    np.testing.assert_allclose(x.compute(scheduler=dask.threaded.get), expected["array"])
    assert shmdask.compute(d, scheduler=dask.get) == (expected["tree"],)
    with shmdask.config.set(scheduler=dask.get):
        (pd_,) = shmdask.persist(d)  # a get function keeps nothing: values in the graph
        assert pd_.compute() == expected["tree"]


def test_bad_schedulers_are_refused_when_set():
    with pytest.raises(TypeError, match="scheduler= must be"):
        shmdask.config.set(scheduler=42)
    with pytest.raises(ValueError, match="unknown scheduler 'thread'"):
        shmdask.config.set(scheduler="thread")
    with pytest.raises(TypeError, match="get\\(dsk, keys\\)"):
        shmdask.config.set(scheduler=lambda: None)
    assert shmdask.config.get("scheduler") is None  # nothing was changed
    with pytest.raises(TypeError, match="scheduler= must be"):
        array().compute(scheduler=object())


def test_asynchronous_distributed_client_is_refused():
    class FakeAsyncClient:  # what matters is what dask looks at: name, get, asynchronous
        asynchronous = True

        def get(self, dsk, keys):
            raise AssertionError("must not be called")

    FakeAsyncClient.__name__ = "Client"
    with pytest.raises(ValueError, match="asynchronous"):
        shmdask.config.set(scheduler=FakeAsyncClient())


def test_a_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.array", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'shmdask\[dask\]'"):
        sda.ones(4, chunks=2).to_dask_array()


def test_a_default_distributed_client_is_shmdask_default_too(dist, expected):
    """Swapping shmdask's Client for dask.distributed's is all a script needs."""
    with distributed.Client(dist.scheduler.address) as client:  # set as default
        assert distributed.default_client() is client
        with distributed.get_task_stream(client) as ts:
            np.testing.assert_allclose(array().compute(), expected["array"])
            assert delayed_tree().compute() == expected["tree"]
        assert {"inc", "sum"} <= {r["key"].split("-")[0] if isinstance(r["key"], str)
                                  else r["key"][0].split("-")[0] for r in ts.data}
    assert shmdask.compute(delayed_tree())[0] == expected["tree"]  # threads again
