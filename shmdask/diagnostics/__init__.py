"""Diagnostics: what ran where (task stream, Gantt picture) and how far a run is.

In: task-stream records and memory samples from the engine, progress callbacks.
Out: stores (``TaskStream``, fed memory samples by ``MemorySampler``), the
``get_task_stream()`` context (``TaskStreamContext``), pictures
(``plot_task_stream``), numbers (``summarize``, ``lane_layout``, ``stats_line``)
and progress bars (``ProgressBar``, ``progress``).

Importing this package is cheap: matplotlib is loaded only when a picture is drawn.
"""

from __future__ import annotations

from typing import Any

from .progress import NotebookProgressBar, ProgressBar, make_progress_bar, progress
from .task_stream import MemorySampler, TaskStream, TaskStreamContext

__all__ = [
    "MemorySampler",
    "NotebookProgressBar",
    "ProgressBar",
    "TaskStream",
    "TaskStreamContext",
    "lane_layout",
    "make_progress_bar",
    "plot_task_stream",
    "progress",
    "stats_line",
    "summarize",
]

# name -> module: the picture and its numbers load numpy (and, to draw, matplotlib)
# on first use only
_LAZY_NAMES = {"plot_task_stream": "gantt", "summarize": "summary", "lane_layout": "summary",
               "stats_line": "summary"}


def __getattr__(name: str) -> Any:
    module = _LAZY_NAMES.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
