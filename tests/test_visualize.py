"""Tests for task-graph drawing (shmdask.visualize): layout alone, then rendering."""

from __future__ import annotations

import functools
import importlib
import itertools
from operator import add

import pytest
from conftest import run_in_kernel
from matplotlib.figure import Figure

from shmdask.visualize import graph_structure, layout_graph, visualize, visualize_graph


def inc(x):
    return x + 1


def dec(x):
    return x - 1


def chains(n, tok="8a1f2b3c4d"):
    """n independent inc/dec/add diamonds over literal inputs, summed at the end."""
    dsk = {}
    for i in range(n):
        dsk[f"x-{i}"] = i
        dsk[(f"inc-{tok}", i)] = (inc, f"x-{i}")
        dsk[(f"dec-{tok}", i)] = (dec, f"x-{i}")
        dsk[(f"add-{tok}", i)] = (add, (f"inc-{tok}", i), (f"dec-{tok}", i))
    dsk["sum-0123456789abcdef"] = (sum, [(f"add-{tok}", i) for i in range(n)])
    return dsk


def crossings(edges, pos, axis):
    """Number of crossing pairs among edges between the same two layers."""
    count = 0
    other = 1 - axis
    for (u1, v1), (u2, v2) in itertools.combinations(edges, 2):
        if pos[u1][other] != pos[u2][other] or pos[v1][other] != pos[v2][other]:
            continue
        a = pos[u1][axis] - pos[u2][axis]
        b = pos[v1][axis] - pos[v2][axis]
        count += a * b < 0
    return count


# ----------------------------------------------------------------------------- structure


def test_structure_task_and_data_nodes():
    dsk = {
        "a": 1,
        "b": (inc, "a"),
        "c": "b",  # alias
        "d": ["b", "c"],  # list of keys
        "e": (functools.partial(add, 1), "d"),
        "f": (lambda x: x, "e"),
    }
    nodes, edges, labels = graph_structure(dsk)
    assert ("task", "a") not in nodes and ("data", "a") in nodes  # literal: data only
    assert labels[("task", "b")] == "inc"
    assert (("task", "b"), ("data", "b")) in edges
    assert (("data", "a"), ("task", "b")) in edges
    assert ("task", "c") not in nodes and (("data", "b"), ("data", "c")) in edges
    assert labels[("task", "d")] == "list"
    assert {(("data", "b"), ("task", "d")), (("data", "c"), ("task", "d"))} <= set(edges)
    assert labels[("task", "e")] == "add"  # partial: the inner function's name
    assert labels[("task", "f")] == "f"  # a lambda says nothing: the key's name


def test_persisted_values_are_data_only():
    from shmdask.base import Literal

    nodes, edges, _ = graph_structure({"a-aaaaaaaa": (Literal(3),), "b": (inc, "a-aaaaaaaa")})
    assert ("task", "a-aaaaaaaa") not in nodes and ("data", "a-aaaaaaaa") in nodes
    assert (("data", "a-aaaaaaaa"), ("task", "b")) in edges


def test_data_labels_are_short():
    _, _, labels = graph_structure(chains(2))
    assert labels[("data", ("inc-8a1f2b3c4d", 1))] == "inc (1)"
    assert labels[("data", "sum-0123456789abcdef")] == "sum"
    two_tokens = {"inc-aaaaaaaaaa": 1, "inc-bbbbbbbbbb": 2}
    _, _, labels = graph_structure(two_tokens)
    assert {labels[("data", k)] for k in two_tokens} == {"inc#1", "inc#2"}


def test_private_wrapper_functions_take_the_key_name():
    def _call_with_kwargs(f, args, kwargs):
        return f(*args, **kwargs)

    _, _, labels = graph_structure({"load-abcdef0123": (_call_with_kwargs, inc, [1], {})})
    assert labels[("task", "load-abcdef0123")] == "load"


# ----------------------------------------------------------------------------- layout


