"""Task-stream Gantt picture: what ran where, when, and how busy the workers were.

In: task-stream records (one plain dict per task run or transfer, schema in
:mod:`shmdask.scheduler.records`) and optional memory samples
({time, shm_bytes, rss: {worker: bytes}, done}).
Out: a ``matplotlib.figure.Figure`` with two panels sharing the time axis --

* top (drawn here): one row per lane (worker thread), grouped by worker, a bar
  per task coloured by its group, transfers in red, idle time left as white gaps;
* bottom (:mod:`.memory_panel`): shared memory and each worker's RSS over time,
  and the cumulative number of tasks finished (right axis).

The numbers come from :mod:`.summary` (also used without drawing, by the
command line and the dashboard) and the colours from :mod:`.palette`.

Why shaped so: the picture must stay cheap at both ends, from 20 tasks to
50,000. Bars go into one PolyCollection per colour (never one artist per bar),
and when there are more bars than the picture can show, consecutive bars of the
same group in the same lane that are closer than one pixel are merged into one
span first -- they would be drawn as one anyway. Small streams are drawn bar for
bar, so every task stays visible.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from .figure import check_filename, new_figure, save_figure
from .memory_panel import check_samples, draw_memory_panel, legend_entries
from .palette import OTHER_COLOR, PALETTE, TRANSFER_COLOR, group_colors
from .summary import RecordColumns, layout_from, stats_line, summary_from

if TYPE_CHECKING:  # matplotlib is imported when drawing
    from matplotlib.figure import Figure

REMOTE_LABEL_COLOR = "#7b3294"

#: draw bar for bar up to this many bars; above it, merge sub-pixel neighbours
BIN_ABOVE = 2000


def merge_spans(
    start: np.ndarray, stop: np.ndarray, row: np.ndarray, color: np.ndarray, min_gap: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge bars that follow each other in the same row with the same colour index
    when the gap between them is below ``min_gap``; returns the spans' arrays
    (start, stop, row, color). A bar of another colour in between stops a merge, so
    interleaved groups stay interleaved."""
    n = len(start)
    if n == 0:
        return start, stop, row, color
    order = np.lexsort((start, row))
    s, e, r, c = start[order], stop[order], row[order], color[order]
    # running end of the span so far; bars in one lane do not overlap normally,
    # but when they do the later bar must not shrink the span
    new = np.ones(n, dtype=bool)
    new[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1]) | (s[1:] - e[:-1] >= min_gap)
    heads = np.flatnonzero(new)
    return s[heads], np.maximum.reduceat(e, heads), r[heads], c[heads]


def _bar_verts(x0: np.ndarray, x1: np.ndarray, y: np.ndarray, height: float) -> np.ndarray:
    """(n, 4, 2) rectangle corners for PolyCollection."""
    half = height / 2
    verts = np.empty((len(x0), 4, 2))
    verts[:, 0, 0] = x0
    verts[:, 1, 0] = x0
    verts[:, 2, 0] = x1
    verts[:, 3, 0] = x1
    verts[:, 0, 1] = y + half
    verts[:, 1, 1] = y - half
    verts[:, 2, 1] = y - half
    verts[:, 3, 1] = y + half
    return verts


