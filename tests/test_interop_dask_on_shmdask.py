"""Real dask collections (array, dataframe, bag, delayed, xarray) on shmdask's engine.

Every result is compared with dask's own single-threaded scheduler.
"""

from __future__ import annotations

import operator
import os
import subprocess
import sys

import cloudpickle
import numpy as np
import pytest

dask = pytest.importorskip("dask")
pd = pytest.importorskip("pandas")
xr = pytest.importorskip("xarray")
import dask.array as da  # noqa: E402
import dask.bag as db  # noqa: E402
import dask.dataframe as dd  # noqa: E402

import shmdask  # noqa: E402
from shmdask.client import Client, Future  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests


def inc(x):
    return x + 1


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 2000
    return pd.DataFrame({"k": rng.integers(0, 13, n), "v": rng.random(n),
                         "id": rng.permutation(n), "s": [f"s{i % 7}" for i in range(n)]})


def collections() -> dict:
    x = da.random.RandomState(1).random_sample((120, 120), chunks=40)
    pdf = frame()
    df = dd.from_pandas(pdf, npartitions=4)
    other = dd.from_pandas(pdf[["id", "v"]].rename(columns={"v": "w"}), npartitions=3)
    bag = db.from_sequence(range(50), npartitions=5)
    parts = [dask.delayed(inc)(i) for i in range(6)]
    return {
        "array": (x + x.T).sum(axis=0),
        "groupby-agg": df.groupby("k").agg({"v": ["mean", "max"], "id": "count"}),
        "groupby-mean-by-string": df.groupby("s").v.mean(),
        "merge": df.merge(other, on="id"),
        "set_index": df.set_index("id"),
        "map_partitions": df.map_partitions(lambda p: p.assign(w=p.v * 2)),
        "bag": bag.map(inc).filter(lambda i: i % 3).fold(lambda a, b: a + b),
        "bag-foldby": bag.foldby(lambda i: i % 4, operator.add, 0, operator.add, 0),
        "delayed": dask.delayed(sum)(parts),
        "xarray": xr.DataArray(x, dims=("a", "b")).mean("a"),
        "xarray-dataset": xr.Dataset({"x": (("a", "b"), x)}).sum(),
    }


def assert_same(got, expected):
    if isinstance(expected, pd.DataFrame | pd.Series):
        # a shuffle may order rows differently: compare as sets of rows; an
        # unnamed index (a merge's) is positional, not data
        def canon(o):
            o = o.to_frame() if isinstance(o, pd.Series) else o
            o = o.reset_index(drop=o.index.names == [None])
            return o.sort_values(list(o.columns)).reset_index(drop=True)
        pd.testing.assert_frame_equal(canon(got), canon(expected))
    elif isinstance(expected, xr.DataArray | xr.Dataset):
        xr.testing.assert_allclose(got, expected)
    elif isinstance(expected, np.ndarray):
        np.testing.assert_allclose(got, expected)
    else:
        assert sorted(got) == sorted(expected) if isinstance(expected, list) else \
            got == expected


@pytest.fixture(scope="module")
def expected():
    return {name: dask.compute(c, scheduler="sync")[0] for name, c in collections().items()}


@pytest.mark.parametrize("name", list(collections()))
def test_dask_compute_on_a_local_cluster_client(name, process_client, expected):
    (got,) = dask.compute(collections()[name], scheduler=process_client)
    assert_same(got, expected[name])
    if isinstance(got, xr.DataArray | xr.Dataset):
        assert not any(v.chunks for v in getattr(got, "variables", {"": got}).values()
                       if hasattr(v, "chunks"))


@pytest.mark.parametrize("name", ["array", "merge", "bag", "xarray"])
def test_every_way_of_naming_shmdask_as_dask_scheduler(name, process_client, expected):
    coll = collections()[name]
    with dask.config.set(scheduler=process_client):
        assert_same(coll.compute(), expected[name])
    assert_same(dask.compute(coll, scheduler=process_client.get)[0], expected[name])
    with shmdask.config.set(scheduler=process_client):  # shmdask.get on its default
        assert_same(dask.compute(coll, scheduler=shmdask.get)[0], expected[name])
    for local in ("threads", "sync"):
        with shmdask.config.set(scheduler=local):
            assert_same(dask.compute(coll, scheduler=shmdask.get)[0], expected[name])


def test_shmdask_get_on_the_processes_scheduler(expected):
    """``scheduler=shmdask.get`` with shmdask's "processes": a LocalCluster made
    on first use (and closed at exit), as dask's "processes" scheduler is."""
    with shmdask.config.set(scheduler="processes"):
        got = dask.compute(collections()["groupby-agg"], scheduler=shmdask.get)[0]
    assert_same(got, expected["groupby-agg"])
    from shmdask.client_defaults import default_process_client

    default_process_client().close()  # its shared memory goes before this module ends


def test_what_dask_asks_of_a_client_is_there(process_client):
    from dask.base import get_scheduler

    assert process_client.asynchronous is False
    assert get_scheduler(scheduler=process_client) == process_client.get
    with dask.config.set(scheduler=process_client):
        assert get_scheduler() == process_client.get


