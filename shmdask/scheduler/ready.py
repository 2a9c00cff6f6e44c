"""ReadyQueue: ready tasks, smallest entry first, cheap to fill in bulk.

In: entries ``(priority, sequence number, task)`` -- one at a time as tasks
become ready while a graph runs, or a whole graph's roots at once.  Out: the
smallest entry (:meth:`pop`), or a look at it (:meth:`first`).  Sequence
numbers are unique, so two entries never compare their tasks.

Why two containers.  A heap serves single pushes well, but every pop from a
heap of n entries costs about 2 log n comparisons of nested priority tuples:
for the 10,000 roots of a graph of tiny tasks that was a tenth of the
scheduler's time.  A big batch is instead sorted once (in C; a graph's
roots arrive nearly in order, which the sort finds in linear time) into a
*run*, kept largest first so that a pop is ``list.pop()``.  A pop takes the
smaller of the run's end and the heap's top, so the order is exactly that
of one heap holding every entry.  A batch at least as big as the run left
is merged into it by sorting both (two sorted runs: linear again); a
smaller one goes to the heap, so a graph streamed in many pieces never pays
for the whole run once per piece.
"""

from __future__ import annotations

import heapq

BULK = 64  # a batch at least this big becomes (or joins) the sorted run


class ReadyQueue:
    """Entries in ascending order; see the module docstring."""

    __slots__ = ("heap", "run")

    def __init__(self) -> None:
        self.heap: list[tuple] = []
        self.run: list[tuple] = []  # sorted largest first: the smallest is run[-1]

    def __bool__(self) -> bool:
        return bool(self.heap or self.run)

    def __len__(self) -> int:
        return len(self.heap) + len(self.run)

    def push(self, entry: tuple) -> None:
        heapq.heappush(self.heap, entry)

    def extend(self, entries: list[tuple]) -> None:
        """Add many entries; ``entries`` may become the queue's own list."""
        if len(entries) < BULK or len(entries) < len(self.run):
            # (merging costs the whole run: only a batch at least as big may,
            # so each entry is moved O(1) times however many batches come)
            for entry in entries:
                heapq.heappush(self.heap, entry)
            return
        if self.run:
            entries.extend(self.run)
        entries.sort(reverse=True)
        self.run = entries

    def first(self) -> tuple:
        """The smallest entry, left in place (the queue must not be empty)."""
        heap, run = self.heap, self.run
        if run and (not heap or run[-1] < heap[0]):
            return run[-1]
        return heap[0]

    def pop(self) -> tuple:
        """Remove and return the smallest entry (the queue must not be empty)."""
        heap, run = self.heap, self.run
        if run and (not heap or run[-1] < heap[0]):
            return run.pop()
        return heapq.heappop(heap)
