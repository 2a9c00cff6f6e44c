"""Task-graph helpers (shmdask.graph), tested alone, and dask-compatibility of the spec."""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from operator import add, mul

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shmdask
from shmdask.graph import (
    CycleError,
    check_graph,
    cull,
    dependencies_of,
    execute_task,
    find_keys,
    flatten,
    fuse_linear,
    get_dependencies,
    is_key_shaped,
    is_task,
    key_split,
    order,
    order_pieces,
    reverse_dependencies,
    toposort,
)


def inc(x):
    return x + 1


def ident(*args):
    return args


def total(*args):
    return sum(args)


# -- spec basics --------------------------------------------------------------


def test_is_task_and_key_shape():
    assert is_task((inc, 1))
    assert not is_task(())
    assert not is_task(("x", 1))
    assert not is_task([inc, 1])
    assert is_key_shaped("x")
    assert is_key_shaped(("x", 0, 3))
    assert not is_key_shaped(("x", 0.5))
    assert not is_key_shaped((1, 2))
    assert not is_key_shaped(3)


def test_dependencies_nested_tasks_lists_and_tuple_keys():
    dsk = {
        "a": 1,
        ("b", 0): 2,
        ("b", 1): 3,
        "c": (add, "a", (inc, ("b", 0))),
        "d": (sum, [("b", 0), [("b", 1), "c"]]),
        "e": (ident, "not-a-key", ("zz", 1), 5),
    }
    assert get_dependencies(dsk, "a") == set()
    assert get_dependencies(dsk, "c") == {"a", ("b", 0)}
    assert get_dependencies(dsk, "d") == {("b", 0), ("b", 1), "c"}
    # strings and tuples that name no key are literals
    assert get_dependencies(dsk, "e") == set()
    deps = dependencies_of(dsk)
    assert deps["d"] == {("b", 0), ("b", 1), "c"}
    dependents = reverse_dependencies(deps)
    assert dependents[("b", 0)] == {"c", "d"}
    assert dependents["d"] == set()


def test_dependencies_follow_dask_rules_for_containers():
    dsk = {"x": 1, "y": 2}
    # a non-task tuple is looked into (as dask does), a dict is a literal
    assert find_keys((ident, ("x", 2)), dsk) == {"x"}
    assert find_keys((ident, {"x", "y"}), dsk) == {"x", "y"}
    assert find_keys((ident, {"a": "x"}), dsk) == set()
    assert find_keys(("x", (inc, "y")), dsk) == {"x", "y"}
    # unhashable literals are fine
    assert find_keys((ident, [{"a": [1]}, {1, 2}]), dsk) == set()


def test_execute_task():
    data = {"x": 1, ("y", 0): 10}
    assert execute_task((add, "x", ("y", 0)), data) == 11
    assert execute_task((add, "x", (inc, "x")), data) == 3
    assert execute_task(["x", [("y", 0), "z"]], data) == [1, [10, "z"]]
    assert execute_task((ident, ("x", 2)), data) == ((1, 2),)
    assert execute_task((ident, {"k": "x"}), data) == ({"k": "x"},)
    assert execute_task("x", data) == 1
    assert execute_task("plain", data) == "plain"
    assert execute_task(42, data) == 42


def test_key_split():
    assert key_split("inc-8a1f2b3c4d5e6f708192a3b4c5d6e7f8") == "inc"
    assert key_split(("random_sample-ab12cd34ef567890", 3)) == "random_sample"
    assert key_split("my-long-name-0123456789abcdef") == "my-long-name"
    assert key_split("x-1") == "x"
    assert key_split("x") == "x"
    assert key_split(("x", 1, 2)) == "x"


def test_key_split_remembers_a_bounded_number_of_names():
    from shmdask import graph

    for i in range(3 * graph._GROUPS_KEPT):  # unique names, as delayed keys are
        assert key_split(f"f{i % 7}-{i:032x}") == f"f{i % 7}"
    assert len(graph._groups) <= graph._GROUPS_KEPT
    assert key_split(("same-name-0123456789", 1)) == key_split(("same-name-0123456789", 2))


def test_flatten():
    assert list(flatten([1, [2, [3, [4]], []], 5])) == [1, 2, 3, 4, 5]
    assert list(flatten([("a", 0), [("a", 1)]])) == [("a", 0), ("a", 1)]
    assert list(flatten("x")) == ["x"]


# -- toposort, cycles, missing keys --------------------------------------------


def _assert_topological(dsk, keys):
    assert sorted(map(repr, keys)) == sorted(map(repr, dsk))
    position = {k: i for i, k in enumerate(keys)}
    for k, ds in dependencies_of(dsk).items():
        for d in ds:
            assert position[d] < position[k], (d, k)


