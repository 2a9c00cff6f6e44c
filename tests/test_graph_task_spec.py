"""dask's task-spec nodes in shmdask.graph: dependencies, culling, fusion, order
and execution, on every scheduler; unknown node types are refused by name."""

from __future__ import annotations

import operator

import pytest

from shmdask.graph import (
    UnknownNodeError,
    cull,
    dependencies_of,
    execute_task,
    fuse_linear,
    key_references,
    node_kind,
    order,
)

spec = pytest.importorskip("dask._task_spec")
from dask._task_spec import (  # noqa: E402
    Alias,
    DataNode,
    Dict,
    GraphNode,
    List,
    Set,
    Task,
    TaskRef,
    Tuple,
    execute_graph,
)

import shmdask  # noqa: E402


def inc(x):
    return x + 1


def pair(a, b=None, **kw):
    return (a, b, kw)


def mixed_graph() -> dict:
    """Every node kind, nested containers, kwargs, and a classic tuple task."""
    return {
        "a": DataNode("a", 1),
        "b": Task("b", inc, TaskRef("a")),
        "c": Alias("c", "b"),
        "d": Task("d", pair, List(TaskRef("a"), Tuple(TaskRef("c"), 5)),
                  b=Dict(k=TaskRef("b"), s="a"), extra=Set(TaskRef("a"), 7)),
        "e": (operator.add, "b", "c"),  # classic: strings naming keys are keys
        "f": Task("f", operator.add, TaskRef("e"), Task(None, inc, TaskRef("a"))),
        "g": Task("g", pair, "a", [("b", 1), TaskRef("a")]),  # spec: these are data
    }


def test_dependencies_follow_the_spec():
    dsk = mixed_graph()
    deps = dependencies_of(dsk)
    assert deps == {"a": set(), "b": {"a"}, "c": {"b"}, "d": {"a", "b", "c"},
                    "e": {"b", "c"}, "f": {"a", "e"}, "g": set()}
    # each reference counts, for fusion's "refers to it once"
    assert sorted(key_references(dsk["d"], dsk)) == ["a", "a", "b", "c"]
    assert dsk["d"].dependencies == frozenset(deps["d"])  # dask agrees


def test_node_kinds():
    assert node_kind(Task("x", inc, 1)) == "task"
    assert node_kind(List(1, 2)) == "task"
    assert node_kind(TaskRef("x")) == "ref"
    assert node_kind(Alias("x", "y")) == "alias"
    assert node_kind(DataNode("x", 3)) == "data"
    for plain in (1, "x", ("x", 1), [1], {"a": 1}, None, inc):
        assert node_kind(plain) is None


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_execution_matches_dask(scheduler):
    dsk = mixed_graph()
    expected = execute_graph(dict((k, v) for k, v in dsk.items() if k != "e")
                             | {"e": Task("e", operator.add, TaskRef("b"), TaskRef("c"))})
    keys = list(dsk)
    got = shmdask.get(dsk, keys, scheduler=scheduler)
    assert dict(zip(keys, got, strict=True)) == {k: expected[k] for k in keys}
    assert got[keys.index("g")] == ("a", [("b", 1), TaskRef("a")], {})
    assert got[keys.index("d")] == ([1, (2, 5)], {"k": 2, "s": "a"}, {"extra": {1, 7}})


def test_execute_task_evaluates_nodes_inside_classic_tasks():
    # dask reads a TaskRef inside a classic task as a reference; so do we
    assert execute_task((pair, TaskRef("x"), [Alias("y", "x")]), {"x": 4}) == (4, [4], {})
    assert execute_task(DataNode("k", "x"), {"x": 4}) == "x"


def test_cull_keeps_what_is_needed_and_names_missing_keys():
    dsk = mixed_graph()
    culled, deps = cull(dsk, ["c"])
    assert set(culled) == {"a", "b", "c"} and deps["c"] == {"b"}
    with pytest.raises(KeyError, match="'y' depends on key 'gone', which is not in"):
        cull({"y": Task("y", inc, TaskRef("gone"))}, ["y"])
    missing: list = []
    culled, _ = cull({"y": Task("y", inc, TaskRef("gone"))}, ["y"], missing=missing)
    assert missing == ["gone"]