def test_layers_respect_dependencies_tb():
    dsk = chains(5)
    pos = layout_graph(dsk, rankdir="TB")
    nodes, edges, _ = graph_structure(dsk)
    assert set(pos) == set(nodes)
    for u, v in edges:
        assert pos[u][1] > pos[v][1], (u, v)  # every edge points down
    # layers are whole numbers; a task's output box sits right below it
    for key, comp in dsk.items():
        if isinstance(comp, tuple):
            assert pos[("task", key)][1] - pos[("data", key)][1] == 1
    # nodes in one layer do not overlap
    by_layer = {}
    for x, y in pos.values():
        by_layer.setdefault(y, []).append(x)
    for xs in by_layer.values():
        xs.sort()
        assert all(b - a >= 1 - 1e-9 for a, b in zip(xs, xs[1:], strict=False))


def test_lr_swaps_axes():
    dsk = chains(3)
    tb = layout_graph(dsk, "TB")
    lr = layout_graph(dsk, "LR")
    for n, (x, y) in tb.items():
        assert lr[n] == pytest.approx((-y, -x))
    nodes, edges, _ = graph_structure(dsk)
    for u, v in edges:
        assert lr[u][0] < lr[v][0]  # every edge points right


def test_bt_and_rl_mirror():
    dsk = chains(2)
    tb, lr = layout_graph(dsk, "TB"), layout_graph(dsk, "LR")
    bt, rl = layout_graph(dsk, "BT"), layout_graph(dsk, "RL")
    for n in tb:
        assert bt[n] == pytest.approx((tb[n][0], -tb[n][1]))
        assert rl[n] == pytest.approx((-lr[n][0], lr[n][1]))


def test_literal_inputs_sit_above_their_consumer():
    dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "b"), "d": (inc, "c"), "k": 5, "e": (add, "d", "k")}
    pos = layout_graph(dsk)
    assert pos[("data", "k")][1] == pos[("task", "e")][1] + 1
    assert pos[("data", "a")][1] == 0


def test_chains_run_straight():
    """A node sits right above the node it alone feeds (coordinate assignment)."""
    pos = layout_graph({"a": 1, "b": (inc, "a"), "c": (inc, "b"), "d": (dec, "a")})
    assert pos[("data", "b")][0] == pytest.approx(pos[("task", "b")][0])
    assert pos[("task", "c")][0] == pytest.approx(pos[("data", "b")][0])
    # 'a' feeds two tasks: it sits midway between them
    mid = (pos[("task", "b")][0] + pos[("task", "d")][0]) / 2
    assert pos[("data", "a")][0] == pytest.approx(mid)


def test_barycenter_sweeps_untangle_crossings():
    # inputs listed in an order that crosses every edge if kept as given
    n = 6
    dsk = {f"x-{i}": i for i in range(n)}
    for i in range(n):
        dsk[f"y-{i}"] = (inc, f"x-{n - 1 - i}")
    for i in range(n):
        dsk[f"z-{i}"] = (inc, f"y-{(i * 5) % n}")
    nodes, edges, _ = graph_structure(dsk)
    pos = layout_graph(dsk)
    assert crossings(edges, pos, axis=0) == 0


def test_cycle_is_a_clear_error():
    with pytest.raises(ValueError, match="cycle"):
        layout_graph({"a": (inc, "b"), "b": (inc, "a")})


def test_bad_rankdir_and_bad_graph():
    with pytest.raises(ValueError, match="rankdir"):
        layout_graph({"a": 1}, rankdir="tb")
    with pytest.raises(ValueError, match="rankdir"):
        visualize_graph({"a": 1}, rankdir="sideways")
    with pytest.raises(TypeError, match="mapping"):
        visualize_graph([("a", 1)])


def test_empty_graph():
    assert layout_graph({}) == {}
    assert isinstance(visualize_graph({}), Figure)


# ----------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("ext", ["png", "svg", "pdf"])
@pytest.mark.parametrize("rankdir", ["TB", "LR", "RL"])
def test_render_to_file(tmp_path, ext, rankdir):
    path = tmp_path / f"graph.{ext}"
    fig = visualize_graph(chains(4), filename=path, rankdir=rankdir)
    assert isinstance(fig, Figure)
    assert path.exists() and path.stat().st_size > 500
    if ext == "png":
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if ext == "svg":
        assert b"<svg" in path.read_bytes()[:2000]