def test_toposort_respects_dependencies():
    dsk = {"a": 1, "b": (inc, "a"), "c": (add, "a", "b"), "d": (sum, ["c", "b"]), "e": 5}
    _assert_topological(dsk, toposort(dsk))


def test_cycle_is_an_error_naming_its_keys():
    dsk = {"a": (inc, "c"), "b": (inc, "a"), "c": (inc, "b"), "x": 1, "y": (inc, "x")}
    with pytest.raises(CycleError) as info:
        toposort(dsk)
    assert isinstance(info.value, ValueError)
    assert set(info.value.cycle) == {"a", "b", "c"}
    for k in "abc":
        assert repr(k) in str(info.value)
    assert "'x'" not in str(info.value)


def test_self_cycle():
    with pytest.raises(CycleError) as info:
        toposort({"a": (inc, "a")})
    assert info.value.cycle == ["a"]


def test_cycle_through_get_names_the_keys():
    dsk = {("t", 0): (inc, ("t", 1)), ("t", 1): (inc, ("t", 0)), "z": (inc, ("t", 0))}
    with pytest.raises(CycleError, match=r"\('t', 0\)"):
        shmdask.get(dsk, "z", scheduler="sync")


def test_missing_requested_key_is_a_keyerror_naming_it():
    with pytest.raises(KeyError, match="'nope'"):
        check_graph({"x": 1}, ["x", "nope"])
    with pytest.raises(KeyError, match="'nope'"):
        shmdask.get({"x": 1}, "nope", scheduler="sync")
    with pytest.raises(KeyError, match=r"\('y', 3\)"):
        shmdask.get({"x": 1}, ["x", [("y", 3)]], scheduler="threads")


def test_string_argument_that_is_not_a_key_is_a_string():
    dsk = {"x": 1, "y": (ident, "x", "hello", ("hello", 1))}
    assert shmdask.get(dsk, "y", scheduler="sync") == (1, "hello", ("hello", 1))


# -- cull -----------------------------------------------------------------------


def test_cull_keeps_only_what_is_needed():
    dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "b"), "d": (inc, "a"), "e": 7}
    culled, deps = cull(dsk, ["c"])
    assert culled == {"a": 1, "b": (inc, "a"), "c": (inc, "b")}
    assert deps == {"a": set(), "b": {"a"}, "c": {"b"}}
    culled, _ = cull(dsk, ["c", "e"])
    assert set(culled) == {"a", "b", "c", "e"}


# -- fusion -----------------------------------------------------------------------


def test_fuse_linear_chain_gives_same_result_with_fewer_tasks():
    dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "b"), "d": (mul, "c", 10)}
    fused, deps = fuse_linear(dsk, ["d"])
    assert len(fused) < len(dsk)
    assert "d" in fused
    assert set(deps) == set(fused)
    for k in fused:
        assert deps[k] == find_keys(fused[k], fused)
    assert shmdask.get(fused, "d", scheduler="sync", optimize_graph=False) == 30
    assert shmdask.get(dsk, "d", scheduler="sync") == 30


def test_fuse_never_fuses_fan_in():
    dsk = {"a": (inc, 1), "b": (inc, 2), "c": (add, "a", "b")}
    fused, _ = fuse_linear(dsk, ["c"])
    assert fused == dsk


def test_fuse_never_fuses_away_requested_keys():
    dsk = {"a": (inc, 1), "b": (inc, "a"), "c": (inc, "b")}
    fused, _ = fuse_linear(dsk, ["b", "c"])
    assert "b" in fused and "c" in fused
    assert shmdask.get(fused, ["b", "c"], scheduler="sync", optimize_graph=False) == (3, 4)
    assert shmdask.get(dsk, ["b", "c"], scheduler="sync") == (3, 4)


def test_fuse_does_not_fuse_shared_results():
    dsk = {"a": (inc, 1), "b": (inc, "a"), "c": (inc, "a"), "d": (add, "b", "c")}
    fused, _ = fuse_linear(dsk, ["d"])
    assert "a" in fused  # two dependents: fusing would compute it twice


def test_fuse_substitutes_inside_lists_and_tuples():
    dsk = {"a": (inc, 1), "b": (ident, [7, ("a", 5)], {"k": "a"})}
    fused, deps = fuse_linear(dsk, ["b"])
    assert set(fused) == {"b"} and deps["b"] == set()
    # the dict is a literal: its "a" stays the string "a"
    assert shmdask.get(fused, "b", scheduler="sync") == ([7, (2, 5)], {"k": "a"})


