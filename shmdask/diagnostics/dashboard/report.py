"""A saved run as one self-contained HTML file: the dashboard page, offline.

In: task-stream records, memory samples and the workers of a run (what
``shmdask run`` and ``performance_report`` capture).  Out: ``report.html`` --
the live page's HTML with its style and script inlined and the whole run
embedded as JSON in the shapes of the ``/api/`` endpoints, so the same script
draws it without a server or a network.

``performance_report(filename=...)`` is dask's context manager: the tasks run
inside the block, on the default Client, go into such a file on exit.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..summary import worker_of
from .model import (
    GroupProgress,
    MemorySeries,
    TaskWindow,
    info_payload,
    no_graph,
    progress_payload,
    worker_rows,
)
from .server import static_text

CSS_LINK = '<link rel="stylesheet" href="/static/dashboard.css">'
JS_TAG = '<script src="/static/dashboard.js"></script>'


def report_data(records: Iterable[Mapping], memory: Iterable[Mapping] = (),
                workers: Mapping[str, Mapping] | None = None, title: str | None = None,
                graph: Mapping | None = None) -> dict[str, Any]:
    """What the page needs to show a finished run (the API's shapes, whole run)."""
    records = list(records)
    samples = list(memory)
    window = TaskWindow(seconds=float("inf"), max_records=len(records) + 1)
    window.add(records)
    end = window.newest if records else time.time()
    progress = GroupProgress()
    progress.add_records(records)
    rows = progress.rows(window.colors())
    series = MemorySeries(seconds=float("inf"), max_samples=len(samples) + 1)
    series.add(samples)
    table = worker_rows(workers or _workers_from(records))
    first = window.oldest if records else end
    done = sum(r["done"] for r in rows)
    return {
        "info": info_payload(table, end, done, live=False, title=title or "shmdask report",
                             saved=time.time(), started=first),
        "tasks": window.since(None, end, float("inf")),
        "progress": progress_payload(rows, end, done),
        "workers": {"now": end, "workers": table},
        "memory": series.since(None),
        "graph": dict(graph) if graph else no_graph(),
    }


def _workers_from(records: list[Mapping]) -> dict[str, dict]:
    """Workers as far as the records tell (when nobody described them)."""
    workers: dict[str, dict] = {}
    for rec in records:
        wid = worker_of(rec)
        w = workers.setdefault(wid, {"name": wid, "pid": None, "host": None,
                                     "kind": "remote" if rec.get("remote") else "local",
                                     "nthreads": 0, "lanes": set()})
        lane = str(rec.get("lane", ""))
        if not lane.endswith("/transfer"):
            w["lanes"].add(lane)
    for w in workers.values():
        w["nthreads"] = len(w.pop("lanes")) or None
    return workers


def report_html(data: Mapping[str, Any]) -> str:
    """The page with its style, script and ``data`` inside: one file, no network."""
    page = static_text("index.html")
    css = static_text("dashboard.css")
    js = static_text("dashboard.js")
    if "</script" in js.lower() or "</style" in css.lower():  # pragma: no cover - our files
        raise RuntimeError("the dashboard's script or style cannot be inlined")
    # "<" never appears raw in the JSON, so nothing in it can end the script element
    embedded = json.dumps(data, separators=(",", ":"), allow_nan=False,
                          default=str).replace("<", "\\u003c")
    if CSS_LINK not in page or JS_TAG not in page:  # pragma: no cover - our files
        raise RuntimeError("the dashboard page lost its style or script tag")
    page = page.replace(CSS_LINK, f"<style>\n{css}</style>")
    page = page.replace(JS_TAG, f'<script id="shmdask-data" type="application/json">{embedded}'
                                f"</script>\n<script>\n{js}</script>")
    return page


def write_report(filename: str | os.PathLike, records: Iterable[Mapping],
                 memory: Iterable[Mapping] = (), workers: Mapping[str, Mapping] | None = None,
                 title: str | None = None, graph: Mapping | None = None) -> str:
    """Write ``report.html`` of a run; returns its path."""
    path = os.fspath(filename)
    if not path.lower().endswith((".html", ".htm")):
        raise ValueError(f"a report is an HTML file: give a name ending in .html, not {path!r}")
    html = report_html(report_data(records, memory, workers, title, graph))
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(html)
    os.replace(tmp, path)
    return path


class performance_report:  # noqa: N801 - dask's name
    """``with performance_report(filename="dask-report.html"): ...`` writes the task
    stream, progress, workers and memory of the block's work on the default Client
    into one HTML file that opens offline."""

    def __init__(self, filename: str | os.PathLike = "dask-report.html",
                 stacklevel: int = 1, mode: Any = None, storage_options: Any = None):
        path = os.fspath(filename)
        if not path.lower().endswith((".html", ".htm")):
            raise ValueError(f"performance_report writes HTML: give a filename ending in "
                             f".html, not {path!r}")
        self.filename = path
        self._context: Any = None
        self._client: Any = None
        self._started = 0.0

    def __enter__(self) -> performance_report:
        from shmdask import config
        from shmdask.client import Client

        client = config.get("scheduler", None)
        if not isinstance(client, Client) or client.closed:
            raise RuntimeError("performance_report needs a Client: create one first "
                               "(client = Client()); its work inside the block is reported")
        self._client = client
        self._context = client.get_task_stream()
        self._context.__enter__()
        self._started = time.time()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        context, client = self._context, self._client
        context.__exit__(*exc_info)
        try:
            workers = client.scheduler_info().get("workers", {})
        except Exception:  # the cluster went away inside the block: the records tell
            workers = None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._started))
        write_report(self.filename, context.data, context.memory, workers,
                     title=f"shmdask performance report, {stamp}")
