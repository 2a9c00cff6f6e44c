"""Task-stream Gantt picture: what ran where, when, and how busy the workers were.

In: task-stream records (one plain dict per task run or transfer, schema in the
team contract: key, group, worker, lane, start, stop, nbytes, where, kind, remote)
and optional memory samples ({time, shm_bytes, rss: {worker: bytes}, done}).
Out: a ``matplotlib.figure.Figure`` with two panels sharing the time axis --

* top: one row per lane (worker thread), grouped by worker, a bar per task
  coloured by its group, transfers in red, idle time left as white gaps;
* bottom: shared memory and each worker's RSS over time, and the cumulative
  number of tasks finished (right axis).

Two pure functions carry the numbers so the command line and tests can use them
without drawing: ``lane_layout`` (which row each lane gets) and ``summarize``
(wall time, utilisation, per-worker and per-group figures).

Why shaped so: the picture must stay cheap at both ends, from 20 tasks to
50,000. Python touches each record exactly once to pull its fields into numpy
arrays; everything after that is vectorised. Bars go into one PolyCollection per
colour (never one artist per bar), and when there are more bars than the picture
can show, consecutive bars of the same group in the same lane that are closer
than one pixel are merged into one span first -- they would be drawn as one
anyway. Small streams are drawn bar for bar, so every task stays visible.
Colours are a stable function of the group name (a CRC of it picks a palette
slot), so 'inc' is the same colour in every run's picture.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from shmdask.graph import key_split
from shmdask.units import format_seconds

from .figure import check_filename, new_figure, save_figure

if TYPE_CHECKING:  # matplotlib is imported when drawing: summarize() stays light
    from matplotlib.figure import Figure

# Qualitative palette: matplotlib's tab20 without its reds (reserved for
# transfers) and its greys (reserved for "other").
PALETTE = (
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a",
    "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2",
    "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
)  # fmt: skip
TRANSFER_COLOR = "#d62728"
OTHER_COLOR = "#b0b0b0"
REMOTE_LABEL_COLOR = "#7b3294"

#: draw bar for bar up to this many bars; above it, merge sub-pixel neighbours
BIN_ABOVE = 2000
#: one legend entry per worker's RSS line up to this many workers
MAX_RSS_LEGEND = 8

_REQUIRED = ("lane", "start", "stop")


# --------------------------------------------------------------------------- numbers


def _natural_key(text: str) -> list:
    """Sort key so that 'worker-2' comes before 'worker-10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _worker_of(record: Mapping) -> str:
    worker = record.get("worker")
    if worker is None:
        return str(record["lane"]).split("/", 1)[0]
    return str(worker)


def _group_of(record: Mapping) -> str:
    group = record.get("group")
    if group is not None:
        return str(group)
    key = record.get("key")
    return key_split(key) if key is not None else "task"


def _check_record(i: int, record: Any) -> None:
    if not isinstance(record, Mapping):
        raise TypeError(f"task-stream record {i} is a {type(record).__name__}, expected a dict")
    for field in _REQUIRED:
        if field not in record:
            raise ValueError(f"task-stream record {i} has no {field!r} field: {record!r}")