def test_fuse_never_duplicates_a_task_referred_to_twice():
    calls = []

    def once():
        calls.append(1)
        return 3

    dsk = {"a": (once,), "b": (add, "a", ["a"][0]), "c": (ident, ["a", ("a", 1)])}
    fused, _ = fuse_linear({"a": dsk["a"], "b": dsk["b"]}, ["b"])
    assert "a" in fused
    assert shmdask.get({"a": dsk["a"], "b": dsk["b"]}, "b", scheduler="sync") == 6
    fused, _ = fuse_linear({"a": dsk["a"], "c": dsk["c"]}, ["c"])
    assert "a" in fused
    assert shmdask.get({"a": dsk["a"], "c": dsk["c"]}, "c", scheduler="sync") == ([3, (3, 1)],)
    assert len(calls) == 2


def test_fuse_chain_of_tuple_keys():
    dsk = {("b", 0): (inc, 1), ("b", 1): (inc, ("b", 0)), "c": (ident, [("b", 1), "b"])}
    fused, deps = fuse_linear(dsk, ["c"])
    assert list(fused) == ["c"] and deps == {"c": set()}
    assert execute_task(fused["c"], {}) == ([3, "b"],)


def test_fuse_inside_a_set():
    dsk = {"a": (inc, 1), "b": (sorted, {"a", 7})}
    fused, _ = fuse_linear(dsk, ["b"])
    assert len(fused) == 1
    assert execute_task(fused["b"], {}) == [2, 7]


def test_long_chain_fuses_and_runs_without_recursion_error():
    n = 3 * sys.getrecursionlimit()
    dsk = {"x0": 0}
    for i in range(1, n):
        dsk[f"x{i}"] = (inc, f"x{i - 1}")
    fused, _ = fuse_linear(dsk, [f"x{n - 1}"])
    assert len(fused) < n / 10
    assert shmdask.get(dsk, f"x{n - 1}", scheduler="sync") == n - 1
    assert shmdask.get(dsk, f"x{n - 1}", scheduler="threads") == n - 1


# -- order ------------------------------------------------------------------------


def _chain(name, n):
    dsk = {f"{name}0": (inc, 0)}
    for i in range(1, n):
        dsk[f"{name}{i}"] = (inc, f"{name}{i - 1}")
    return dsk


def test_order_finishes_one_chain_before_starting_another():
    dsk = {**_chain("a", 5), **_chain("b", 5)}
    prio = order(dsk)
    assert sorted(prio.values()) == list(range(10))
    a = sorted(prio[f"a{i}"] for i in range(5))
    b = sorted(prio[f"b{i}"] for i in range(5))
    assert a[-1] < b[0] or b[-1] < a[0]


def test_independent_tasks_run_in_the_order_they_were_asked_for():
    """Ties between outputs follow the keys' order (not their str(): ("x", 10)
    would come before ("x", 2)), whichever way round they are asked for."""
    from shmdask.base import prepare_graph

    dsk = {("x", i): (inc, i) for i in range(12)}
    dsk["total"] = (sum, [("x", 0), ("x", 1)])  # outputs of another size go by size
    for keys in ([("x", i) for i in range(12)], [("x", i) for i in reversed(range(12))]):
        _, _, priority = prepare_graph(dsk, [*keys, "total"], optimize=False)
        lone = [k for k in keys if k[1] > 1]  # x0 and x1 feed "total"
        assert sorted(lone, key=priority.__getitem__) == lone
        assert priority["total"] == max(priority.values())


def test_order_finishes_subtrees_of_a_reduction():
    # ((x0 + x1) + (x2 + x3)): each pair is summed before the next pair is loaded
    dsk = {f"x{i}": (inc, i) for i in range(4)}
    dsk.update({"s01": (add, "x0", "x1"), "s23": (add, "x2", "x3"), "t": (add, "s01", "s23")})
    prio = order(dsk)
    first, second = sorted([("x0", "x1", "s01"), ("x2", "x3", "s23")],
                           key=lambda g: prio[g[0]])
    assert max(prio[k] for k in first) < min(prio[k] for k in second)
    assert prio["t"] == 6


@st.composite
def random_dags(draw):
    n = draw(st.integers(1, 30))
    dsk = {}
    for i in range(n):
        deps = draw(st.lists(st.integers(0, max(i - 1, 0)), max_size=4)) if i else []
        key = ("k", i) if i % 3 == 0 else f"k{i}"
        names = [("k", d) if d % 3 == 0 else f"k{d}" for d in sorted(set(deps))]
        dsk[key] = (total, i, *names) if names else i
    return dsk