def test_a_reference_to_nothing_is_a_clear_error():
    with pytest.raises(KeyError, match="'gone'"):
        shmdask.get({"y": Task("y", inc, TaskRef("gone"))}, "y", scheduler="sync")


def test_linear_chains_of_nodes_fuse_into_one_nested_task():
    dsk = {"a": DataNode("a", 1), "b": Task("b", inc, TaskRef("a")),
           "c": Alias("c", "b"), "d": Task("d", inc, TaskRef("c"))}
    fused, deps = fuse_linear(dsk, ["d"])
    assert list(fused) == ["d"] and deps == {"d": set()}
    assert isinstance(fused["d"], Task) and fused["d"].key == "d"
    assert execute_task(fused["d"], {}) == 3
    assert shmdask.get(dsk, "d", scheduler="sync") == 3


def test_a_node_referring_twice_is_not_fused():
    dsk = {"a": Task("a", inc, 1), "b": Task("b", operator.add, TaskRef("a"), TaskRef("a"))}
    fused, _ = fuse_linear(dsk, ["b"])
    assert set(fused) == {"a", "b"}
    assert shmdask.get(dsk, "b", scheduler="sync") == 4


def test_classic_and_spec_tasks_are_not_fused_into_each_other():
    dsk = {"a": (inc, 1), "b": Task("b", inc, TaskRef("a")),
           "c": (inc, "b")}
    fused, _ = fuse_linear(dsk, ["c"])
    assert set(fused) == {"a", "b", "c"}  # a classic tuple inside a node would be data
    # but a classic task whose reference hides in a node is not fused either
    dsk2 = {"a": (inc, 1), "b": (pair, TaskRef("a"))}
    assert set(fuse_linear(dsk2, ["b"])[0]) == {"a", "b"}
    assert shmdask.get(dsk, "c", scheduler="sync") == 4
    assert shmdask.get(dsk2, "b", scheduler="sync") == (2, None, {})


def test_order_runs_dependencies_first():
    dsk = mixed_graph()
    prio = order(dsk, dependencies_of(dsk))
    for k, ds in dependencies_of(dsk).items():
        assert all(prio[d] < prio[k] for d in ds)


class SideEffectNode(GraphNode):
    """A GraphNode type shmdask does not know: it must not run, nor be a result."""

    __slots__ = ()

    def __init__(self, key):
        self.key = key
        self._dependencies = frozenset()

    def __call__(self, values=()):
        return "ran"


class MyTask(Task):
    __slots__ = ()


@pytest.mark.parametrize("node", [SideEffectNode("x"), MyTask("x", inc, 1)])
def test_an_unknown_node_type_is_an_error_naming_it(node, any_scheduler):
    for dsk in ({"x": node}, {"x": Task("x", inc, node)}, {"x": (inc, node)}):
        with pytest.raises(UnknownNodeError, match=type(node).__qualname__):
            shmdask.get(dsk, "x", scheduler=any_scheduler)
    assert issubclass(UnknownNodeError, TypeError)


def test_task_objects_are_never_results(any_scheduler):
    """What dask hands a scheduler runs: no ``<Task ...>`` object comes back."""
    dask = pytest.importorskip("dask")
    dd = pytest.importorskip("dask.dataframe")
    import pandas as pd

    pdf = pd.DataFrame({"a": [1, 2, 3, 4] * 5, "b": range(20)})
    df = dd.from_pandas(pdf, npartitions=3)
    s = df.groupby("a").b.sum()
    total = dask.delayed(sum)([dask.delayed(inc)(i) for i in range(4)])
    for coll, expected in ((s, pdf.groupby("a").b.sum()), (total, 10)):
        dsk = dict(coll.__dask_graph__())
        keys = coll.__dask_keys__()
        assert any(isinstance(v, GraphNode) for v in dsk.values())
        out = shmdask.get(dsk, keys, scheduler=any_scheduler)
        values = list(out) if isinstance(out, tuple) else [out]
        assert not any(isinstance(v, GraphNode | TaskRef) for v in values)
        result = pd.concat(values) if isinstance(values[0], pd.Series) else values[0]
        if isinstance(expected, pd.Series):
            pd.testing.assert_series_equal(result.sort_index(), expected)
        else:
            assert result == expected
