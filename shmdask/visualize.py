"""Task-graph pictures, in the spirit of dask's graphviz drawings, with matplotlib only.

In: a task graph (dask's classic spec: ``key -> computation``). Out: a matplotlib
Figure -- or, inside a Jupyter kernel, an ``IPython.display.Image`` of its PNG so
it shows inline -- optionally written to a png/svg/pdf file.

What is drawn: every task key becomes a circle labelled with its function's name
and a box (its output data) labelled with the shortened key; edges run task ->
data -> dependent task. A key whose computation is a literal (or a persisted
value, ``(Literal(v),)``) is a box alone, a key that merely names another key is
an edge from box to box.

How it is laid out (``layout_graph``, pure and tested alone): nodes are put in
layers by dependency depth (the longest path from any source; inputs sit just
above their first consumer), so every edge
points down (``rankdir="TB"``) or right (``"LR"``); within a layer, a few sweeps
of the barycenter heuristic (sort nodes by the mean position of their
neighbours in the layers already placed, alternately downwards and upwards)
untangle most edge crossings. Plain layering without dummy nodes for long edges
keeps this linear-ish and fast enough for a couple of thousand tasks.

Why shaped so: no graphviz binary is available to shmdask (runtime deps are
numpy, cloudpickle, psutil, click and matplotlib), and a picture is only
useful for graphs a person can read, so graphs above ``max_nodes`` tasks are
refused with a clear message rather than rendered for a minute. Drawing uses a
Figure on an Agg canvas (never pyplot), so it is safe from any thread and leaves
the user's own matplotlib state alone.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Hashable, Mapping
from typing import Any

from shmdask.diagnostics.figure import check_filename, in_notebook, new_figure, png_bytes
from shmdask.graph import find_keys, is_task, key_split  # one meaning of "depends on"

Node = tuple[str, Hashable]  # ("task", key) or ("data", key)

RANKDIRS = ("TB", "LR", "BT", "RL")  # graphviz names: top-bottom, left-right, ...
_SWEEPS = 4
_HEX_TOKEN = re.compile(r"^[0-9a-f]{8,}$")


# --------------------------------------------------------------------------- structure


def _callable_name(func: Any) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__name__", None) or type(func).__name__
    return "lambda" if name == "<lambda>" else name


def task_label(key: Hashable, task: tuple) -> str:
    """The name drawn in a task's circle: its function's name; for private helpers
    that only wrap the real call (``_call_with_kwargs``, ``apply``, ``_build``...)
    and for lambdas, the group name of the key, which says more."""
    name = _callable_name(task[0])
    if name.startswith("_") or name in ("apply", "lambda"):
        return key_split(key)
    return name


class _Labeller:
    """Short data labels: ``'inc-8a1f...'`` -> ``'inc'`` or ``'inc#2'`` when several
    keys of group 'inc' exist; ``('x-ab12..', 0, 3)`` -> ``'x (0, 3)'``."""

    def __init__(self, keys):
        tokens: dict[str, dict[str, int]] = {}
        for key in keys:
            name = key[0] if isinstance(key, tuple) and key else key
            if isinstance(name, str):
                group, token = self._split(name)
                if token is not None:
                    seen = tokens.setdefault(group, {})
                    seen.setdefault(token, len(seen) + 1)
        self.tokens = tokens

    @staticmethod
    def _split(name: str) -> tuple[str, str | None]:
        group = key_split(name)
        rest = name[len(group) :].lstrip("-")
        if rest and name.startswith(group) and all(_HEX_TOKEN.match(w) for w in rest.split("-")):
            return group, rest
        return group, None

    def __call__(self, key: Hashable) -> str:
        if isinstance(key, tuple) and key:
            head = self._name(key[0])
            return f"{head} ({', '.join(map(str, key[1:]))})" if len(key) > 1 else head
        return self._name(key)

    def _name(self, name: Any) -> str:
        if not isinstance(name, str):
            return str(name)
        group, token = self._split(name)
        if token is None:
            return name
        numbers = self.tokens.get(group, {})
        return group if len(numbers) <= 1 else f"{group}#{numbers[token]}"


def graph_structure(dsk: Mapping) -> tuple[list[Node], list[tuple[Node, Node]], dict[Node, str]]:
    """Nodes, edges and labels of the picture of ``dsk`` (see module docstring)."""
    if not isinstance(dsk, Mapping):
        raise TypeError(
            f"a task graph must be a mapping key -> computation, got {type(dsk).__name__}"
        )
    label_data = _Labeller(dsk)
    position = {k: i for i, k in enumerate(dsk)}  # dependencies in graph order: stable layouts
    nodes: list[Node] = []
    edges: list[tuple[Node, Node]] = []
    labels: dict[Node, str] = {}
    for key, comp in dsk.items():
        data = ("data", key)
        deps = find_keys(comp, dsk)
        if is_task(comp) and not _is_wrapped_value(comp):
            task = ("task", key)
            nodes.append(task)
            labels[task] = task_label(key, comp)
            edges.append((task, data))
            edges.extend((("data", dep), task) for dep in sorted(deps, key=position.__getitem__))
        elif deps and _is_alias(comp, dsk):
            edges.append((("data", comp), data))
        elif deps:  # a list (or dict) of keys: gathered by an implicit task
            task = ("task", key)
            nodes.append(task)
            labels[task] = type(comp).__name__
            edges.append((task, data))
            edges.extend((("data", dep), task) for dep in sorted(deps, key=position.__getitem__))
        nodes.append(data)
        labels[data] = label_data(key)
    return nodes, edges, labels


def _is_wrapped_value(task: tuple) -> bool:
    """``(Literal(value),)``: how persisted results and wrapped values sit in a
    graph. It is data, not work, so it is drawn as a box alone."""
    from shmdask.base import Literal

    return len(task) == 1 and isinstance(task[0], Literal)


def _is_alias(comp: Any, dsk: Mapping) -> bool:
    try:
        return (type(comp) is str or type(comp) is tuple) and comp in dsk
    except TypeError:
        return False


# --------------------------------------------------------------------------- layout


def _layers(nodes: list[Node], edges: list[tuple[Node, Node]]) -> dict[Node, int]:
    """Longest path from a source, by Kahn's algorithm; ValueError on a cycle."""
    preds: dict[Node, list[Node]] = {n: [] for n in nodes}
    succs: dict[Node, list[Node]] = {n: [] for n in nodes}
    for u, v in edges:
        succs[u].append(v)
        preds[v].append(u)
    indegree = {n: len(p) for n, p in preds.items()}
    layer = dict.fromkeys(nodes, 0)
    ready = [n for n in nodes if indegree[n] == 0]
    seen = 0
    while ready:
        u = ready.pop()
        seen += 1
        for v in succs[u]:
            layer[v] = max(layer[v], layer[u] + 1)
            indegree[v] -= 1
            if indegree[v] == 0:
                ready.append(v)
    if seen < len(nodes):
        stuck = sorted((n[1] for n in nodes if indegree[n] > 0), key=repr)[:5]
        raise ValueError(f"task graph has a cycle; it runs through keys such as {stuck}")
    # pull inputs (literals) down to just above their first consumer, so a
    # constant used deep in the graph is not drawn far away at the top
    for n in nodes:
        if not preds[n] and succs[n]:
            layer[n] = min(layer[v] for v in succs[n]) - 1
    return layer


