"""Task-stream records: the one factory that makes them, and the log that keeps them.

In: one record per task run (stamped by whoever ran it: a worker process, a
thread of the threads backend, the TCP listener for transfers), appended by
the engine's scheduler thread in batches.  Out: slices of them, by absolute
position, for whoever asks -- ``get_task_stream()``, the Gantt plot after a
run, the progress display, the dashboard.

A record is a plain dict (cheap to make in a worker, to pickle, to plot)::

    key, group      the task's key and its group (``key_split``: the colour)
    worker, lane    who ran it; a lane is one thread of a worker ("worker-0/1")
    start, stop     wall-clock seconds (time.time()), on the scheduler's clock
    nbytes, where   size of the result and where it went ("shm", "inline", "memory")
    kind            "compute" or "transfer"; transfers add "direction" ("to"/"from")
    remote          True for workers on other hosts
    error           True when the task raised (added by the engine)

A compute record made on this machine is logged in a compact form, a plain
tuple ``(key, worker, lane, start, stop, nbytes, where)`` (:func:`compute_record`),
and becomes the dict above only when someone reads it (:func:`record_dict`):
ten thousand tiny tasks make ten thousand records, and a worker process pickles
each one and the client unpickles it on its hot path, where a tuple of seven
plain values costs a third of a dict of ten.  A worker process sends the
last five fields as columns of a batch; its pipe's reader, which knows the
keys and the worker, makes the batch's records (:func:`compute_records`).
Any other record (a transfer, a remote worker's, an error) is a dict from the
start.

Why the log is shaped so: the engine appends on its hot path, so an append is
one lock acquisition per *batch* and a ``list.extend`` -- no per-record work,
no copying.  Readers address records by absolute index (the number of records
ever added before it), which stays valid when old records are dropped to bound
memory: a long-lived client keeps the newest ``max_records`` and forgets the
oldest in big chunks (amortised O(1)).  Readers get copies of the slice they
asked for, so nothing they do reaches the log and nothing appended later
changes what they hold.  This is part of the scheduler core: it imports nothing
above :mod:`shmdask.graph`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from itertools import repeat
from typing import Any

from shmdask.graph import key_split


def task_record(key: Any, worker: str, lane: str, start: float, stop: float,
                nbytes: int = 0, where: str = "memory", kind: str = "compute",
                remote: bool = False, group: str | None = None) -> dict:
    """One task-stream record (see the module docstring for the fields)."""
    return {
        "key": key,
        "group": key_split(key) if group is None else group,
        "worker": worker,
        "lane": lane,
        "start": start,
        "stop": stop,
        "nbytes": nbytes,
        "where": where,
        "kind": kind,
        "remote": remote,
    }


def compute_record(key: Any, worker: str, lane: str, start: float, stop: float,
                   nbytes: int = 0, where: str = "memory") -> tuple:
    """A compute record of a local worker, compactly (see the module docstring)."""
    return (key, worker, lane, start, stop, nbytes, where)


def compute_records(keys: Iterable, worker: str, lanes: Iterable, starts: Iterable,
                    stops: Iterable, nbytes: Iterable, wheres: Iterable) -> list[tuple]:
    """:func:`compute_record` for a batch of one worker's results given as
    columns (cluster.result_batch): one ``zip``, no Python step per record."""
    return list(zip(keys, repeat(worker), lanes, starts, stops, nbytes, wheres))  # noqa: B905 - repeat


def record_dict(record: tuple | dict) -> dict:
    """A record as the dict of the module docstring: a compact one is unfolded,
    a dict is returned as it is."""
    if type(record) is dict:
        return record
    key, worker, lane, start, stop, nbytes, where = record
    return task_record(key, worker, lane, start, stop, nbytes, where)


def record_duration(record: tuple | dict) -> float:
    """Seconds the task ran, from either form of its record."""
    if type(record) is tuple:
        return record[4] - record[3]
    return record["stop"] - record["start"]


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
        self._records: list[tuple | dict] = []
        self._samples: list[dict] = []
        self._dropped = 0  # records forgotten from the front
        self._samples_dropped = 0
        self.max_records = max_records
        self.max_samples = max_samples

    # -- writers (engine thread) -------------------------------------------------

    def add(self, records: Iterable[tuple | dict]) -> None:
        """Append a batch of records, dicts or compact (one lock acquisition for
        the whole batch)."""
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
        return self.read(index)[0]

    def memory_since(self, index: int = 0) -> list[dict]:
        """Copies of the memory samples from absolute position ``index`` on."""
        return self.read_memory(index)[0]

    def read(self, index: int = 0, copy: bool = True) -> tuple[list[dict], int]:
        """``(records_since(index), position)`` read at one instant: the position
        to read from next time, so a poller never sees a record twice or misses one
        that is still held.  ``copy=False`` hands out records logged as dicts
        themselves, for a reader that only looks at them (the dashboard, polling
        several times a second in the scheduler's process): a record is never
        changed once logged."""
        with self._lock:
            held = self._records[max(index - self._dropped, 0) :]
            end = self._dropped + len(self._records)
        if copy:
            return [dict(r) if type(r) is dict else record_dict(r) for r in held], end
        return [record_dict(r) for r in held], end

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
