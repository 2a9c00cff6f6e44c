"""What a Client asks of its cluster besides tasks: descriptions, the task stream, calls.

In: a started client's connection.  Out: ``scheduler_info``, ``nthreads``, the
dashboard's address and the client's repr; the task stream (``get_task_stream``,
``plot_task_stream``); and dask's scheduler-side calls (``run``,
``run_on_scheduler``, ``upload_file``, ``retire_workers``, logs, ``shutdown``),
each one ``connection.call(verb, ...)`` answered by
:mod:`shmdask.cluster.scheduler_calls` (in this process, or over TCP).

:class:`ClusterCalls` is a part of :class:`~shmdask.client.Client` (it uses the
client's connection, ``cluster``, ``_check_alive`` and ``_maybe_async``).
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shmdask.diagnostics.task_stream import TaskStreamContext
from shmdask.units import format_bytes

if TYPE_CHECKING:  # pragma: no cover
    from shmdask.client import Client


class ClusterCalls:
    """The cluster-facing verbs of a Client (see the module docstring)."""

    def scheduler_info(self: Client) -> dict:
        return self.connection.scheduler_info()

    def nthreads(self: Client) -> Any:
        """``{worker: threads}``."""
        return self._maybe_async(lambda: {w: info["nthreads"] for w, info in
                                          self.scheduler_info()["workers"].items()})

    ncores = nthreads

    @property
    def dashboard_link(self: Client) -> str | None:
        """The live dashboard's address, as in dask (None when the scheduler has none)."""
        if self.cluster is not None:
            return getattr(self.cluster, "dashboard_link", None)
        from shmdask.diagnostics.dashboard.service import dashboard_link_of

        try:
            return dashboard_link_of(self.scheduler_info(),
                                     getattr(self.connection, "address", None))
        except Exception:  # describing must never fail
            return None

    def __repr__(self: Client) -> str:
        if self.closed:
            return f"<Client: {self.id} closed>"
        if not self.started:
            return f"<Client: {self.id} not started (await it)>"
        try:
            info = self.scheduler_info()
        except Exception:  # describing must never fail
            return f"<Client: {self.id}>"
        workers = info.get("workers", {})
        threads = sum(w.get("nthreads", 0) for w in workers.values())
        memory = sum(w.get("memory_limit", 0) or 0 for w in workers.values())
        link = self.dashboard_link
        return (f"<Client: {info.get('address', 'inproc')!r} processes={len(workers)} "
                f"threads={threads}, memory={format_bytes(memory)}"
                f"{f', dashboard={link}' if link else ''}>")

    def _repr_html_(self: Client) -> str:
        if self.closed or not self.started:
            return f"<b>Client {self.id}</b>: {'closed' if self.closed else 'not started'}"
        info = self.scheduler_info()
        rows = "".join(
            f"<tr><td>{html.escape(str(wid))}</td><td>{w.get('kind', '')}</td>"
            f"<td>{w.get('nthreads', '')}</td><td>{format_bytes(w.get('memory_limit') or 0)}"
            f"</td><td>{format_bytes(w.get('metrics', {}).get('memory', 0))}</td></tr>"
            for wid, w in info.get("workers", {}).items()
        )
        link = self.dashboard_link
        dashboard = (f'<br>Dashboard: <a href="{html.escape(link)}" target="_blank">'
                     f"{html.escape(link)}</a>" if link else "")
        return (
            f"<div><b>Client</b> {html.escape(self.id)} &mdash; scheduler "
            f"{html.escape(str(info.get('address', 'inproc')))}{dashboard}"
            "<table><tr><th>worker</th><th>kind</th><th>threads</th><th>memory limit</th>"
            f"<th>memory</th></tr>{rows}</table></div>"
        )

    # -- the task stream --------------------------------------------------------------

    def get_task_stream(self: Client, plot: bool = False, filename: str | None = None
                        ) -> TaskStreamContext:
        """``with client.get_task_stream() as ts: ...``: ``ts.data`` holds the
        records of the tasks run inside the block; ``ts.plot()`` draws them."""
        return TaskStreamContext(self.connection.task_stream, plot=plot, filename=filename)

    def plot_task_stream(self: Client, filename: str | None = None) -> Any:
        """Draw every task since the client started, or since the last call."""
        from shmdask.diagnostics.gantt import plot_task_stream

        stream = self.connection.task_stream()
        records = stream.records_since(self._plot_from[0])
        memory = stream.memory_since(self._plot_from[1])
        self._plot_from = self._stream_position()
        return plot_task_stream(records, memory, filename=filename)

    # -- scheduler-side calls (shmdask.cluster.scheduler_calls) -----------------------

    def run(self: Client, function: Callable, *args: Any, workers: list | None = None,
            wait: bool = True, nanny: bool = False, on_error: str = "raise",
            **kwargs: Any) -> dict:
        """Call ``function(*args, **kwargs)`` in every worker process (or those in
        ``workers``), beside their tasks; returns ``{worker: result}``.  A
        function with a ``dask_worker`` parameter is given the worker."""
        if not callable(function):
            raise TypeError(f"run() needs a callable, not {type(function).__name__}")
        if nanny:
            raise ValueError("run(nanny=True): shmdask workers have no nanny process")
        self._check_alive()
        result = self.connection.call("run", function=function, args=args, kwargs=kwargs,
                                      workers=workers, on_error=on_error)
        return result if wait else None

    def run_on_scheduler(self: Client, function: Callable, *args: Any, **kwargs: Any) -> Any:
        """Call ``function(*args, **kwargs)`` in the scheduler's process (for a
        LocalCluster: this one); a ``dask_scheduler`` parameter gets ``cluster.scheduler``."""
        if not callable(function):
            raise TypeError(f"run_on_scheduler() needs a callable, not "
                            f"{type(function).__name__}")
        self._check_alive()
        return self.connection.call("run_on_scheduler", function=function, args=args,
                                    kwargs=kwargs)

    def upload_file(self: Client, filename: str, load: bool = True) -> dict:
        """Send a ``.py``, ``.zip`` or ``.egg`` file to every worker and make it
        importable there (a ``.py`` is imported at once); workers started later
        get it too.  Returns ``{worker: where it was saved}``."""
        import os

        if not os.path.isfile(filename):
            raise FileNotFoundError(f"upload_file: no such file {filename!r}")
        with open(filename, "rb") as f:
            data = f.read()
        self._check_alive()
        return self.connection.call("upload_file", filename=os.path.basename(filename),
                                    data=data)

    def retire_workers(self: Client, workers: list | None = None, close_workers: bool = True,
                       n: int | None = None, **kwargs: Any) -> dict:
        """Stop workers gracefully: they take no new tasks, finish the ones they
        hold, and go; their results stay.  ``n``: how many (idle first); neither:
        all idle workers but one.  Returns ``{worker: info}``."""
        self._check_alive()
        return self.connection.call("retire_workers", workers=workers, n=n)

    def shutdown(self: Client) -> None:
        """Close the cluster (scheduler and workers) and this client."""
        cluster = self.cluster
        if cluster is not None:
            self.close()
            cluster.close()
            return
        if not self.closed and self.connection.alive():
            self.connection.call("shutdown")
        self.close()

    def get_worker_logs(self: Client, n: int | None = None, workers: list | None = None) -> dict:
        """``{worker: [(level, line), ...]}``: the log lines each worker kept."""
        self._check_alive()
        return self.connection.call("worker_logs", workers=workers, n=n)

    def get_scheduler_logs(self: Client, n: int | None = None) -> list:
        """``[(level, line), ...]``: the scheduler process's kept log lines."""
        self._check_alive()
        return self.connection.call("scheduler_logs", n=n)

    def wait_for_workers(self: Client, n_workers: int = 1, timeout: float | None = None) -> None:
        """Block until the scheduler has at least ``n_workers`` workers."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.scheduler_info()["workers"]) < n_workers:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n_workers} workers after {timeout} s")
            time.sleep(0.05)
