"""Where task-stream records are kept, and dask's ``get_task_stream()`` context.

In: batches of task-stream records (plain dicts, one per task run or transfer, as
stamped by workers) and memory samples, appended by the engine's scheduler thread.
Out: slices of them, by absolute position, for whoever asks -- a
``TaskStreamContext`` around a block of user code, the Gantt plot after a run,
the progress display, ``Client.get_task_stream()``.

Why shaped so: the engine appends on its hot path, so an append is one lock
acquisition per *batch* and a ``list.extend`` -- no per-record work, no copying.
Readers address records by absolute index (the number of records ever added
before it), which stays valid when old records are dropped to bound memory: a
long-lived client keeps the newest ``max_records`` and forgets the oldest in big
chunks (amortised O(1)). Readers get copies of the slice they asked for, so
nothing they do reaches the store and nothing the engine appends later changes
what they hold.

``MemorySampler`` is the producer of memory samples: a daemon thread that every
``interval`` seconds asks the cluster how much shared memory is in use and which
pid each worker has, measures each pid's RSS with psutil, and appends one sample.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

DEFAULT_MAX_RECORDS = 500_000


class TaskStream:
    """Thread-safe, append-only store of task-stream records and memory samples."""

    def __init__(
        self, max_records: int | None = DEFAULT_MAX_RECORDS, max_samples: int | None = 100_000
    ):
        for name, value in (("max_records", max_records), ("max_samples", max_samples)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        self._lock = threading.Lock()
        self._records: list[dict] = []
        self._samples: list[dict] = []
        self._dropped = 0  # records forgotten from the front
        self._samples_dropped = 0
        self.max_records = max_records
        self.max_samples = max_samples

    # -- writers (engine thread) -------------------------------------------------

    def add(self, records: Iterable[dict]) -> None:
        """Append a batch of records (one lock acquisition for the whole batch)."""
        if not isinstance(records, list):
            records = list(records)
        with self._lock:
            self._records.extend(records)
            if self.max_records is not None and len(self._records) > self.max_records:
                self._dropped += _trim(self._records, self.max_records)

    def add_memory_sample(self, sample: dict) -> None:
        """Append one memory sample ``{"time", "shm_bytes", "rss": {...}, "done"}``."""
        if not isinstance(sample, Mapping) or "time" not in sample:
            raise ValueError(f"a memory sample needs a 'time' field, got {sample!r}")
        with self._lock:
            self._samples.append(sample)
            if self.max_samples is not None and len(self._samples) > self.max_samples:
                self._samples_dropped += _trim(self._samples, self.max_samples)

    # -- readers -------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Absolute index one past the newest record (``records_since(position)`` is [])."""
        with self._lock:
            return self._dropped + len(self._records)

    @property
    def memory_position(self) -> int:
        with self._lock:
            return self._samples_dropped + len(self._samples)

    def __len__(self) -> int:
        """Number of records still held."""
        with self._lock:
            return len(self._records)

    def records_since(self, index: int = 0) -> list[dict]:
        """Copies of the records from absolute position ``index`` on (those already
        dropped are gone: the slice then starts at the oldest held)."""
        with self._lock:
            held = self._records[max(index - self._dropped, 0) :]
        return [dict(r) for r in held]

    def memory_since(self, index: int = 0) -> list[dict]:
        """Copies of the memory samples from absolute position ``index`` on."""
        with self._lock:
            held = self._samples[max(index - self._samples_dropped, 0) :]
        return [_copy_sample(s) for s in held]

    def read(self, index: int = 0) -> tuple[list[dict], int]:
        """``(records_since(index), position)`` read at one instant: the position
        to read from next time, so a poller never sees a record twice or misses one
        that is still held."""
        with self._lock:
            held = self._records[max(index - self._dropped, 0) :]
            end = self._dropped + len(self._records)
        return [dict(r) for r in held], end

    def read_memory(self, index: int = 0) -> tuple[list[dict], int]:
        """``(memory_since(index), memory_position)`` read at one instant."""
        with self._lock:
            held = self._samples[max(index - self._samples_dropped, 0) :]
            end = self._samples_dropped + len(self._samples)
        return [_copy_sample(s) for s in held], end

    def clear(self) -> None:
        """Forget everything held; positions keep counting up."""
        with self._lock:
            self._dropped += len(self._records)
            self._samples_dropped += len(self._samples)
            self._records.clear()
            self._samples.clear()

    def __repr__(self) -> str:
        return f"<TaskStream: {len(self)} records, {len(self._samples)} memory samples>"


def _trim(items: list, limit: int) -> int:
    """Drop the oldest entries so that at most ~3/4 of ``limit`` remain; dropping a
    quarter at a time keeps the amortised cost of trimming O(1) per append."""
    drop = len(items) - (limit * 3) // 4
    del items[:drop]
    return drop


def _copy_sample(sample: Mapping) -> dict:
    copy = dict(sample)
    if isinstance(copy.get("rss"), Mapping):
        copy["rss"] = dict(copy["rss"])
    return copy


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
        from .gantt import summarize

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
    """Append a memory sample ``{"time", "shm_bytes", "rss": {worker: bytes}, "done"}``
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
