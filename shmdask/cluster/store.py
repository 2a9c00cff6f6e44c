"""The data plane of a cluster: values of keys as :class:`Stored` in shared memory or on disk.

What flows in and out::

    worker results (reader threads) ──adopt──▶ registry of live blocks per segment,
                                               bytes per owner, an LRU per owner
    client scatter (user threads)   ──from_user──▶ (client's own slab allocator)
    engine releases keys            ──release──▶ blocks back to the owner's free list
                                                 (a "free" message to that worker);
                                                 spill files unlinked
    dispatch (engine thread)        ──touch──▶ inputs become most recently used
    memory watcher thread           ──spill──▶ cold values move to spill files
    fetch                           ──to_user──▶ private, writeable copies
    TCP listener                    ──outgoing / alloc_incoming / incoming──▶ frames
                                      read straight into (and out of) our blocks

Data in shm outlives the worker that wrote it: when a worker dies, its
segments still holding live blocks are kept and unlinked once their last block
is released; its other segments (free cache, half-written results) go at once.
Every reader that maps a segment is told to forget it when it is unlinked, so
no mapping keeps dead memory alive.

Spilling swaps a value's shm blocks for file blocks of the same shape
(spill.py) in place, under the lock: whatever is dispatched or fetched later
maps the file.  The old blocks are freed only once every task that was in
flight at the swap (it may hold the old addresses) has answered and every
fetch that started before it has finished, so no reader ever sees a block
that was handed out again.  Nothing of this runs on the engine thread.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shmdask.cluster.protocol import SHM_THRESHOLD, Stored, deserialize_value, serialize_value
from shmdask.cluster.shm import (
    MappingCache,
    SlabAllocator,
    cluster_prefix,
    sweep,
    unlink_segment,
)
from shmdask.cluster.spill import (
    BudgetedAllocator,
    SpillDir,
    is_file_block,
    remove_files,
    spill_directory,
)
from shmdask.scheduler.interfaces import DataStore


class ShmStore(DataStore):
    """The data plane of a cluster: results and scattered data as :class:`Stored`.

    Thread-safety: ``adopt`` runs on worker reader threads, ``release`` and
    ``touch`` on the engine thread, ``from_user``/``to_user`` on user threads,
    ``spill`` on the memory watcher's; one lock guards the registry.

    ``memory_limit`` (per worker) also bounds the shared memory of the client
    process's own values (scattered data, uploads): past ``spill_fraction`` of
    it they are written to the spill folder instead.
    """

    where = "shm"

    def __init__(self, cluster_id: str, threshold: int = SHM_THRESHOLD,
                 spill_dir: str | None = None, memory_limit: int | None = None,
                 spill_fraction: float | None = None):
        self.cluster_id = cluster_id
        self.threshold = threshold
        self.spill_path = spill_dir or spill_directory(cluster_id)
        self.spill_dir = SpillDir(self.spill_path, "spilled")
        os.makedirs(self.spill_path, mode=0o700, exist_ok=True)
        self.slabs = SlabAllocator(cluster_id, "client")
        client_budget = (memory_limit * spill_fraction
                         if memory_limit and spill_fraction else None)
        self.allocator = BudgetedAllocator(
            self.slabs, SpillDir(self.spill_path, "client"),
            over_budget=(lambda n: self.slabs.mapped_bytes + self.slabs.growth(n)
                         > client_budget) if client_budget else (lambda n: False))
        self.mappings = MappingCache(self.slabs)
        self._lock = threading.Lock()
        self._segments: dict[str, list] = {}  # name -> [owner, live blocks]
        self._workers: dict[str, Any] = {}  # worker id -> its handle (free, forget)
        self._dead: set[str] = set()
        self.values_by_owner: Counter = Counter()
        self.managed_by_owner: Counter = Counter()  # live bytes in shm, per owner
        self.spilled_by_owner: Counter = Counter()  # live bytes in spill files, per owner
        self._lru: dict[str, OrderedDict] = {}  # owner -> id(value) -> value (shm only)
        self.bytes_spilled_total = 0  # moved to disk by spill(), over the store's life
        # What may still read the blocks a spill swapped out: tasks in flight
        # (the cluster points this at the engine's in-flight keys) and fetches.
        self.in_flight: Callable[[], Mapping[str, set]] = dict
        self._swaps = 0
        self._reads: dict[int, int] = {}  # fetch token -> swaps seen when it started
        self._read_tokens = itertools.count()
        self._pending_frees: list[tuple] = []  # (swap number, in-flight snapshot, blocks)
        self.closed = False

    # -- registry ------------------------------------------------------------

    def adopt(self, stored: Stored) -> None:
        """Count a new value's blocks (called before the engine sees it)."""
        self.adopt_all((stored,))

    def adopt_all(self, values: Iterable[Stored]) -> None:
        """:meth:`adopt` for a batch of results, under one acquisition of the
        lock.  An immediate value (not a Stored: see ``protocol.is_immediate``)
        holds nothing to count."""
        with self._lock:
            for stored in values:
                if type(stored) is not Stored or stored.live:
                    continue
                stored.live = True
                owner = stored.owner
                self.values_by_owner[owner] += 1
                in_shm = False
                for name, _offset, length in stored.blocks:
                    if is_file_block((name,)):
                        self.spilled_by_owner[owner] += length
                        continue
                    in_shm = True
                    entry = self._segments.get(name)
                    if entry is None:
                        entry = self._segments[name] = [owner, 0]
                    entry[1] += 1
                    self.managed_by_owner[owner] += length
                if in_shm:
                    lru = self._lru.get(owner)
                    if lru is None:
                        lru = self._lru[owner] = OrderedDict()
                    lru[id(stored)] = stored

    def touch(self, values: Any) -> None:
        """These values are being read now: spill them last."""
        lrus = self._lru
        if not lrus:
            return
        with self._lock:
            for value in values:
                lru = lrus.get(getattr(value, "owner", None))
                if lru is not None and id(value) in lru:
                    lru.move_to_end(id(value))

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

    @property
    def shm_bytes(self) -> int:
        """Live bytes of values in shared memory, all owners."""
        with self._lock:
            return sum(self.managed_by_owner.values())

    @property
    def spilled_bytes(self) -> int:
        """Live bytes of values in spill files, all owners."""
        with self._lock:
            return sum(self.spilled_by_owner.values())

    def memory_by_owner(self) -> dict[str, dict]:
        """Per owner (worker id or "client"): live bytes in shm and on disk."""
        with self._lock:
            owners = set(self.managed_by_owner) | set(self.spilled_by_owner)
            return {o: {"managed": self.managed_by_owner[o], "spilled": self.spilled_by_owner[o]}
                    for o in owners}

    def dead_owners_in_shm(self) -> list[str]:
        """Owners that are gone but whose values still hold shared memory."""
        with self._lock:
            return [o for o in self._dead if self.managed_by_owner[o] > 0]

    # -- DataStore -----------------------------------------------------------

    def begin_read(self) -> int:
        """A reader of blocks starts (a copy, a send): blocks a spill swaps out
        from now on are not freed before :meth:`end_read` of the token returned."""
        token = next(self._read_tokens)
        with self._lock:
            self._reads[token] = self._swaps
        return token

    def end_read(self, token: int) -> None:
        with self._lock:
            del self._reads[token]

    def to_user(self, value: Any) -> Any:
        if type(value) is not Stored:
            return value
        if not value.buffers:  # all in its header (most small results): no block to guard
            return deserialize_value(value)
        token = self.begin_read()
        try:
            return deserialize_value(value, self.mappings, copy=True)
        finally:
            self.end_read(token)

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
        if not any(type(v) is Stored and v.live and v.blocks for v in values):
            counts = self.values_by_owner
            with self._lock:  # inline values only (the common case): just count
                for value in values:
                    if type(value) is Stored and value.live:
                        value.live = False
                        counts[value.owner] -= 1
            return
        by_owner: dict[str, list] = {}
        files: list[str] = []
        with self._lock:
            for value in values:
                if type(value) is not Stored or not value.live:
                    continue  # not ours, or released already: a block is freed once
                value.live = False
                owner = value.owner
                self.values_by_owner[owner] -= 1
                lru = self._lru.get(owner)
                if lru is not None:
                    lru.pop(id(value), None)
                for block in value.blocks:
                    if is_file_block(block):
                        self.spilled_by_owner[owner] -= block[2]
                        if block[0] not in files:
                            files.append(block[0])
                        continue
                    self.managed_by_owner[owner] -= block[2]
                    by_owner.setdefault(owner, []).append(block)
        if files:
            remove_files(files)
            self.segments_unlinked(None, files)  # readers drop their mappings
        self._free_blocks(by_owner)
        if self._pending_frees:
            self.collect_frees()

    def _free_blocks(self, by_owner: dict[str, list]) -> None:
        """Blocks nobody reads any more go back to their owner (or, if the owner
        is gone, their segment is unlinked with its last live block)."""
        if not by_owner:
            return
        unlink = []
        with self._lock:
            for owner, blocks in list(by_owner.items()):
                if owner not in self._dead:
                    continue
                del by_owner[owner]
                for block in blocks:
                    entry = self._segments.get(block[0])
                    if entry is None:
                        continue
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del self._segments[block[0]]
                        unlink.append(block[0])
            for blocks in by_owner.values():
                for block in blocks:
                    entry = self._segments.get(block[0])
                    if entry is not None:
                        entry[1] -= 1
            handles = {o: self._workers.get(o) for o in by_owner}
        for name in unlink:
            unlink_segment(name)
        if unlink:
            self.segments_unlinked(None, unlink)
        for owner, blocks in by_owner.items():
            if owner == "client":
                gone = self.slabs.free(blocks)
                if gone:
                    self.segments_unlinked("client", gone)
            elif handles[owner] is not None:
                handles[owner].free(blocks)

    # -- spilling (memory watcher thread) ---------------------------------------

    def spill(self, owner: str, nbytes: int) -> int:
        """Move ``owner``'s least recently used values from shared memory to spill
        files until at least ``nbytes`` are out of shm; the bytes moved."""
        moved = 0
        skipped: set[int] = set()
        while moved < nbytes and not self.closed:
            with self._lock:
                lru = self._lru.get(owner)
                victim = next((v for k, v in (lru or {}).items() if k not in skipped), None)
            if victim is None:
                break
            old = victim.buffers
            shm_blocks = [b for b in old if type(b) is tuple and not is_file_block(b)]
            try:
                refs = self.spill_dir.write([self.mappings.view(*b) for b in shm_blocks])
            except OSError:  # disk full, or the segment went away under us
                skipped.add(id(victim))
                continue
            by_ref = dict(zip(shm_blocks, refs, strict=True))
            with self._lock:
                if not victim.live or victim.buffers is not old:
                    lost_race = True  # released (or spilled) while we wrote
                else:
                    lost_race = False
                    victim.buffers = [by_ref.get(b, b) if type(b) is tuple else b for b in old]
                    self._swaps += 1
                    n = sum(b[2] for b in shm_blocks)
                    self.managed_by_owner[owner] -= n
                    self.spilled_by_owner[owner] += n
                    self.bytes_spilled_total += n
                    lru.pop(id(victim), None)
                    self._pending_frees.append((self._swaps, self._in_flight_snapshot(),
                                                owner, shm_blocks, time.monotonic()))
            if lost_race:
                remove_files({r[0] for r in refs})
                skipped.add(id(victim))
                continue
            moved += n
            self.collect_frees()
        return moved

    def _in_flight_snapshot(self) -> dict[str, frozenset]:
        for _ in range(100):  # another thread may change a set while we copy it
            try:
                return {wid: frozenset(keys) for wid, keys in list(self.in_flight().items())
                        if keys}
            except RuntimeError:
                continue
        return {wid: frozenset(keys) for wid, keys in self.in_flight().items()}

    def collect_frees(self) -> None:
        """Free the swapped-out blocks that no task or fetch can read any more."""
        if not self._pending_frees:
            return
        in_flight = self.in_flight()
        with self._lock:
            oldest_read = min(self._reads.values(), default=None)
            ready, waiting = [], []
            for entry in self._pending_frees:
                swap, snapshot = entry[0], entry[1]
                # (iterate our frozen copy only: the engine changes its sets meanwhile)
                busy = (oldest_read is not None and oldest_read < swap) or any(
                    k in in_flight.get(wid, ()) for wid, keys in snapshot.items() for k in keys)
                (waiting if busy else ready).append(entry)
            self._pending_frees = waiting
        by_owner: dict[str, list] = {}
        for entry in ready:
            by_owner.setdefault(entry[2], []).extend(entry[3])
        self._free_blocks(by_owner)

    # -- the wire (a TCP listener moves values of this store) ---------------------

    def outgoing(self, value: Any) -> Any:
        """``value`` as it leaves for a remote peer: blocks become views of our
        mappings, sent without a copy.  The caller holds a :meth:`begin_read`
        token until the views are sent (or dropped), or the value is a task's
        input (freed only once the task answered)."""
        if type(value) is Stored and value.blocks:
            self.touch((value,))
            view = self.mappings.view
            return Stored(value.header,
                          [view(*b) if type(b) is tuple else b for b in value.buffers],
                          value.nbytes, value.owner)
        return value

    def alloc_incoming(self, nbytes: int) -> tuple | None:
        """A block to read an arriving buffer into (shared memory within the
        client's budget, else a spill file), or None (keep it private)."""
        if nbytes < self.threshold or self.closed:
            return None
        try:
            return self.allocator.alloc(nbytes)
        except OSError:  # neither /dev/shm nor the spill folder has room
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
        self.slabs.close()
        sweep(cluster_prefix(self.cluster_id))
        self.spill_dir.close()


__all__ = ["ShmStore"]