def test_rendered_figure_holds_every_node_and_label():
    dsk = chains(3)
    fig = visualize_graph(dsk)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    nodes, edges, labels = graph_structure(dsk)
    assert len(texts) == len(nodes)
    assert texts.count("inc") == 3 and "sum" in texts and "inc (2)" in texts
    by_label = {c.get_label(): c for c in ax.collections}
    n_tasks = sum(1 for n in nodes if n[0] == "task")
    assert len(by_label["task"].get_offsets()) == n_tasks
    assert len(by_label["data"].get_offsets()) == len(nodes) - n_tasks
    assert len(by_label["edges"].get_segments()) == len(edges)  # one polyline each
    assert len(by_label["arrowheads"].get_paths()) == len(edges)


def test_too_big_graph_is_refused_quickly():
    dsk = {f"x-{i}": (inc, i) for i in range(2001)}
    with pytest.raises(ValueError, match=r"2001 tasks.*max_nodes=2000.*smaller graph"):
        visualize_graph(dsk)
    with pytest.raises(ValueError, match="9 tasks"):
        visualize_graph(chains(2), max_nodes=8)


def test_bad_extension_names_it(tmp_path):
    with pytest.raises(ValueError, match=r"'\.jpgg'"):
        visualize_graph(chains(1), filename=tmp_path / "g.jpgg")
    with pytest.raises(ValueError, match="extension"):
        visualize_graph(chains(1), filename=tmp_path / "noext")


def test_large_graph_renders(tmp_path):
    dsk = chains(499)  # 1997 keys, ~3500 nodes: labels shrink or vanish, nothing breaks
    path = tmp_path / "big.png"
    visualize_graph(dsk, filename=path)
    assert path.stat().st_size > 1000


def test_notebook_returns_inline_image(monkeypatch):
    vis = importlib.import_module("shmdask.visualize")  # the module, not the function

    monkeypatch.setattr(vis, "in_notebook", lambda: True)
    img = visualize_graph(chains(1))
    from IPython.display import Image

    assert isinstance(img, Image)
    assert img.data[:8] == b"\x89PNG\r\n\x1a\n"


def test_visualize_merges_graphs_and_collections(tmp_path):
    class Coll:
        def __shmdask_graph__(self):
            return {"b": (inc, "a")}

    fig = visualize({"a": 1}, Coll(), filename=tmp_path / "m.png")
    assert {t.get_text() for t in fig.axes[0].texts} == {"a", "b", "inc"}
    with pytest.raises(TypeError, match="int"):
        visualize(3)


def test_shmdask_visualize_on_delayed(tmp_path):
    import shmdask

    x = shmdask.delayed(inc)(1)
    y = shmdask.delayed(add)(x, shmdask.delayed(dec)(x))
    path = tmp_path / "delayed.png"
    shmdask.visualize(y, filename=str(path))
    assert path.stat().st_size > 500
    # the submodule shmdask.visualize is now imported and bound on the package:
    # calling it must still draw collections
    fig = shmdask.visualize(y, filename=str(tmp_path / "again.svg"))
    assert {"inc", "dec", "add"} <= {t.get_text() for t in fig.axes[0].texts}
    assert y.visualize() is not None


def test_long_edges_bend_around_nodes():
    """a feeds b, c and d; the edges a->c and a->d skip layers and must not run
    straight through b's and c's nodes."""
    dsk = {"a": (inc, 1), "b": (inc, "a"), "c": (add, "a", "b"), "d": (add, "a", "c")}
    fig = visualize_graph(dsk)
    (edges,) = [c for c in fig.axes[0].collections if c.get_label() == "edges"]
    pos = layout_graph(dsk)
    polylines = [p for p in edges.get_segments() if len(p) > 2]
    assert polylines  # long edges were routed through intermediate layers
    others = [xy for n, xy in pos.items() if n not in (("data", "a"),)]
    for line in polylines:
        for x, y in line[1:-1]:  # bends lie beside every real node of their layer
            assert all(abs(x - ox) >= 0.5 for ox, oy in others if oy == y)


def test_in_a_real_jupyter_kernel_shows_png():
    outputs = run_in_kernel(
        "from operator import add\n"
        "from shmdask.visualize import visualize_graph\n"
        "visualize_graph({'a': 1, 'b': (add, 'a', 1)})\n"
    )
    (result,) = [o for o in outputs if o["output_type"] == "execute_result"]
    assert "image/png" in result["data"]