class _Stream:
    """The records pulled once into parallel numpy arrays (compute and transfer)."""

    def __init__(self, records: Iterable[Mapping]):
        records = list(records)
        n = len(records)
        start = np.empty(n)
        stop = np.empty(n)
        lanes: list[str] = [""] * n
        groups: list[str] = [""] * n
        transfer = np.zeros(n, dtype=bool)
        error = np.zeros(n, dtype=bool)
        lane_worker: dict[str, str] = {}
        lane_remote: dict[str, bool] = {}
        for i, rec in enumerate(records):
            try:
                lane = str(rec["lane"])
                start[i] = rec["start"]
                stop[i] = rec["stop"]
            except (KeyError, TypeError):
                _check_record(i, rec)
                raise
            lanes[i] = lane
            groups[i] = _group_of(rec)
            transfer[i] = rec.get("kind", "compute") == "transfer"
            error[i] = bool(rec.get("error", False))
            if lane not in lane_worker:
                lane_worker[lane] = _worker_of(rec)
                lane_remote[lane] = bool(rec.get("remote", False))
            elif rec.get("remote", False):
                lane_remote[lane] = True
        if n and not (np.all(np.isfinite(start)) and np.all(np.isfinite(stop))):
            bad = int(np.flatnonzero(~(np.isfinite(start) & np.isfinite(stop)))[0])
            raise ValueError(f"task-stream record {bad} has a non-finite start/stop time")
        if n and np.any(stop < start):
            bad = int(np.flatnonzero(stop < start)[0])
            raise ValueError(
                f"task-stream record {bad} stops before it starts "
                f"(start={start[bad]!r}, stop={stop[bad]!r})"
            )
        self.n = n
        self.start = start
        self.stop = stop
        self.lanes = lanes
        self.groups = groups
        self.transfer = transfer
        self.error = error
        self.lane_worker = lane_worker
        self.lane_remote = lane_remote


def _layout_from(stream: _Stream) -> dict[str, dict]:
    ordered = sorted(
        stream.lane_worker,
        key=lambda lane: (_natural_key(stream.lane_worker[lane]), _natural_key(lane)),
    )
    layout = {}
    for row, lane in enumerate(ordered):
        remote = stream.lane_remote[lane]
        layout[lane] = {
            "row": row,
            "worker": stream.lane_worker[lane],
            "remote": remote,
            "label": f"{lane} (remote)" if remote else lane,
        }
    return layout


def lane_layout(records: Iterable[Mapping]) -> dict[str, dict]:
    """Which row each lane gets: ``{lane: {"row", "worker", "remote", "label"}}``.

    Rows are numbered from 0 (top), lanes grouped by worker in natural order
    ('worker-2' before 'worker-10'); a lane is remote if any of its records is.
    """
    return _layout_from(_Stream(records))


def _summary_from(stream: _Stream, layout: dict[str, dict]) -> dict[str, Any]:
    compute = ~stream.transfer
    workers: dict[str, dict[str, Any]] = {}
    for info in layout.values():
        w = workers.setdefault(
            info["worker"],
            {"lanes": 0, "tasks": 0, "busy": 0.0, "utilisation": 0.0, "remote": False},
        )
        w["lanes"] += 1
        w["remote"] = w["remote"] or info["remote"]
    if stream.n == 0:
        return {
            "start": None,
            "stop": None,
            "wall": 0.0,
            "n_tasks": 0,
            "n_transfers": 0,
            "n_errors": 0,
            "n_workers": 0,
            "n_lanes": 0,
            "busy": 0.0,
            "utilisation": 0.0,
            "workers": {},
            "groups": {},
        }
    t0 = float(stream.start.min())
    t1 = float(stream.stop.max())
    wall = t1 - t0
    duration = stream.stop - stream.start
    busy_by_worker: dict[str, float] = dict.fromkeys(workers, 0.0)
    tasks_by_worker: dict[str, int] = dict.fromkeys(workers, 0)
    groups: dict[str, dict[str, float]] = {}
    for lane, group, dt, is_compute in zip(
        stream.lanes, stream.groups, duration.tolist(), compute.tolist(), strict=True
    ):
        if not is_compute:
            continue
        worker = layout[lane]["worker"]
        busy_by_worker[worker] += dt
        tasks_by_worker[worker] += 1
        g = groups.get(group)
        if g is None:
            groups[group] = {"count": 1, "busy": dt}
        else:
            g["count"] += 1
            g["busy"] += dt
    for worker, w in workers.items():
        w["busy"] = busy_by_worker[worker]
        w["tasks"] = tasks_by_worker[worker]
        w["utilisation"] = w["busy"] / (wall * w["lanes"]) if wall > 0 else 0.0
    busy = float(duration[compute].sum())
    n_lanes = len(layout)
    ordered_groups = dict(sorted(groups.items(), key=lambda kv: (-kv[1]["busy"], kv[0])))
    return {
        "start": t0,
        "stop": t1,
        "wall": wall,
        "n_tasks": int(compute.sum()),
        "n_transfers": int(stream.transfer.sum()),
        "n_errors": int(stream.error.sum()),
        "n_workers": len(workers),
        "n_lanes": n_lanes,
        "busy": busy,
        "utilisation": busy / (wall * n_lanes) if wall > 0 else 0.0,
        "workers": dict(sorted(workers.items(), key=lambda kv: _natural_key(kv[0]))),
        "groups": ordered_groups,
    }


