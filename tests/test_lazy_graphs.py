"""Huge collections' graphs read lazily (``__shmdask_lazy_graph__``).

An Array's layers (``LayeredGraph``) and a Delayed's inputs (``DelayedGraph``)
write their tasks out as a walk from the outputs reads them, so the first
piece of a huge graph is given out before the rest of it exists.  Read in
full, both are the graph ``__shmdask_graph__`` makes.
"""

from __future__ import annotations

import operator

import numpy as np
import pytest

import shmdask
import shmdask.array as da
from shmdask import base
from shmdask.array.layers import LayeredGraph, lazy_graph
from shmdask.delayed import Delayed, DelayedGraph, delayed
from shmdask.graph import order_pieces


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def _tree(leaves: int) -> Delayed:
    level = [delayed(inc)(i) for i in range(leaves)]
    while len(level) > 1:
        level = [delayed(add)(*level[i:i + 2]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


def _arrays() -> list:
    x = da.ones((40, 30), chunks=(5, 10))
    y = da.arange(1200, chunks=100).reshape(40, 30).rechunk((10, 5))
    return [(x + 1).sum(), (np.sin(x) * 2 + y).sum(axis=0), x + x.T.T, y[3:17, ::2],
            x.mean(axis=1), da.from_array(np.arange(50.0), chunks=7).cumsum()]


@pytest.mark.parametrize("index", range(6))
def test_a_layered_graph_read_in_full_is_the_materialized_graph(index):
    a = _arrays()[index]
    lazy = a.__shmdask_lazy_graph__(0)
    assert isinstance(lazy, LayeredGraph)
    whole = a.__shmdask_graph__()
    assert len(lazy) == len(whole)
    assert set(lazy) == set(whole)
    for key in whole:
        assert key in lazy
        assert repr(lazy[key]) == repr(whole[key])  # partials compare by identity


def test_a_layered_graph_knows_its_keys_without_writing_them_out():
    a = da.ones(100, chunks=10) + 1
    lazy = a.__shmdask_lazy_graph__(0)
    name = a.name
    assert (name, 9) in lazy and (name, 10) not in lazy and (name, -1) not in lazy
    assert (name, 1, 0) not in lazy and (name, 1.0) not in lazy and (name,) not in lazy
    assert name not in lazy and ["unhashable"] not in lazy
    with pytest.raises(KeyError):
        lazy[(name, 10)]
    assert a.__shmdask_lazy_graph__(11) is None  # small: the dict path serves
    assert a._dsk is None  # nothing above made the whole dict


def _one_block(i):
    return np.ones(1)


def test_the_first_piece_of_a_huge_array_is_given_out_before_the_rest_is_written():
    from shmdask.array.core import Array
    from shmdask.array.layers import BlockwiseLayer

    written = []

    def index_of(idx):  # a per-block literal: computed as each block's task is written
        written.append(idx)
        return idx[0]

    layer = BlockwiseLayer("counted", _one_block, (".0",), {".0": 20_000},
                           [("perblock", index_of)])
    total = Array({"counted": layer}, "counted", ((1,) * 20_000,), float).sum()
    lazy = total.__shmdask_lazy_graph__(1000)
    assert isinstance(lazy, LayeredGraph) and not written
    pieces = order_pieces(lazy, [(total.name,)], first=100)
    first, _, _ = next(pieces)
    assert len(first) >= 100
    assert len(written) < 1000  # most of the 20,000 blocks' tasks do not exist yet
    rest = sum(len(graph) for graph, _, _ in pieces)
    assert len(first) + rest == len(lazy) and len(written) == 20_000


def test_lazy_graph_counts_from_layer_sizes():
    a = (da.ones(100, chunks=10) + 1).sum()
    n = len(a.__shmdask_graph__())
    layers = a._layers
    assert lazy_graph(layers, {a.name}, n) is not None
    assert lazy_graph(layers, {a.name}, n + 1) is None


def test_a_delayed_graph_read_in_full_is_the_merged_graph():
    x = da.arange(30, chunks=10)
    fut_free = _tree(37)
    node = delayed(add)(fut_free, delayed(sum)([fut_free, 5]))
    mixed = delayed(operator.getitem)(delayed(list)((node, x.sum(), {"k": node})), 0)
    for root in (fut_free, node, mixed, node.real):
        lazy = DelayedGraph(root)
        whole = dict(root.__shmdask_graph__())
        assert dict(lazy) == whole


def test_a_delayed_graph_opens_a_node_only_when_its_key_is_read():
    root = _tree(64)
    lazy = DelayedGraph(root)
    task = lazy[root.key]
    assert task[0] is add and len(lazy._tasks) == 1
    assert all(k in lazy for k in task[1:])  # its inputs are known, unopened
    assert len(lazy._tasks) == 1 and len(lazy._nodes) == 2
    assert "no-such-key" not in lazy  # a miss merges the rest, then answers
    assert len(lazy._tasks) == 127 and not lazy._nodes


def test_a_delayed_graph_finds_a_key_no_input_declared():
    # "b" refers to "a" without depending on the Delayed that holds it
    a = Delayed("a", {"a": (inc, 1)})
    b = Delayed("b", {"b": (inc, "a")})
    root = delayed(add)(b, a)
    lazy = DelayedGraph(root)
    lazy[root.key]
    assert lazy["b"] == (inc, "a") and "a" in lazy
    assert base.get(lazy, root.key, scheduler="sync") == 5


def test_the_size_bound_of_a_delayed_never_undercounts():
    x = delayed(inc)(1)
    for _ in range(80):  # shared inputs: counted once per path, capped
        x = x + x
    assert x._size >= len(x.__shmdask_graph__()) == 81
    t = _tree(50)
    assert t._size == len(t.__shmdask_graph__()) == 99
    assert t.real._size == 100
    assert t.__shmdask_lazy_graph__(99) == t.__shmdask_graph__()  # merged already: as is
    t = _tree(50)
    assert t.__shmdask_lazy_graph__(100) is None
    assert isinstance(t.__shmdask_lazy_graph__(99), DelayedGraph)
    x = delayed(inc)(1)
    for _ in range(80):
        x = x + x
    assert x.__shmdask_lazy_graph__(1000) is None  # the bound is big, the graph is not


def test_blocks_of_one_graph_are_counted_once():
    x = da.ones(400, chunks=1)
    blocks = list(x.to_delayed())  # 400 Delayed sharing one 400-task graph
    total = delayed(sum)(blocks)
    assert total._size > 100_000  # the bound counts the shared graph per block
    assert total.__shmdask_lazy_graph__(1000) is None  # the count does not
    assert isinstance(total.__shmdask_lazy_graph__(401), DelayedGraph)


def test_the_first_piece_of_a_huge_delayed_is_given_out_before_the_rest_is_merged():
    root = _tree(4096)
    lazy = root.__shmdask_lazy_graph__(1000)
    assert isinstance(lazy, DelayedGraph)
    pieces = order_pieces(lazy, [root.key], first=50)
    first, _, _ = next(pieces)
    assert len(first) >= 50 and len(lazy._tasks) < 200
    assert sum(len(graph) for graph, _, _ in pieces) + len(first) == 8191


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_huge_collections_are_computed_without_their_whole_graph(monkeypatch, scheduler):
    monkeypatch.setattr(base, "STREAM_MIN_TASKS", 50)

    def refuse(self):
        raise AssertionError("the whole graph was made")

    x = da.ones(1000, chunks=10)
    total = (x + 1).sum()
    tree = _tree(300)
    monkeypatch.setattr(da.Array, "__shmdask_graph__", refuse)
    monkeypatch.setattr(Delayed, "__shmdask_graph__", refuse)
    assert float(total.compute(scheduler=scheduler)) == 2000.0
    assert tree.compute(scheduler=scheduler) == sum(range(1, 301))
    monkeypatch.undo()
    # small ones take the whole-graph path, as before
    assert _tree(10).compute(scheduler=scheduler) == sum(range(1, 11))


def test_a_huge_collection_on_a_client(monkeypatch, each_cluster):
    monkeypatch.setattr(base, "STREAM_MIN_TASKS", 50)
    from shmdask.distributed import Client

    with Client(each_cluster, set_as_default=False) as client:
        assert shmdask.compute(_tree(300), scheduler=client)[0] == sum(range(1, 301))
        x = da.ones(1000, chunks=10)
        assert float((x * 2).sum().compute(scheduler=client)) == 2000.0


def test_a_graph_union_reads_as_the_graphs_merged_in_order():
    first = {"a": 1, "b": (inc, "a")}
    second = DelayedGraph(delayed(add)(2, 3, dask_key_name="b"))
    union = base.GraphUnion([first, second])
    merged = {**first, **dict(DelayedGraph(delayed(add)(2, 3, dask_key_name="b")))}
    assert union["b"] == merged["b"] == (add, 2, 3)  # the later graph wins
    assert union["a"] == 1 and "a" in union and "z" not in union
    assert ["unhashable"] not in union
    with pytest.raises(KeyError):
        union[["unhashable"]]
    assert sorted(union) == sorted(merged) and len(union) == len(merged)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_huge_collections_computed_with_others_are_not_made_whole(monkeypatch, scheduler):
    monkeypatch.setattr(base, "STREAM_MIN_TASKS", 50)
    made = []
    real_array, real_delayed = da.Array.__shmdask_graph__, Delayed.__shmdask_graph__

    def array_graph(self):
        made.append(self.name)
        return real_array(self)

    def delayed_graph(self):
        made.append(self.key)
        return real_delayed(self)

    monkeypatch.setattr(da.Array, "__shmdask_graph__", array_graph)
    monkeypatch.setattr(Delayed, "__shmdask_graph__", delayed_graph)
    x = da.ones(1000, chunks=10)
    total, tree, small = (x + 1).sum(), _tree(300), delayed(inc)(1)
    mean = da.ones(20, chunks=10).mean()  # small: its graph is made whole, as before
    got = shmdask.compute(total, tree, small, mean, scheduler=scheduler)
    assert got == (2000.0, sum(range(1, 301)), 2, 1.0)
    assert total.name not in made and tree.key not in made
    assert small.key in made and mean.name in made