def _order_layers(
    rows: list[list[Node]], preds: dict[Node, list[Node]], succs: dict[Node, list[Node]]
) -> None:
    """Barycenter sweeps: reorder each layer in place by its neighbours' mean position."""
    pos: dict[Node, float] = {}

    def place(row: list[Node]) -> None:
        mid = (len(row) - 1) / 2
        for i, n in enumerate(row):
            pos[n] = i - mid

    for row in rows:
        place(row)
    for sweep in range(_SWEEPS):
        downwards = sweep % 2 == 0
        order = rows[1:] if downwards else rows[-2::-1]
        neighbours = preds if downwards else succs
        for row in order:
            keyed = []
            for i, n in enumerate(row):
                ns = neighbours[n]
                centre = sum(pos[m] for m in ns) / len(ns) if ns else pos[n]
                keyed.append((centre, i, n))
            keyed.sort(key=lambda t: (t[0], t[1]))
            row[:] = [n for _, _, n in keyed]
            place(row)


DUMMY_WIDTH = 0.4  # room a long edge takes when it passes through a layer


def _isotonic(values: list[float]) -> list[float]:
    """Least-squares non-decreasing fit of ``values`` (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in values:
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] > blocks[-1][0] * blocks[-2][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    out: list[float] = []
    for total, count in blocks:
        out.extend([total / count] * int(count))
    return out


def _assign_coordinates(rows: list[list], preds: dict, succs: dict) -> dict:
    """Positions along each layer: keep each layer's order and spacing, and pull
    every node as close as possible to the mean of its neighbours (a few sweeps
    down and up, each an isotonic regression per layer), so that chains run
    straight and a node sits above the nodes it feeds."""
    gaps = {}
    along: dict = {}
    for row in rows:
        sizes = [DUMMY_WIDTH if n[0] == "dummy" else 1.0 for n in row]
        offsets = [0.0]  # centre of each node when the layer is packed tight
        for left, right in zip(sizes, sizes[1:], strict=False):
            offsets.append(offsets[-1] + (left + right) / 2)
        offsets = offsets[: len(row)]
        gaps[id(row)] = offsets
        mid = (offsets[-1] if offsets else 0.0) / 2
        for n, off in zip(row, offsets, strict=True):
            along[n] = off - mid
    for sweep in range(_SWEEPS):
        downwards = sweep % 2 == 0
        neighbours = preds if downwards else succs
        for row in rows[1:] if downwards else rows[-2::-1]:
            offsets = gaps[id(row)]
            want = []
            for n, off in zip(row, offsets, strict=True):
                ns = neighbours[n]
                target = sum(along[m] for m in ns) / len(ns) if ns else along[n]
                want.append(target - off)
            for n, base, off in zip(row, _isotonic(want), offsets, strict=True):
                along[n] = base + off
    return along


def _layout(
    nodes: list[Node], edges: list[tuple[Node, Node]], rankdir: str
) -> tuple[dict[Node, tuple[float, float]], list[list[tuple[float, float]]], int, float]:
    """Positions of ``nodes``, the polyline of each edge (same order as ``edges``),
    the number of layers and the widest layer's width in units."""
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {RANKDIRS}, got {rankdir!r}")
    layer = _layers(nodes, edges)
    n_layers = max(layer.values(), default=-1) + 1
    # Edges that skip layers are routed through a "dummy" node in each layer they
    # cross, so they take part in the ordering and bend around real nodes instead
    # of running straight through them. A graph whose long edges would need very
    # many dummies (dense, deep fan-out) keeps straight edges to stay fast.
    extra = sum(layer[v] - layer[u] - 1 for u, v in edges)
    use_dummies = extra <= 4 * len(nodes) + 200
    chains: list[list] = []
    all_nodes: list = list(nodes)
    for idx, (u, v) in enumerate(edges):
        span = layer[v] - layer[u]
        if span > 1 and use_dummies:
            dummies = [("dummy", idx, j) for j in range(1, span)]
            for j, d in enumerate(dummies, 1):
                layer[d] = layer[u] + j
            all_nodes.extend(dummies)
            chains.append([u, *dummies, v])
        else:
            chains.append([u, v])
    preds: dict = {n: [] for n in all_nodes}
    succs: dict = {n: [] for n in all_nodes}
    for chain in chains:
        for a, b in zip(chain, chain[1:], strict=False):
            succs[a].append(b)
            preds[b].append(a)
    # initial order: depth-first from the sources, so chains start out together
    rows: list[list] = [[] for _ in range(n_layers)]
    visited: set = set()
    for source in all_nodes:
        if preds[source] or source in visited:
            continue
        stack = [source]
        while stack:
            n = stack.pop()
            if n in visited:
                continue
            visited.add(n)
            rows[layer[n]].append(n)
            stack.extend(reversed(succs[n]))
    _order_layers(rows, preds, succs)
    along = _assign_coordinates(rows, preds, succs)
    width = max(along.values(), default=0.0) - min(along.values(), default=0.0) + 1.0

    def place(n) -> tuple[float, float]:
        a, d = along[n], float(layer[n])
        return {"TB": (a, -d), "BT": (a, d), "LR": (d, -a), "RL": (-d, -a)}[rankdir]

    positions = {n: place(n) for n in nodes}
    routes = [[place(n) for n in chain] for chain in chains]
    return positions, routes, n_layers, width


