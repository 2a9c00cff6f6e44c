"""dask's ``get_task_stream()`` context, and the sampler of memory over time.

In: the engine's :class:`~shmdask.scheduler.records.TaskStream` (the log of
task-stream records, kept by the scheduler core; re-exported here).  Out:
``TaskStreamContext`` -- the records of the tasks that ran inside a block of
user code, optionally drawn -- and memory samples appended to the same log.

``MemorySampler`` is the producer of memory samples: a daemon thread that every
``interval`` seconds asks the cluster how much shared memory is in use and which
pid each worker has, measures each pid's RSS with psutil, and appends one sample.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from shmdask.scheduler.records import TaskStream

__all__ = ["TaskStream", "TaskStreamContext", "MemorySampler"]


class TaskStreamContext:
    """``with TaskStreamContext(stream) as ts: ...`` then ``ts.data`` holds the records
    of the tasks that ran inside the block (dask's ``get_task_stream()`` semantics).

    ``stream`` is a TaskStream or a zero-argument callable returning one (so that
    the store may be looked up lazily, e.g. from whichever engine is current).
    With ``plot=True`` the picture is drawn on exit (into ``.figure``) and written
    to ``filename`` if one is given.
    """

    def __init__(
        self,
        stream: TaskStream | Any,
        plot: bool = False,
        filename: str | os.PathLike | None = None,
    ):
        if not isinstance(stream, TaskStream) and not callable(stream):
            raise TypeError(
                f"TaskStreamContext needs a TaskStream (or a callable returning one), "
                f"got {type(stream).__name__}"
            )
        if filename is not None:
            from .figure import check_filename

            check_filename(filename)
        self._source = stream
        self._stream: TaskStream | None = None
        self._start = 0
        self._memory_start = 0
        self.plot_on_exit = bool(plot)
        self.filename = filename
        self.data: list[dict] = []
        self.memory: list[dict] = []
        self.figure = None

    def _resolve(self) -> TaskStream:
        stream = self._source if isinstance(self._source, TaskStream) else self._source()
        if not isinstance(stream, TaskStream):
            raise TypeError(f"expected a TaskStream, the callable gave {type(stream).__name__}")
        return stream

    def __enter__(self) -> TaskStreamContext:
        self._stream = self._resolve()
        self._start = self._stream.position
        self._memory_start = self._stream.memory_position
        self.data = []
        self.memory = []
        return self

    def __exit__(self, *exc_info) -> None:
        self.collect()
        if self.plot_on_exit and exc_info[0] is None:
            self.figure = self.plot(self.filename)

    def collect(self) -> list[dict]:
        """Capture the records added since ``__enter__`` into ``.data`` (again)."""
        if self._stream is None:
            raise RuntimeError("TaskStreamContext.collect() before entering the context")
        self.data = self._stream.records_since(self._start)
        self.memory = self._stream.memory_since(self._memory_start)
        return self.data

    def summary(self) -> dict:
        from .summary import summarize

        return summarize(self.data)

    def plot(self, filename: str | os.PathLike | None = None, title: str | None = None):
        """Draw the captured records (Gantt + memory panel); returns the Figure."""
        from .gantt import plot_task_stream

        return plot_task_stream(self.data, self.memory, filename=filename, title=title)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"<TaskStreamContext: {len(self.data)} records>"


class MemorySampler:
    """Append a memory sample ``{"time", "shm_bytes", "spilled_bytes", "rss": {worker:
    bytes}, "done"}``
    to ``stream`` every ``interval`` seconds, on a daemon thread.

    ``worker_pids()`` maps worker id -> pid (thread workers share one pid, which
    is fine); ``shm_bytes()`` and ``done()`` report the shared memory in use and
    the tasks finished so far. A worker whose process has gone is left out of
    that sample. Use ``start()``/``stop()`` or ``with MemorySampler(...):``.
    """

    def __init__(
        self,
        stream: TaskStream,
        worker_pids: Callable[[], Mapping[str, int]],
        shm_bytes: Callable[[], int] = lambda: 0,
        spilled_bytes: Callable[[], int] = lambda: 0,
        done: Callable[[], int] = lambda: 0,
        interval: float = 0.1,
        clock: Callable[[], float] = time.time,
    ):
        if not interval > 0:
            raise ValueError(f"MemorySampler needs interval > 0, got {interval!r}")
        self.stream = stream
        self.interval = interval
        self._worker_pids = worker_pids
        self._shm_bytes = shm_bytes
        self._spilled_bytes = spilled_bytes
        self._done = done
        self._clock = clock
        self._processes: dict[int, Any] = {}  # pid -> psutil.Process, reused
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _rss(self, pid: int) -> int | None:
        import psutil

        proc = self._processes.get(pid)
        try:
            if proc is None:
                proc = self._processes[pid] = psutil.Process(pid)
            return int(proc.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._processes.pop(pid, None)
            return None

    def sample(self) -> dict:
        """Take one sample now, append it to the stream and return it."""
        rss = {}
        for worker, pid in dict(self._worker_pids()).items():
            value = self._rss(pid)
            if value is not None:
                rss[str(worker)] = value
        sample = {
            "time": self._clock(),
            "shm_bytes": int(self._shm_bytes()),
            "spilled_bytes": int(self._spilled_bytes()),
            "rss": rss,
            "done": int(self._done()),
        }
        self.stream.add_memory_sample(sample)
        return sample

    def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a diagnostic must never kill a run
                pass
            if self._stop.wait(self.interval):
                return

    def start(self) -> MemorySampler:
        import psutil  # noqa: F401 - imported here, not in the first sample's timing

        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="shmdask-memory-sampler", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (after one last sample, so the picture reaches the end)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join()
        self._thread = None
        try:
            self.sample()
        except Exception:  # noqa: BLE001 - see _run
            pass

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
