"""The data plane of a cluster: values of keys as :class:`Stored` in shared memory.

What flows in and out::

    worker results (reader threads) ──adopt──▶ registry of live blocks per segment
    client scatter (user threads)   ──from_user──▶ (client's own slab allocator)
    engine releases keys            ──release──▶ blocks back to the owner's free list
                                                 (a "free" message to that worker)
    fetch                           ──to_user──▶ private, writeable copies
    TCP listener                    ──outgoing / alloc_incoming / incoming──▶ frames
                                      read straight into (and out of) our blocks

Data in shm outlives the worker that wrote it: when a worker dies, its
segments still holding live blocks are kept and unlinked once their last block
is released; its other segments (free cache, half-written results) go at once.
Every reader that maps a segment is told to forget it when it is unlinked, so
no mapping keeps dead memory alive.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from shmdask.cluster.protocol import SHM_THRESHOLD, Stored, deserialize_value, serialize_value
from shmdask.cluster.shm import (
    MappingCache,
    SlabAllocator,
    cluster_prefix,
    sweep,
    unlink_segment,
)
from shmdask.scheduler.engine import DataStore


class ShmStore(DataStore):
    """The data plane of a cluster: results and scattered data as :class:`Stored`.

    Thread-safety: ``adopt`` runs on worker reader threads, ``release`` on the
    engine thread, ``from_user``/``to_user`` on user threads; one lock guards
    the registry.
    """

    where = "shm"

    def __init__(self, cluster_id: str, threshold: int = SHM_THRESHOLD):
        self.cluster_id = cluster_id
        self.threshold = threshold
        self.allocator = SlabAllocator(cluster_id, "client")
        self.mappings = MappingCache(self.allocator)
        self._lock = threading.Lock()
        self._segments: dict[str, list] = {}  # name -> [owner, live blocks]
        self._workers: dict[str, Any] = {}  # worker id -> its handle (free, forget)
        self._dead: set[str] = set()
        self.values_by_owner: Counter = Counter()
        self.shm_bytes = 0
        self.shm_bytes_by_owner: Counter = Counter()  # live shm bytes each worker wrote
        self.closed = False

    # -- registry ------------------------------------------------------------

    def adopt(self, stored: Stored) -> None:
        """Count a new value's blocks (called before the engine sees it)."""
        with self._lock:
            if stored.live:
                return
            stored.live = True
            self.values_by_owner[stored.owner] += 1
            for name, _offset, length in stored.blocks:
                entry = self._segments.get(name)
                if entry is None:
                    entry = self._segments[name] = [stored.owner, 0]
                entry[1] += 1
                self.shm_bytes += length
                self.shm_bytes_by_owner[stored.owner] += length

    def add_worker(self, handle: Any) -> None:
        with self._lock:
            self._workers[handle.id] = handle

    def worker_lost(self, worker_id: str) -> None:
        """Unlink what nobody can use any more; keep segments with live blocks."""
        with self._lock:
            self._workers.pop(worker_id, None)
            self._dead.add(worker_id)
            keep = set()
            for name, (owner, live) in list(self._segments.items()):
                if owner != worker_id:
                    continue
                if live > 0:
                    keep.add(name)
                else:
                    del self._segments[name]
        removed = sweep(cluster_prefix(self.cluster_id, worker_id), keep=keep)
        if removed:
            self.segments_unlinked(worker_id, removed)

    def segments_unlinked(self, owner: str | None, names: list[str]) -> None:
        """``owner`` gave segments back: every other reader drops its mapping."""
        with self._lock:
            for name in names:
                self._segments.pop(name, None)
            others = [h for wid, h in self._workers.items() if wid != owner]
        self.mappings.forget(names)
        for handle in others:
            handle.forget(names)

    # -- DataStore -----------------------------------------------------------

    def to_user(self, value: Any) -> Any:
        if type(value) is not Stored:
            return value
        return deserialize_value(value, self.mappings, copy=True)

    def to_user_view(self, value: Any) -> Any:
        if type(value) is not Stored:
            return value
        return deserialize_value(value, self.mappings)  # views of our mappings: no copy

    def from_user(self, obj: Any) -> Stored:
        stored = serialize_value(obj, self.allocator, "client", self.threshold)
        self.adopt(stored)
        return stored

    def nbytes(self, value: Any) -> int:
        return value.nbytes if type(value) is Stored else 0

    def release(self, values: list) -> None:
        if not any(type(v) is Stored and v.buffers and v.where == "shm" for v in values):
            counts = self.values_by_owner
            with self._lock:  # inline values only (the common case): just count
                for value in values:
                    if type(value) is Stored and value.live:
                        value.live = False
                        counts[value.owner] -= 1
            return
        by_owner: dict[str, list] = {}
        unlink = []
        with self._lock:
            for value in values:
                if type(value) is not Stored or not value.live:
                    continue  # not ours, or released already: a block is freed once
                value.live = False
                self.values_by_owner[value.owner] -= 1
                for block in value.blocks:
                    self.shm_bytes -= block[2]
                    self.shm_bytes_by_owner[value.owner] -= block[2]
                    entry = self._segments.get(block[0])
                    if entry is None:
                        continue
                    entry[1] -= 1
                    if value.owner in self._dead:
                        if entry[1] <= 0:
                            del self._segments[block[0]]
                            unlink.append(block[0])
                    else:
                        by_owner.setdefault(value.owner, []).append(block)
            handles = {o: self._workers.get(o) for o in by_owner}
        for name in unlink:
            unlink_segment(name)
        if unlink:
            self.segments_unlinked(None, unlink)
        for owner, blocks in by_owner.items():
            if owner == "client":
                gone = self.allocator.free(blocks)
                if gone:
                    self.segments_unlinked("client", gone)
            elif handles[owner] is not None:
                handles[owner].free(blocks)

    # -- the wire (a TCP listener moves values of this store) ---------------------

    def outgoing(self, value: Any) -> Any:
        """``value`` as it leaves for a remote peer: blocks become views of our
        mappings, sent without a copy."""
        if type(value) is Stored and value.blocks:
            view = self.mappings.view
            return Stored(value.header,
                          [view(*b) if type(b) is tuple else b for b in value.buffers],
                          value.nbytes, value.owner)
        return value

    def alloc_incoming(self, nbytes: int) -> tuple | None:
        """A block to read an arriving buffer into, or None (keep it private)."""
        if nbytes < self.threshold or self.closed:
            return None
        try:
            return self.allocator.alloc(nbytes)
        except OSError:  # /dev/shm full: keep it in private memory
            return None

    def free_incoming(self, refs: list) -> None:
        """Give back blocks of arriving buffers that no value claimed."""
        if refs and not self.closed:
            gone = self.allocator.free(refs)
            if gone:
                self.segments_unlinked("client", gone)

    def incoming(self, stored: Stored) -> Stored:
        """A value that arrived (read into our blocks by ``alloc_incoming``)."""
        self.adopt(stored)
        return stored

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.mappings.close()
        self.allocator.close()
        sweep(cluster_prefix(self.cluster_id))


__all__ = ["ShmStore"]
