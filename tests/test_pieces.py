"""Huge graphs sent in pieces (``base.run_graph`` above ``STREAM_MIN_TASKS``).

The threshold is lowered here so that small graphs take the same path: each
piece goes to the engine as soon as the depth-first walk made it, every piece
is held until the last is in, and nothing stays behind afterwards.
"""

from __future__ import annotations

import gc
import time

import pytest

import shmdask
import shmdask.array as da
from shmdask import base
from shmdask.distributed import Client
from shmdask.graph import CycleError


def inc(x):
    return x + 1


def add(x, y):
    return x + y


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch):
    monkeypatch.setattr(base, "STREAM_MIN_TASKS", 10)


def _tree(leaves: int):
    level = [shmdask.delayed(inc)(i) for i in range(leaves)]
    while len(level) > 1:
        level = [shmdask.delayed(add)(*level[i:i + 2]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


@pytest.fixture(scope="module")
def cluster(each_cluster):
    return each_cluster


@pytest.fixture
def client(cluster):
    with Client(cluster, set_as_default=False) as c:
        yield c
    gc.collect()
    deadline = time.time() + 5
    while (cluster.engine.data or cluster.engine.state.tasks) and time.time() < deadline:
        time.sleep(0.01)
    # nothing held: the pieces' holds and the compute's own wants are all let go
    assert not cluster.engine.data, list(cluster.engine.data)[:5]
    assert not cluster.engine.state.tasks, list(cluster.engine.state.tasks)[:5]


@pytest.fixture
def pieces(monkeypatch):
    """The size of each piece sent, in order (small pieces, so there are many)."""
    sizes = []
    real = base.order_pieces

    def counting(dsk, keys, **kwargs):
        for piece in real(dsk, keys, first=8, largest=64, **kwargs):
            sizes.append(len(piece[0]))
            yield piece

    monkeypatch.setattr(base, "order_pieces", counting)
    return sizes


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_local_schedulers_run_a_graph_in_pieces(scheduler, pieces):
    assert _tree(300).compute(scheduler=scheduler) == sum(range(1, 301))
    assert len(pieces) > 3 and sum(pieces) == 599
    x = da.ones(1000, chunks=10)
    assert float((x + 1).sum().compute(scheduler=scheduler)) == 2000.0


def test_a_client_runs_a_graph_in_pieces(client, pieces):
    assert _tree(300).compute(scheduler=client) == sum(range(1, 301))
    assert len(pieces) > 3 and sum(pieces) == 599
    # several outputs, one of them an intermediate result of another
    t = _tree(40)
    leaf = shmdask.delayed(inc)(1)
    total = shmdask.delayed(add)(t, leaf)
    assert shmdask.compute(total, t, leaf, scheduler=client) == (
        sum(range(1, 41)) + 2, sum(range(1, 41)), 2)


def test_arrays_in_pieces_are_finalized_on_views_into_private_copies(client, pieces):
    x = da.arange(400, chunks=10)
    a, total = shmdask.compute(x + 1, (x + 1).sum(), scheduler=client)
    assert len(pieces) > 1
    assert a.tolist() == list(range(1, 401)) and int(total) == sum(range(1, 401))
    a[0] = -1  # the concatenation is the client's own copy, not the freed shared memory
    assert a[0] == -1


def test_pieces_use_persisted_data(client):
    x = da.ones(200, chunks=10)
    y = client.persist(x + 1)
    assert float((y * 2).sum().compute(scheduler=client)) == 800.0
    del y


@pytest.mark.parametrize("where", ["threads", "client"])
def test_pieces_of_a_dask_graph_take_the_persisted_keys_it_names(client, where):
    # dask's graph keeps only references to a persisted array's keys: the
    # pieces bring their data in as the client's Futures, as a whole graph does
    dask_array = pytest.importorskip("dask.array")
    x = dask_array.ones((60, 60), chunks=10)  # past STREAM_MIN_TASKS
    (px,) = client.persist([x + 1])
    expected = float((x + 1).T.sum().compute(scheduler="sync"))
    sched = client if where == "client" else where
    assert float(shmdask.compute(px.T.sum(), scheduler=sched)[0]) == expected
    del px


def test_a_task_error_in_a_piece_is_raised(client):
    def fail(x):
        raise ValueError("no")

    bad = shmdask.delayed(fail)(_tree(50))
    with pytest.raises(ValueError, match="no"):
        shmdask.compute(bad, scheduler=client)


@pytest.mark.parametrize("scheduler", ["threads", "client"])
def test_a_cycle_found_half_way_is_an_error_and_leaves_nothing(scheduler, client):
    dsk = {("x", i): (inc, i) for i in range(50)}
    dsk.update({"a": (add, "b", ("x", 3)), "b": (add, "a", ("x", 4))})
    dsk["out"] = (sum, [*(("x", i) for i in range(50)), "a"])
    with pytest.raises(CycleError):
        shmdask.get(dsk, "out", scheduler=client if scheduler == "client" else scheduler)


@pytest.mark.parametrize("sync", [True, False])
def test_get_local_takes_pieces_without_a_progress_bar(sync):
    from shmdask.graph import order_pieces
    from shmdask.scheduler.local import get_local

    dsk = {"a": 1, "b": (inc, "a"), "c": (add, "a", "b")}
    pieces = order_pieces(dsk, ["c"])
    assert get_local({}, {}, ["c"], None, sync=sync, pieces=pieces) == {"c": 3}
