"""The numbers of a task stream, without drawing: lanes, wall time, utilisation.

In: task-stream records (one plain dict per task run or transfer, schema in
:mod:`shmdask.scheduler.records`: key, group, worker, lane, start, stop, nbytes,
where, kind, remote, error).  Out: ``lane_layout`` (which row each lane gets),
``summarize`` (wall time, utilisation, per-worker and per-group figures) and
``stats_line`` (the one-line digest printed after a run and over the picture).

Why shaped so: the Gantt picture, the command line and the dashboard read the
same records, so the field readers (``worker_of``, ``group_of``) and the worker
order (``natural_key``: 'worker-2' before 'worker-10') live here once.  Python
touches each record exactly once, in :class:`RecordColumns`, to pull its fields
into numpy arrays; everything after that is vectorised, so 50,000 records cost
what a few do.  No matplotlib here: the numbers stay cheap to import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from shmdask.graph import key_split
from shmdask.units import format_seconds

from .palette import busiest_first

_REQUIRED = ("lane", "start", "stop")


def natural_key(text: str) -> list:
    """Sort key so that 'worker-2' comes before 'worker-10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def worker_of(record: Mapping) -> str:
    """The worker of a record: its ``worker`` field, else the part of its lane before '/'."""
    worker = record.get("worker")
    if worker is None:
        return str(record.get("lane", "?")).split("/", 1)[0]
    return str(worker)


def group_of(record: Mapping) -> str:
    """The task group of a record: its ``group`` field, else ``key_split`` of its key."""
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


class RecordColumns:
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
            groups[i] = group_of(rec)
            transfer[i] = rec.get("kind", "compute") == "transfer"
            error[i] = bool(rec.get("error", False))
            if lane not in lane_worker:
                lane_worker[lane] = worker_of(rec)
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


def layout_from(stream: RecordColumns) -> dict[str, dict]:
    """:func:`lane_layout` of records already in columns."""
    ordered = sorted(
        stream.lane_worker,
        key=lambda lane: (natural_key(stream.lane_worker[lane]), natural_key(lane)),
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
    return layout_from(RecordColumns(records))


def summary_from(stream: RecordColumns, layout: dict[str, dict]) -> dict[str, Any]:
    """:func:`summarize` of records already in columns and laid out."""
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
    order = busiest_first({group: g["busy"] for group, g in groups.items()})
    ordered_groups = {group: groups[group] for group in order}
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
        "workers": dict(sorted(workers.items(), key=lambda kv: natural_key(kv[0]))),
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
    stream = RecordColumns(records)
    return summary_from(stream, layout_from(stream))


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