def summarize(records: Iterable[Mapping]) -> dict[str, Any]:
    """The numbers of a task stream, without drawing.

    Returns ``{"start", "stop", "wall", "n_tasks", "n_transfers", "n_errors", "n_workers",
    "n_lanes", "busy", "utilisation", "workers": {worker: {"lanes", "tasks",
    "busy", "utilisation", "remote"}}, "groups": {group: {"count", "busy"}}}``.
    ``utilisation`` is compute seconds / (wall seconds * lanes); transfers do not
    count as work; ``n_errors`` counts records flagged ``"error": True`` (tasks that
    raised). Groups are ordered by busy time, largest first.
    """
    stream = _Stream(records)
    return _summary_from(stream, _layout_from(stream))


def group_colors(groups: Iterable[str], limit: int = 12) -> dict[str, str]:
    """A colour for each of the first ``limit`` groups; a group's colour depends on its
    name only, unless two names collide in one picture (then the later one moves on)."""
    colors: dict[str, str] = {}
    taken: set[int] = set()
    for group in groups:
        if len(colors) >= min(limit, len(PALETTE)):
            break
        slot = zlib.crc32(group.encode("utf-8", "surrogatepass")) % len(PALETTE)
        while slot in taken:
            slot = (slot + 1) % len(PALETTE)
        taken.add(slot)
        colors[group] = PALETTE[slot]
    return colors


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def stats_line(summary: Mapping[str, Any]) -> str:
    """'wall 1.23 s · 200 tasks · 2 workers · 4 lanes · utilisation 87%' from summarize()."""
    parts = [f"wall {format_seconds(summary['wall'])}", _plural(summary["n_tasks"], "task")]
    if summary["n_transfers"]:
        parts.append(_plural(summary["n_transfers"], "transfer"))
    parts.append(_plural(summary["n_workers"], "worker"))
    parts.append(_plural(summary["n_lanes"], "lane"))
    parts.append(f"utilisation {summary['utilisation']:.0%}")
    if summary["n_errors"]:
        parts.append(f"{summary['n_errors']} erred")
    return " · ".join(parts)


# --------------------------------------------------------------------------- drawing


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
    stream = _Stream(records)
    layout = _layout_from(stream)
    summary = _summary_from(stream, layout)
    samples = _check_memory(memory)
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
    n_rss = len({w for s in samples for w in (s.get("rss") or {})})
    n_spilled = any(s.get("spilled_bytes") for s in samples)
    n_mem_entries = 2 + n_spilled + (n_rss if n_rss <= MAX_RSS_LEGEND else 1)
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

    _draw_memory(
        ax_mem, stream, samples, t0, span, int(axes_px), legend_x=1 + mem_legend_x_in / axes_w_in
    )
    ax_mem.set_xlabel("time since first task (s)")

    if filename is not None:
        save_figure(fig, filename)
    return fig