def plot_task_stream(
    records: Iterable[Mapping],
    memory: Iterable[Mapping] | None = None,
    filename: str | os.PathLike | None = None,
    title: str | None = None,
    *,
    width: float = 12.0,
    dpi: float = 100,
    legend_groups: int = 12,
) -> Figure:
    """Draw a task stream as a Gantt chart over a memory/progress panel.

    ``records`` and ``memory`` follow the task-stream schema; ``filename`` (png, svg
    or pdf by extension) also writes the picture. Returns the Figure (on an Agg
    canvas; nothing global is touched).
    """
    if filename is not None:
        check_filename(filename)
    if not (isinstance(legend_groups, int) and legend_groups >= 1):
        raise ValueError(f"legend_groups must be a positive int, got {legend_groups!r}")
    if not (width > 1 and dpi > 0):
        raise ValueError(f"width must be > 1 inch and dpi > 0, got width={width!r}, dpi={dpi!r}")
    stream = RecordColumns(records)
    layout = layout_from(stream)
    summary = summary_from(stream, layout)
    samples = check_samples(memory)
    n_lanes = max(len(layout), 1)

    # --- geometry, in inches, so margins do not depend on the number of lanes
    lane_h = 0.3 if n_lanes <= 16 else max(0.12 if n_lanes <= 128 else 0.06, 4.8 / n_lanes)
    gantt_h = max(1.6, lane_h * n_lanes + 0.4)
    mem_h = 1.9
    top_in = 0.8 if title else 0.45
    bottom_in, gap_in = 0.55, 0.25
    label_len = max((len(info["label"]) for info in layout.values()), default=8)
    left_in = min(0.5 + 0.075 * label_len, 3.0)
    # right margin: per-worker utilisation, then the group legend in as many
    # columns as it needs to fit beside both panels above the memory legend
    n_entries = min(len(summary["groups"]), legend_groups, len(PALETTE))
    n_entries += (len(summary["groups"]) > n_entries) + (summary["n_transfers"] > 0)
    n_entries += (summary["n_errors"] > 0) + 1  # + the legend title
    n_mem_entries = legend_entries(samples)
    row_in = 0.19
    fits = max(3, int((gantt_h + gap_in + mem_h) / row_in) - n_mem_entries - 1)
    ncol = math.ceil(n_entries / fits)
    name_len = max((len(g) for g in list(summary["groups"])[:legend_groups]), default=8)
    col_in = 0.45 + 0.07 * max(name_len, 9)
    legend_x_in = 0.45
    mem_legend_x_in = 0.8  # clear of the twin axis' tick labels and its ylabel
    right_in = max(legend_x_in + 0.1 + ncol * col_in, mem_legend_x_in + 1.5)
    height = top_in + gantt_h + gap_in + mem_h + bottom_in
    fig = new_figure(width, height, dpi=dpi)
    grid = fig.add_gridspec(
        2,
        1,
        height_ratios=[gantt_h, mem_h],
        left=left_in / width,
        right=1 - right_in / width,
        top=1 - top_in / height,
        bottom=bottom_in / height,
        hspace=gap_in / ((gantt_h + mem_h) / 2),
    )
    ax = fig.add_subplot(grid[0])
    ax_mem = fig.add_subplot(grid[1], sharex=ax)
    axes_px = (width - left_in - right_in) * dpi

    if title:
        fig.suptitle(
            title,
            x=left_in / width,
            y=1 - 0.12 / height,
            ha="left",
            va="top",
            fontsize=12,
            fontweight="bold",
        )
    if stream.n == 0:
        ax.set_title("no tasks recorded", loc="left", fontsize=10)
        ax.set_yticks([])
        ax_mem.set_yticks([])
        ax_mem.set_xlabel("time (s)")
        if filename is not None:
            save_figure(fig, filename)
        return fig

    t0, wall = summary["start"], summary["wall"]
    span = wall if wall > 0 else 1e-3
    ax.set_title(stats_line(summary), loc="left", fontsize=10)

    axes_w_in = width - left_in - right_in
    _draw_bars(
        ax,
        stream,
        layout,
        summary,
        t0,
        span / axes_px,
        legend_groups,
        legend_x=1 + legend_x_in / axes_w_in,
        ncol=ncol,
    )
    _draw_lanes(ax, layout, summary, n_lanes, lane_h)
    ax.set_xlim(0, span * 1.005)
    ax.tick_params(labelbottom=False)

    draw_memory_panel(
        ax_mem, stream, samples, t0, span, int(axes_px), legend_x=1 + mem_legend_x_in / axes_w_in
    )
    ax_mem.set_xlabel("time since first task (s)")

    if filename is not None:
        save_figure(fig, filename)
    return fig