def layout_graph(dsk: Mapping, rankdir: str = "TB") -> dict[Node, tuple[float, float]]:
    """Positions of the picture's nodes: ``{("task", key) | ("data", key): (x, y)}``.

    Layer ``d`` (dependency depth) sits at ``y = -d`` for ``rankdir="TB"`` and at
    ``x = d`` for ``"LR"`` (``"BT"`` and ``"RL"`` mirror these); nodes within a
    layer are at least one unit apart (more where long edges pass between them),
    the layer centred on 0.
    """
    nodes, edges, _ = graph_structure(dsk)
    return _layout(nodes, edges, rankdir)[0]


# --------------------------------------------------------------------------- drawing


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _fit_label(text: str, room_pt: float, font: float, smallest: float) -> tuple[str, float]:
    """(text, font size) that fits ``room_pt`` points, DejaVu Sans averaging about
    0.6 em per character: shrink the font as far as ``smallest``, then cut."""
    em = 0.6
    if not text:
        return text, font
    size = min(font, room_pt / (em * len(text)))
    if size >= smallest:
        return text, size
    chars = max(int(room_pt / (em * smallest)), 2)
    return text[: chars - 1] + "…", smallest


def visualize_graph(
    dsk: Mapping,
    filename: str | os.PathLike | None = None,
    rankdir: str = "TB",
    max_nodes: int = 2000,
    *,
    dpi: float = 100,
) -> Any:
    """Draw ``dsk``; write it to ``filename`` (png/svg/pdf by extension) if given.

    Returns an ``IPython.display.Image`` inside a Jupyter kernel (so the picture
    shows inline), the matplotlib Figure otherwise. Graphs with more than
    ``max_nodes`` tasks raise ValueError.
    """
    if not isinstance(dsk, Mapping):
        raise TypeError(f"visualize_graph needs a task graph (a mapping), got {type(dsk).__name__}")
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {RANKDIRS}, got {rankdir!r}")
    if filename is not None:
        check_filename(filename)
    if len(dsk) > max_nodes:
        raise ValueError(
            f"the task graph has {len(dsk)} tasks, more than visualize draws "
            f"(max_nodes={max_nodes}); visualize a smaller graph (fewer chunks or a "
            f"part of the computation), or raise max_nodes= if you really want this"
        )
    nodes, edges, labels = graph_structure(dsk)
    positions, routes, n_layers, width = _layout(nodes, edges, rankdir)
    fig = _draw(nodes, edges, routes, labels, positions, n_layers, width, rankdir, dpi)
    if filename is not None:
        from shmdask.diagnostics.figure import save_figure

        save_figure(fig, filename)
    if in_notebook():
        from IPython.display import Image

        return Image(data=png_bytes(fig), format="png")
    return fig


