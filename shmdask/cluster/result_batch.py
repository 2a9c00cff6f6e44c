"""Finished tasks on their way from a worker to the scheduler, as columns.

In: one row per finished task, added by a worker's executor threads to the
worker's :class:`ResultBatch`.  Out: when the worker flushes (see worker.py),
the batch's :meth:`~ResultBatch.columns` are the body of one "results"
message, which the scheduler's side (the pipe's reader in pipe_transport, a
TCP session in tcp_sessions) reads as :class:`ResultColumns`::

    keys            the tasks' keys, in the order they finished
    values          each task's result: a Stored, or the value itself when it
                    is immediate (protocol.is_immediate)
    lanes           the thread that ran it ("worker-0/1", the worker's own id)
    starts, stops   time.time() around the task, on the worker's clock
    nbytes, wheres  the result's size and where it went ("shm", "disk", "inline")
    stored_at       positions in ``values`` of the Stored ones: the reader
                    takes only these into its store
    errors          one row (key, pickled exception, traceback text, lane,
                    start, stop) per task that raised

Why columns and not a tuple per task: the scheduler's process pays, for every
result, each object it unpickles and each Python step it takes, and on small
tasks that process's GIL is what limits a LocalCluster.  Columns unpickle to a
few tuples, with the repeated lane and "where" strings pickled once, and
the reader makes task-stream records and the engine's results from them with
``zip``, in C, instead of a loop that looks at every entry: reading a batch
of 100 no-op results went from 0.79-1.38 to 0.39 us per result (timeit).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from shmdask.cluster.protocol import Stored


class ResultColumns(NamedTuple):
    """The body of a "results" message (see the module docstring)."""

    keys: tuple
    values: tuple
    lanes: tuple
    starts: tuple
    stops: tuple
    nbytes: tuple
    wheres: tuple
    stored_at: list
    errors: list

    @property
    def stamps(self) -> tuple:
        """The task-stream columns (lanes, starts, stops, nbytes, wheres): with
        the keys and the worker, the compact records of scheduler.records."""
        return self[2:7]

    def stored(self) -> list[Stored]:
        """The Stored values, each detached from the message it came in."""
        values = self.values
        return [values[i].detach() for i in self.stored_at]

    def failures(self) -> list[tuple]:
        """``(key, pickled exception, traceback text, stamps)`` per task that
        raised; its stamps are shaped as a finished task's (it made no result:
        0 bytes, "inline")."""
        return [(key, exc, tb, (lane, start, stop, 0, "inline"))
                for key, exc, tb, lane, start, stop in self.errors]


class ResultBatch:
    """Rows of finished tasks a worker holds until it flushes them."""

    __slots__ = ("rows", "errors")

    def __init__(self) -> None:
        self.rows: list[tuple] = []  # (key, value, lane, start, stop, nbytes, where)
        self.errors: list[tuple] = []  # (key, pickled exception, traceback, lane, start, stop)

    def add(self, row: tuple, failed: bool) -> None:
        """One finished task: a row of ``rows``, or of ``errors`` if it ``failed``."""
        (self.errors if failed else self.rows).append(row)

    def __bool__(self) -> bool:
        return bool(self.rows or self.errors)

    def columns(self) -> tuple:
        """The message body: a plain tuple in :class:`ResultColumns`' order."""
        if self.rows:
            keys, values, lanes, starts, stops, nbytes, wheres = zip(*self.rows, strict=True)
        else:
            keys = values = lanes = starts = stops = nbytes = wheres = ()
        stored_at = [i for i, value in enumerate(values) if type(value) is Stored]
        return (keys, values, lanes, starts, stops, nbytes, wheres, stored_at, self.errors)


def read_columns(body: Any) -> ResultColumns:
    """A "results" body, unpickled, as :class:`ResultColumns`; anything else
    (a peer speaking another protocol) is an error that names it."""
    if type(body) is not tuple or len(body) != len(ResultColumns._fields):
        raise ValueError(f"a results message must hold {len(ResultColumns._fields)} "
                         f"columns, got {type(body).__name__}")
    return ResultColumns._make(body)


__all__ = ["ResultBatch", "ResultColumns", "read_columns"]