def _reference(dsk, key, memo):
    if key not in memo:
        comp = dsk[key]
        if is_task(comp):
            memo[key] = comp[0](*[_reference(dsk, a, memo) if a in dsk else a for a in comp[1:]])
        else:
            memo[key] = comp
    return memo[key]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(random_dags())
def test_order_is_a_permutation_respecting_dependencies(dsk):
    prio = order(dsk)
    assert sorted(prio.values()) == list(range(len(dsk)))
    assert set(prio) == set(dsk)
    _assert_topological(dsk, sorted(dsk, key=prio.__getitem__))
    _assert_topological(dsk, toposort(dsk))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(random_dags(), st.data())
def test_order_pieces_cull_and_order_in_run_order_pieces(dsk, data):
    keys = data.draw(st.lists(st.sampled_from(sorted(dsk, key=repr)), min_size=1,
                              max_size=3, unique=True))
    first = data.draw(st.integers(1, 5))
    pieces = list(order_pieces(dsk, keys, first=first, largest=8))
    culled, deps = cull(dsk, keys)
    merged_deps, prio, seen = {}, {}, []
    for n, (graph, dependencies, priorities) in enumerate(pieces):
        assert list(graph) == list(dependencies) == list(priorities)
        assert len(graph) <= min(first * 2**n, 8)  # small first, then doubling
        for k in graph:
            assert all(d in seen for d in dependencies[k])  # dependencies came earlier
            seen.append(k)
            assert graph[k] is dsk[k]
        merged_deps.update(dependencies)
        prio.update(priorities)
    assert merged_deps == deps  # exactly the culled graph
    assert sorted(prio.values()) == list(range(len(culled)))
    assert sorted(seen, key=prio.__getitem__) == seen


def test_order_pieces_finish_one_subtree_before_the_next():
    dsk = {f"x{i}": (inc, i) for i in range(4)}
    dsk.update({"s01": (add, "x0", "x1"), "s23": (add, "x2", "x3"), "t": (add, "s01", "s23")})
    ((graph, _, prio),) = order_pieces(dsk, ["t"])
    first, second = sorted([("x0", "x1", "s01"), ("x2", "x3", "s23")],
                           key=lambda g: prio[g[0]])
    assert max(prio[k] for k in first) < min(prio[k] for k in second)
    assert list(graph)[-1] == "t"


def test_order_pieces_find_cycles():
    dsk = {"a": (inc, "b"), "b": (inc, "c"), "c": (inc, "a"), "out": (inc, "a")}
    with pytest.raises(CycleError) as info:
        list(order_pieces(dsk, ["out"]))
    assert sorted(info.value.cycle) == ["a", "b", "c"]


def test_order_pieces_report_keys_the_graph_only_refers_to_as_cull_does():
    spec = pytest.importorskip("dask._task_spec")
    dsk = {"a": (inc, 1), "b": spec.Task("b", add, spec.TaskRef("a"), spec.TaskRef("held")),
           "out": spec.Task("out", inc, spec.TaskRef("b"))}
    with pytest.raises(KeyError, match="'held'"):
        list(order_pieces(dsk, ["out"]))
    missing: list = []
    deps = {}
    for graph, piece_deps, _ in order_pieces(dsk, ["out"], first=1, missing=missing):
        if "b" in graph:  # reported by the time the piece that needs it goes out
            assert missing == ["held"]
        deps.update(piece_deps)
    assert missing == ["held"]  # once
    assert deps == cull(dsk, ["out"], missing=[])[1]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(random_dags(), st.data())
def test_fused_random_graphs_give_same_results(dsk, data):
    keys = data.draw(st.lists(st.sampled_from(sorted(dsk, key=repr)), min_size=1,
                              max_size=3, unique=True))
    culled, deps = cull(dsk, keys)
    fused, fdeps = fuse_linear(culled, keys, deps)
    assert len(fused) <= len(culled)
    for k in keys:
        assert k in fused
    for k in fused:
        assert fdeps[k] == find_keys(fused[k], fused)
    memo = {}
    expected = tuple(_reference(dsk, k, memo) for k in keys)
    assert shmdask.get(fused, keys, scheduler="sync", optimize_graph=False) == expected
    assert shmdask.get(dsk, keys, scheduler="sync") == expected
    assert shmdask.get(dsk, keys, scheduler="threads") == expected


# -- compatibility with dask's own schedulers ---------------------------------------