def _draw_bars(
    ax,
    stream: RecordColumns,
    layout,
    summary,
    t0: float,
    pixel: float,
    legend_groups: int,
    legend_x: float,
    ncol: int,
) -> None:
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    rows = np.fromiter(
        (layout[lane]["row"] for lane in stream.lanes), dtype=np.int64, count=stream.n
    )
    start = stream.start - t0
    stop = stream.stop - t0
    colors = group_colors(summary["groups"], limit=legend_groups)
    names = list(colors) + ["other"]
    index = {name: i for i, name in enumerate(colors)}
    other = len(colors)
    color_idx = np.fromiter(
        (index.get(g, other) for g in stream.groups), dtype=np.int64, count=stream.n
    )
    compute = ~stream.transfer
    n_compute = int(compute.sum())
    bin_bars = stream.n > BIN_ABOVE
    thin_edges = stream.n <= 500

    s, e, r, c = start[compute], stop[compute], rows[compute], color_idx[compute]
    if bin_bars:
        s, e, r, c = merge_spans(s, e, r, c, pixel)
    # every task leaves a mark at least one pixel wide; only bars wide enough to
    # spare it get the thin white outline that separates neighbours
    e = np.maximum(e, s + pixel)
    outline = np.where(e - s >= 4 * pixel, 0.4, 0.0) if thin_edges else None
    handles = []
    order = np.argsort(c, kind="stable")
    bounds = np.searchsorted(c[order], np.arange(len(names) + 1))
    for i, name in enumerate(names):
        sel = order[bounds[i] : bounds[i + 1]]
        if len(sel) == 0:
            continue
        color = colors.get(name, OTHER_COLOR)
        coll = PolyCollection(
            _bar_verts(s[sel], e[sel], r[sel], 0.8),
            facecolors=color,
            edgecolors="white" if thin_edges else "none",
            linewidths=outline[sel] if thin_edges else 0.0,
            antialiaseds=thin_edges,
            label=name,
            zorder=2,
        )
        ax.add_collection(coll, autolim=False)
        handles.append(Patch(facecolor=color, label=name))
    if stream.transfer.any():
        t = stream.transfer
        s, e, r, c = start[t], stop[t], rows[t], np.zeros(int(t.sum()), dtype=np.int64)
        if bin_bars:
            s, e, r, c = merge_spans(s, e, r, c, pixel)
        # transfers are few and matter: keep each at least two pixels wide
        e = np.maximum(e, s + 2 * pixel)
        coll = PolyCollection(
            _bar_verts(s, e, r, 0.45),
            facecolors=TRANSFER_COLOR,
            edgecolors="none",
            linewidths=0.0,
            label="transfer",
            zorder=3,
        )
        ax.add_collection(coll, autolim=False)
        handles.append(Patch(facecolor=TRANSFER_COLOR, label="transfer"))
    if stream.error.any():
        # tasks that raised: hatched black outline over their group colour
        t = stream.error
        coll = PolyCollection(
            _bar_verts(start[t], np.maximum(stop[t], start[t] + 2 * pixel), rows[t], 0.8),
            facecolors="none",
            edgecolors="black",
            linewidths=0.8,
            hatch="xxx",
            label="erred",
            zorder=4,
        )
        ax.add_collection(coll, autolim=False)
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="xxx", label="erred"))
    if n_compute or stream.transfer.any():
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(legend_x, 1.0),
            ncol=ncol,
            fontsize=8,
            frameon=False,
            title="task group",
            title_fontsize=8,
            borderaxespad=0.0,
        )


def _draw_lanes(ax, layout, summary, n_lanes: int, lane_h: float) -> None:
    labels = [""] * len(layout)
    remote_rows = []
    worker_rows: dict[str, list[int]] = {}
    for info in layout.values():
        labels[info["row"]] = info["label"]
        worker_rows.setdefault(info["worker"], []).append(info["row"])
        if info["remote"]:
            remote_rows.append(info["row"])
    ax.set_yticks(range(len(labels)))
    fontsize = min(8.0, max(3.5, lane_h * 72 * 0.7))
    ax.set_yticklabels(labels, fontsize=fontsize)
    for row in remote_rows:
        ax.get_yticklabels()[row].set_color(REMOTE_LABEL_COLOR)
    ax.set_ylim(n_lanes - 0.5, -0.5)  # row 0 on top
    ax.tick_params(axis="y", length=0)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    # alternate shading per worker so lane groups read at a glance; white gaps
    # inside a band are idle time
    transform = ax.get_yaxis_transform()
    for i, (worker, rows) in enumerate(worker_rows.items()):
        lo, hi = min(rows) - 0.5, max(rows) + 0.5
        if i % 2 == 0:
            ax.axhspan(lo, hi, color="#f2f2f2", zorder=0, linewidth=0)
        util = summary["workers"][worker]["utilisation"]
        ax.text(
            1.005,
            (lo + hi) / 2,
            f"{util:.0%}",
            transform=transform,
            fontsize=fontsize,
            va="center",
            ha="left",
            color="#555555",
        )


