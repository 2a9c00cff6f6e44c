"""BornBlocks: the shared-memory blocks a worker hands out through
:func:`shmdask.result_buffers.empty`, until each is claimed or freed.

In: ``make(shape, dtype)`` from a task thread -> an ndarray over a fresh block
of the worker's result allocator (shared memory, or a spill file past the
budget).  Out: ``claim(address, nbytes)`` from ``serialize_value`` -> the
block's reference, when the result being stored is exactly that block: the
result is then kept where it was made, with no copy.

Who frees a block.  A claimed block belongs to the scheduler's store from then
on, as any result's block does.  An unclaimed one (the task made an
intermediate, returned something else, or raised) is freed when its array
dies: a ``weakref.finalize`` on the array, which views of it keep alive.  So
no block is freed while an array can still reach it, and none is leaked.
The one rule for a task that asks for such an array: return it, or let it
go -- a view of a claimed block kept past the task would see the block's
next value once the scheduler frees it.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np


class BornBlocks:
    """Blocks of one worker's result allocator that tasks are filling."""

    def __init__(self, allocator: Any, threshold: int):
        self.allocator = allocator
        self.threshold = threshold
        self._blocks: dict[int, tuple] = {}  # data address -> (ref, nbytes, finalizer)
        self.claimed = 0  # results kept without a copy

    def make(self, shape: tuple, dtype: np.dtype) -> np.ndarray | None:
        """An array over a new block, or None (small, object dtype, no room)."""
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if nbytes < self.threshold or dtype.hasobject:
            return None
        try:
            ref, view = self.allocator.alloc(nbytes)
        except OSError:  # /dev/shm full and no spill folder: numpy's memory then
            return None
        # The finalizer goes on the flat array over the block: numpy makes it the
        # base of every view of the block (of the reshaped array too), so it
        # dies only with the last of them.
        flat = np.frombuffer(view, dtype, count)
        address = flat.__array_interface__["data"][0]
        self._blocks[address] = (ref, nbytes, weakref.finalize(flat, self._died, address))
        return flat.reshape(shape)

    def _died(self, address: int) -> None:
        entry = self._blocks.pop(address, None)
        if entry is not None:
            self.allocator.free([entry[0]])

    def claim(self, address: int, nbytes: int) -> Any:
        """The reference of the block at ``address`` if it is one of ours of
        exactly ``nbytes``, now the result's; None otherwise."""
        entry = self._blocks.get(address)
        if entry is None or entry[1] != nbytes or entry[2].detach() is None:
            return None  # (detach() is None: its array died and freed it meanwhile)
        self._blocks.pop(address, None)
        self.claimed += 1
        return entry[0]

    @property
    def outstanding(self) -> int:
        """Blocks handed out and neither claimed nor freed yet.  (Not
        ``__len__``: an empty BornBlocks must not test false.)"""
        return len(self._blocks)