RAW_GRAPHS = [
    ({"x": 1, "y": (inc, "x"), "z": (add, "x", "y")}, "z"),
    ({"x": 1, "y": (inc, (inc, (inc, "x")))}, "y"),
    ({"x": 1, "y": (sum, ["x", "x", (inc, "x")])}, "y"),
    ({("a", 0): 1, ("a", 1): 2, "b": (sum, [("a", 0), ("a", 1)])}, "b"),
    ({("a", 0, 0): 1, ("a", 0, 1): 2}, [[("a", 0, 0), ("a", 0, 1)]]),
    ({"x": 1, "y": (ident, (1, 2, "three"))}, "y"),
    ({"x": 1, "y": (ident, ("x", 2))}, "y"),
    ({"x": 1, "y": (ident, ("x", (inc, "x")))}, "y"),
    ({"x": 1, "y": ("x", 2)}, "y"),
    ({"x": 1, "y": (ident, {"a": "x", "b": ["x", 3]})}, "y"),
    ({"x": 1, "y": {"a": "x"}}, "y"),
    ({"x": 1, "y": (ident, [["x", ["x", (inc, "x")]]], "hello")}, "y"),
    ({"x": 1, "y": ["x", (inc, "x"), ["x"]]}, "y"),
    ({"x": 1, "y": "x", "z": (inc, "y")}, "z"),
    ({"x": 1, "y": (ident, "z", ("z", 1))}, "y"),
    ({("x", 1): 1, "y": (ident, [("x", 1), ("x", 2)])}, "y"),
    ({"x": 1, "y": (sorted, {"x", 5})}, "y"),
    ({"x": 1, "y": (inc, "x"), "z": (add, "y", 10)}, ["x", ["y", "z"]]),
]


def _dask_answers() -> list:
    """What dask's own schedulers return for RAW_GRAPHS (run in a subprocess)."""
    import dask.local
    import dask.threaded

    answers = []
    for dsk, keys in RAW_GRAPHS:
        expected = dask.local.get_sync(dsk, keys)
        assert dask.threaded.get(dsk, keys) == expected
        answers.append(expected)
    answers.append(dask.local.get_sync({"x": 1, "y": 2}, ["x", ["y"]]))
    return answers


@pytest.fixture(scope="module")
def dask_answers():
    # dask is imported in a child process: importing it here would change how
    # exceptions pickle for the rest of the test session
    if importlib.util.find_spec("dask") is None:
        pytest.skip("dask is not installed")
    here = os.path.dirname(os.path.abspath(__file__))
    code = ("import pickle, sys; sys.path.insert(0, sys.argv[1]); import test_graph; "
            "sys.stdout.buffer.write(pickle.dumps(test_graph._dask_answers()))")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(here)}
    out = subprocess.run([sys.executable, "-c", code, here], capture_output=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return pickle.loads(out.stdout)


@pytest.mark.parametrize("index", range(len(RAW_GRAPHS)))
def test_raw_graphs_match_dask(index, dask_answers):
    dsk, keys = RAW_GRAPHS[index]
    expected = dask_answers[index]
    for scheduler in ("sync", "threads"):
        for optimize in (True, False):
            got = shmdask.get(dsk, keys, scheduler=scheduler, optimize_graph=optimize)
            assert got == expected, (scheduler, optimize)
            assert type(got) is type(expected)


def test_get_with_key_lists_returns_tuples_like_dask(dask_answers):
    expected = dask_answers[-1]
    assert expected == (1, (2,))
    assert shmdask.get({"x": 1, "y": 2}, ["x", ["y"]], scheduler="sync") == expected


def test_dependencies_outside_the_graph_count_as_done():
    # an incremental graph whose tasks need keys a scheduler already holds
    dsk = {"b": (inc, "a"), "c": (inc, "b"), "d": (add, "c", "z")}
    deps = {"b": {"a"}, "c": {"b"}, "d": {"c", "z"}}
    assert toposort(dsk, deps) == ["b", "c", "d"]
    assert order(dsk, deps) == {"b": 0, "c": 1, "d": 2}
    assert reverse_dependencies(deps) == {"b": {"c"}, "c": {"d"}, "d": set()}
    fused, fdeps = fuse_linear(dsk, ["d"], deps)
    assert set(fused) == {"c", "d"} and fdeps["c"] == {"a"}
    assert execute_task(fused["c"], {"a": 1}) == 3


def test_fuse_linear_on_a_graph_without_edges_returns_copies():
    dsk = {("x", i): (inc, i) for i in range(5)}
    deps = {k: set() for k in dsk}
    out, out_deps = fuse_linear(dsk, list(dsk), deps)
    assert out == dsk and out is not dsk
    assert out_deps == deps and out_deps is not deps
    out_deps[("x", 0)].add("y")  # the caller's dependencies are not shared
    assert deps[("x", 0)] == set()