@pytest.mark.filterwarnings("ignore:Computing mixed collections")  # dask's, on purpose
def test_shmdask_compute_takes_dask_collections(process_client, expected):
    colls = collections()
    with process_client.get_task_stream() as ts:
        assert_same(shmdask.compute(colls["merge"], scheduler=process_client)[0],
                    expected["merge"])
    assert any("taskshuffle" in r["group"] for r in ts.data)  # not files on a local disk
    got = shmdask.compute(colls["array"], {"m": colls["merge"]}, 3, scheduler=process_client)
    assert_same(got[0], expected["array"])
    assert_same(got[1]["m"], expected["merge"])
    assert got[2] == 3
    assert_same(shmdask.compute(colls["bag"], scheduler="threads")[0], expected["bag"])


def test_client_compute_gives_futures(process_client, expected):
    colls = collections()
    f = process_client.compute(colls["groupby-agg"])
    assert isinstance(f, Future)
    assert_same(f.result(), expected["groupby-agg"])
    fs = process_client.compute([colls["array"], colls["delayed"]])
    assert [type(f) for f in fs] == [Future, Future]
    assert_same(process_client.gather(fs[0]), expected["array"])
    assert fs[1].result() == expected["delayed"]
    assert_same(process_client.compute(colls["bag"], sync=True), expected["bag"])
    with pytest.raises(TypeError, match="needs collections"):
        process_client.compute(object())


@pytest.mark.filterwarnings("ignore:Computing mixed collections")
def test_client_persist_gives_dask_collections_backed_by_futures(process_client):
    pdf = frame()
    df = dd.from_pandas(pdf, npartitions=4)
    x = da.random.RandomState(2).random_sample((60, 60), chunks=30)
    pdf2, px = process_client.persist([df[df.v > 0.5], x + 1])
    assert isinstance(pdf2, dd.DataFrame) and isinstance(px, da.Array)
    held = [v for v in dict(px.__dask_graph__()).values() if isinstance(v, Future)]
    assert len(held) == 4  # the blocks live on the cluster, the graph holds Futures
    expected_x = (x + 1).compute(scheduler="sync")
    assert_same(dask.compute(px.sum(axis=1), scheduler=process_client)[0],
                expected_x.sum(axis=1))
    assert_same(dask.compute(pdf2.groupby("k").v.sum(), scheduler=process_client)[0],
                pdf[pdf.v > 0.5].groupby("k").v.sum())
    # dask.persist asks the client to persist: data stays on the cluster
    (px2,) = dask.persist(x * 2, scheduler=process_client)
    assert sum(isinstance(v, Future) for v in dict(px2.__dask_graph__()).values()) == 4
    (py,) = dask.persist(x * 3, scheduler=shmdask.get)  # a get function: values
    assert_same(py.compute(scheduler="sync"), expected_x * 3 - 3)
    # dask's graph refers to the persisted keys; a local scheduler fetches them
    assert_same(shmdask.compute(px.T.sum(axis=0), scheduler="threads")[0],
                expected_x.T.sum(axis=0))


def test_a_default_client_is_dask_default_too():
    with Client(n_workers=1) as client:
        assert dask.config.get("scheduler") is client
        # shuffles in tasks: through shared memory, and to TCP workers on other hosts
        assert dask.config.get("dataframe.shuffle.method") == "tasks"
        x = da.ones(10, chunks=5)
        tasks_before = client.connection.tasks_done()
        assert x.sum().compute() == 10
        assert client.connection.tasks_done() > tasks_before
        with dask.config.set(scheduler="sync"):  # the user's choice wins
            assert x.sum().compute() == 10
    assert dask.config.get("scheduler", None) is None
    assert dask.config.get("dataframe.shuffle.method", None) is None


def test_large_dask_chunks_live_in_shared_memory(process_client):
    x = da.ones((1000, 1000), chunks=250)  # 500 kB chunks, each read by two tasks
    with process_client.get_task_stream() as ts:
        assert dask.compute((x + x.T).sum(), scheduler=process_client)[0] == 2_000_000
    assert "shm" in {r["where"] for r in ts.data}


@pytest.mark.slow
def test_dask_dataframe_on_a_remote_tcp_worker(tmp_path):
    """The same graph through a worker that joined over TCP (no shared memory)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        root, os.environ.get("PYTHONPATH")]))}
    env.pop("SHMDASK_AUTH_KEY", None)
    sched = subprocess.Popen([sys.executable, "-m", "shmdask", "scheduler", "--port", "0"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = None
    try:
        line = sched.stdout.readline()
        assert line.startswith("Scheduler started at "), line + sched.stderr.read()
        address = line.split()[-1]
        worker = subprocess.Popen([sys.executable, "-m", "shmdask", "worker", address],
                                  env=env, stderr=subprocess.DEVNULL)
        with Client(address, set_as_default=False) as client:
            from conftest import wait_for

            wait_for(lambda: client.scheduler_info()["workers"], what="a remote worker")
            pdf = frame()
            df = dd.from_pandas(pdf, npartitions=3)
            got = dask.compute(df.groupby("k").v.sum(), scheduler=client)[0]
            assert_same(got, pdf.groupby("k").v.sum())
            kinds = {w["kind"] for w in client.scheduler_info()["workers"].values()}
            assert kinds == {"remote"}
    finally:
        for p in (worker, sched):
            if p is not None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        sched.stdout.close()
        sched.stderr.close()