def _draw_bars(
    ax,
    stream: _Stream,
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


def _check_memory(memory: Iterable[Mapping] | None) -> list[Mapping]:
    if memory is None:
        return []
    samples = list(memory)
    for i, sample in enumerate(samples):
        if not isinstance(sample, Mapping) or "time" not in sample:
            raise ValueError(f"memory sample {i} needs a 'time' field: {sample!r}")
    return samples


def _byte_scale(peak: float) -> tuple[float, str]:
    for power, unit in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
        if peak >= 1024**power:
            return 1024.0**power, unit
    return 1.0, "B"


def _draw_memory(
    ax,
    stream: _Stream,
    samples: list[Mapping],
    t0: float,
    span: float,
    axes_px: int,
    legend_x: float,
) -> None:
    from matplotlib.lines import Line2D

    for spine in ("top",):
        ax.spines[spine].set_visible(False)
    lines = []
    visible = [s for s in samples if -0.05 * span <= s["time"] - t0 <= 1.05 * span]
    if visible:
        times = np.array([s["time"] - t0 for s in visible])
        shm = np.array([float(s.get("shm_bytes", 0) or 0) for s in visible])
        rss_by_worker: dict[str, np.ndarray] = {}
        for worker in sorted({w for s in visible for w in (s.get("rss") or {})}, key=_natural_key):
            rss_by_worker[worker] = np.array(
                [float((s.get("rss") or {}).get(worker, np.nan)) for s in visible]
            )
        spilled = np.array([float(s.get("spilled_bytes", 0) or 0) for s in visible])
        peak = max(
            [(shm + spilled).max(initial=0.0)]
            + [np.nanmax(v, initial=0.0) for v in rss_by_worker.values()]
        )
        scale, unit = _byte_scale(peak)
        fill = ax.fill_between(
            times,
            shm / scale,
            step="post",
            color="#9ecae1",
            alpha=0.7,
            linewidth=0,
            label="shared memory",
        )
        lines.append(fill)
        if spilled.any():  # stacked on shared memory: the data the cluster holds
            lines.append(ax.fill_between(
                times, shm / scale, (shm + spilled) / scale, step="post", facecolor="none",
                edgecolor="#6baed6", hatch="////", linewidth=0, label="spilled to disk"))
        many = len(rss_by_worker) > MAX_RSS_LEGEND  # then one legend entry for all
        for i, (worker, rss) in enumerate(rss_by_worker.items()):
            (line,) = ax.plot(
                times,
                rss / scale,
                drawstyle="steps-post",
                linewidth=0.7 if many else 1.0,
                color=PALETTE[(2 * i) % len(PALETTE)],
                label=f"RSS {worker}",
            )
            if not many:
                lines.append(line)
        if many:
            lines.append(
                Line2D(
                    [],
                    [],
                    color="#666666",
                    linewidth=0.7,
                    label=f"RSS of {len(rss_by_worker)} workers",
                )  # fmt: skip
            )
        ax.set_ylabel(f"memory ({unit})", fontsize=9)
        ax.set_ylim(0, max(peak / scale * 1.1, 1e-9))
    else:
        ax.set_ylabel("memory", fontsize=9)
        ax.set_yticks([])
        ax.text(
            0.01,
            0.9,
            "no memory samples",
            transform=ax.transAxes,
            fontsize=8,
            color="#888888",
            va="top",
        )
    ax.tick_params(labelsize=8)

    # tasks finished over time, resampled to about two points per pixel
    ax_done = ax.twinx()
    stops = np.sort(stream.stop[~stream.transfer] - t0)
    if len(stops):
        n_points = min(len(stops), 2 * max(axes_px, 1))
        if n_points < len(stops):
            grid = np.linspace(0.0, span, n_points)
            done = np.searchsorted(stops, grid, side="right")
        else:
            grid = np.concatenate([[0.0], stops])
            done = np.arange(len(grid))
        (line,) = ax_done.plot(
            grid, done, drawstyle="steps-post", color="black", linewidth=1.2, label="tasks done"
        )
        lines.append(line)
        ax_done.set_ylim(0, len(stops) * 1.05)
    ax_done.set_ylabel("tasks done", fontsize=9)
    ax_done.tick_params(labelsize=8)
    ax_done.spines["top"].set_visible(False)
    ax_done.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(
        handles=lines,
        loc="lower left",
        bbox_to_anchor=(legend_x, 0.0),
        fontsize=8,
        frameon=False,
        borderaxespad=0.0,
    )
    ax.set_xlim(0, span * 1.005)
