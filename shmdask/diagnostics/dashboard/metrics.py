"""``/metrics``: the dashboard's numbers in Prometheus' text exposition format.

In: the payloads of the collector (info, progress, workers, memory).  Out: one
``text/plain; version=0.0.4`` document, with a ``# HELP`` and ``# TYPE`` line per
metric family, as a Prometheus server scrapes it.

The names follow Prometheus' conventions (``shmdask_`` prefix, base units --
bytes and seconds -- and ``_total`` on counters), and the label values are
escaped as the format demands (backslash, double quote, newline).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: Any) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(int(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str):
        self.name = name
        self.kind = kind
        self.help = help_text
        self.samples: list[tuple[dict, Any]] = []

    def add(self, value: Any, **labels: Any) -> None:
        self.samples.append((labels, value))

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            if labels:
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                yield f"{self.name}{{{text}}} {_number(value)}"
            else:
                yield f"{self.name} {_number(value)}"


def prometheus_text(info: Mapping, progress: Mapping, workers: Mapping,
                    memory: Mapping) -> str:
    """The exposition document for one moment of the cluster."""
    families = []

    def family(name: str, kind: str, help_text: str) -> _Family:
        f = _Family(name, kind, help_text)
        families.append(f)
        return f

    family("shmdask_tasks_finished_total", "counter",
           "Tasks the scheduler has finished since it started.").add(info.get("tasks_done", 0))
    states = family("shmdask_tasks", "gauge", "Tasks by state, summed over task groups.")
    totals = progress.get("totals", {})
    for state in ("waiting", "ready", "processing", "memory", "erred"):
        states.add(totals.get(state, 0), state=state)
    by_group = family("shmdask_task_group_tasks", "gauge",
                      "Tasks of each task group by state ('done' and 'total' of the current "
                      "window of the group).")
    for row in progress.get("groups", []):
        for state in ("waiting", "ready", "processing", "memory", "erred", "done", "total"):
            by_group.add(row[state], group=row["name"], state=state)

    rows = workers.get("workers", [])
    family("shmdask_workers", "gauge", "Workers connected to the scheduler.").add(len(rows))
    family("shmdask_threads", "gauge", "Worker threads in all.").add(
        sum(w.get("nthreads") or 0 for w in rows))
    per_worker = [
        ("shmdask_worker_threads", "Threads of the worker.", "nthreads"),
        ("shmdask_worker_executing", "Tasks the worker is running or has queued.", "executing"),
        ("shmdask_worker_memory_bytes", "Resident memory of the worker process.", "memory"),
        ("shmdask_worker_private_memory_bytes",
         "Resident memory of the worker minus the shared pages it maps.", "private"),
        ("shmdask_worker_shm_bytes", "Shared memory held by results the worker wrote.", "shm"),
        ("shmdask_worker_memory_limit_bytes", "Memory limit of the worker.", "memory_limit"),
        ("shmdask_worker_cpu_ratio", "CPU use of the worker process (1 = one core).", "cpu"),
    ]
    for name, help_text, field in per_worker:
        f = family(name, "gauge", help_text)
        for w in rows:
            value = w.get(field)
            if value is None:
                continue
            if field == "cpu":
                value = float(value) / 100.0
            f.add(value, worker=w["id"], kind=w.get("kind", ""))

    shm = memory.get("shm") or [0]
    total = memory.get("memory") or [0]
    rate = memory.get("rate") or [0.0]
    family("shmdask_shm_bytes", "gauge",
           "Shared memory held by every result in the cluster.").add(shm[-1])
    family("shmdask_workers_memory_bytes", "gauge",
           "Resident memory of all workers together.").add(total[-1])
    family("shmdask_tasks_per_second", "gauge",
           "Tasks finished per second, over the last second.").add(float(rate[-1]))
    started = info.get("started")
    if isinstance(started, int | float):
        family("shmdask_scheduler_start_time_seconds", "gauge",
               "When the scheduler started, in seconds since the epoch.").add(float(started))
    return "\n".join(line for f in families for line in f.lines()) + "\n"
