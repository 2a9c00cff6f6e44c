"""The lower panel of the task-stream picture: memory and tasks done over time.

In: memory samples (``{time, shm_bytes, spilled_bytes, rss: {worker: bytes}, done}``,
appended by :class:`~shmdask.diagnostics.task_stream.MemorySampler`) and the
records' columns (for the tasks-done curve).  Out: drawn on a matplotlib Axes --
shared memory filled, spilled bytes hatched on top of it, one RSS line per worker
(one legend entry for all of them beyond ``MAX_RSS_LEGEND``), and the cumulative
number of tasks finished on a right-hand axis.

Why shaped so: samples arrive a few times a second and the curve of tasks done
has one step per task, so the curve is resampled to about two points per pixel
before it is drawn; the picture costs the same for 20 tasks as for 50,000.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .palette import PALETTE
from .summary import RecordColumns, natural_key

#: one legend entry per worker's RSS line up to this many workers
MAX_RSS_LEGEND = 8


def check_samples(memory: Iterable[Mapping] | None) -> list[Mapping]:
    """The samples as a list; ValueError naming the first one without a ``time``."""
    if memory is None:
        return []
    samples = list(memory)
    for i, sample in enumerate(samples):
        if not isinstance(sample, Mapping) or "time" not in sample:
            raise ValueError(f"memory sample {i} needs a 'time' field: {sample!r}")
    return samples


def legend_entries(samples: list[Mapping]) -> int:
    """How many rows the panel's legend takes (the picture's margins depend on it)."""
    n_rss = len({w for s in samples for w in (s.get("rss") or {})})
    n_spilled = any(s.get("spilled_bytes") for s in samples)
    return 2 + n_spilled + (n_rss if n_rss <= MAX_RSS_LEGEND else 1)


def _byte_scale(peak: float) -> tuple[float, str]:
    for power, unit in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
        if peak >= 1024**power:
            return 1024.0**power, unit
    return 1.0, "B"


def draw_memory_panel(
    ax,
    stream: RecordColumns,
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
        for worker in sorted({w for s in visible for w in (s.get("rss") or {})}, key=natural_key):
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