def _draw(nodes, edges, routes, labels, positions, n_layers, width, rankdir, dpi):
    import numpy as np
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.path import Path

    from shmdask.diagnostics.palette import PALETTE

    width = max(width, 1)
    n_layers = max(n_layers, 1)
    # inches per unit along a layer and between layers, shrinking for big graphs
    vertical = rankdir in ("TB", "BT")
    if vertical:
        along_in = _clamp(36.0 / width, 0.04, 1.1)
        layer_in = _clamp(30.0 / n_layers, 0.04, 0.75)
        ux, uy = along_in, layer_in
        span_x, span_y = width - 1, n_layers - 1
    else:
        along_in = _clamp(30.0 / width, 0.04, 0.55)
        layer_in = _clamp(36.0 / n_layers, 0.04, 1.3)
        ux, uy = layer_in, along_in
        span_x, span_y = n_layers - 1, width - 1
    pad = 0.7  # units around the outermost nodes
    fig_w = max((span_x + 2 * pad) * ux, 2.0)
    fig_h = max((span_y + 2 * pad) * uy, 1.5)
    fig = new_figure(fig_w, fig_h, dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    # centre the drawing (it may be smaller than the minimum figure size)
    half_x = fig_w / ux / 2
    half_y = fig_h / uy / 2
    xs = [p[0] for p in positions.values()] or [0.0]
    ys = [p[1] for p in positions.values()] or [0.0]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    ax.set_xlim(cx - half_x, cx + half_x)
    ax.set_ylim(cy - half_y, cy + half_y)

    # node sizes in inches: a box is wide (labels), a circle fits its cell
    cell_w, cell_h = ux, uy
    box_w = 0.86 * cell_w if vertical else min(0.8 * cell_w, 1.2)
    box_h = min(0.42 * cell_h, 0.32, 0.5 * box_w)
    circle_d = min(0.62 * cell_h, 0.62 * cell_w, 0.5)
    if not vertical:
        box_h = min(0.7 * cell_h, 0.32, 0.5 * box_w)

    xy = {n: positions[n] for n in nodes}
    tasks = [n for n in nodes if n[0] == "task"]
    datas = [n for n in nodes if n[0] == "data"]
    groups = sorted({key_split(n[1]) for n in tasks})
    light_first = PALETTE[1::2] + PALETTE[0::2]  # black labels read on light fills
    palette = {g: light_first[i % len(light_first)] for i, g in enumerate(groups)}

    # edges (polylines through the layers they cross), with arrowheads ending on
    # the target's outline, pointing along the last leg
    if routes:
        lw = _clamp(min(ux, uy) * 1.2, 0.3, 1.0)
        ax.add_collection(
            LineCollection(
                [np.asarray(r, dtype=float) for r in routes],
                colors="#555555",
                linewidths=lw,
                zorder=1,
                label="edges",
            ),
            autolim=False,
        )
        segments = np.array([r[-2:] for r in routes], dtype=float)
        d = (segments[:, 1] - segments[:, 0]) * (ux, uy)  # inches
        length = np.hypot(d[:, 0], d[:, 1])
        length[length == 0] = 1.0
        unit = d / length[:, None]
        is_box = np.array([v[0] == "data" for _, v in edges])
        with np.errstate(divide="ignore"):
            to_box_edge = np.minimum(
                (box_w / 2) / np.abs(unit[:, 0]), (box_h / 2) / np.abs(unit[:, 1])
            )
        reach = np.where(is_box, to_box_edge, circle_d / 2)
        tip = segments[:, 1] * (ux, uy) - unit * reach[:, None]
        head = _clamp(min(circle_d, box_h) * 0.45, 0.02, 0.09)
        base = tip - unit * head
        perp = np.stack([-unit[:, 1], unit[:, 0]], axis=1) * head * 0.45
        tris = np.stack([tip, base + perp, base - perp], axis=1) / (ux, uy)
        ax.add_collection(
            PolyCollection(
                tris, facecolors="#555555", edgecolors="none", zorder=1.5, label="arrowheads"
            ),
            autolim=False,
        )

    # nodes: scatter markers are sized in points, so they keep their shape
    if tasks:
        pts = np.array([xy[n] for n in tasks])
        colors = [palette[key_split(n[1])] for n in tasks]
        ax.scatter(pts[:, 0], pts[:, 1], s=(circle_d * 72) ** 2, c=colors, marker="o",
                   edgecolors="#333333", linewidths=0.6, zorder=2, label="task")  # fmt: skip
    if datas:
        pts = np.array([xy[n] for n in datas])
        r = box_h / box_w
        box = Path([(-1, -r), (1, -r), (1, r), (-1, r), (-1, -r)], closed=True)
        ax.scatter(pts[:, 0], pts[:, 1], s=(box_w * 72) ** 2, c="white", marker=box,
                   edgecolors="#333333", linewidths=0.6, zorder=2, label="data")  # fmt: skip

    # labels: a long label first gets a smaller font (down to ~2/3 of the normal
    # one), then is cut with an ellipsis; all are skipped when unreadably small
    font = min(9.0, box_h * 72 * 0.55, circle_d * 72 * 0.4)
    if font >= 3.5:
        room = {"task": 0.85 * circle_d * 72, "data": 0.9 * box_w * 72}  # points
        smallest = max(font * 0.65, 3.5)
        for n in nodes:
            x, y = xy[n]
            text, size = _fit_label(labels[n], room[n[0]], font, smallest)
            ax.text(x, y, text, ha="center", va="center", fontsize=size, zorder=3,
                    clip_on=True)  # fmt: skip
    fig.shmdask_layout = {"rankdir": rankdir, "layers": n_layers, "width": width}
    return fig


def visualize(*graphs_or_collections: Any, filename: str | os.PathLike | None = None,
              rankdir: str = "TB", max_nodes: int = 2000) -> Any:  # fmt: skip
    """Draw the merged graph of task graphs (dicts) and/or collections."""
    dsk: dict = {}
    for obj in graphs_or_collections:
        if hasattr(obj, "__shmdask_graph__"):
            dsk.update(obj.__shmdask_graph__())
        elif isinstance(obj, Mapping):
            dsk.update(obj)
        else:
            raise TypeError(f"visualize takes task graphs or collections, got {type(obj).__name__}")
    return visualize_graph(dsk, filename=filename, rankdir=rankdir, max_nodes=max_nodes)


__all__ = ["graph_structure", "layout_graph", "visualize", "visualize_graph"]
