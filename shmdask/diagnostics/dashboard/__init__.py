"""The live dashboard: a read-only web page of a running cluster, and its saved form.

In: a cluster's engine (task stream, scheduler state, the graphs it accepts) and
``scheduler_info()``.  Out: an HTTP server on loopback (``http://127.0.0.1:8787/status``
by default, as dask's) with

* the page -- task stream of the last seconds, progress per task group, workers,
  memory and tasks per second over time, the graph of the current computation;
* the JSON API under ``/api/`` that the page reads (``info``, ``task-stream``,
  ``progress``, ``workers``, ``memory``, ``graph``);
* ``/metrics`` in Prometheus' text format;

and, after a run, the same page as one offline file (``write_report``,
``performance_report``).

Parts: ``model`` (pure accounting, the JSON shapes), ``collector`` (reads a
running engine without stopping it), ``server`` (HTTP), ``metrics``
(Prometheus text), ``report`` (report.html), ``service`` (start and close one
cluster's dashboard), ``static/`` (the page: our own HTML, CSS and canvas-drawing
JavaScript, no library).
"""

from __future__ import annotations

from .report import performance_report, report_data, report_html, write_report
from .service import (
    DEFAULT_ADDRESS,
    Dashboard,
    DashboardPortWarning,
    parse_dashboard_address,
    start_dashboard,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "Dashboard",
    "DashboardPortWarning",
    "parse_dashboard_address",
    "performance_report",
    "report_data",
    "report_html",
    "start_dashboard",
    "write_report",
]
