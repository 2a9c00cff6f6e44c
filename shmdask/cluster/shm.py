"""Shared-memory segments, the per-worker slab allocator and the mapping cache.

What flows through here: a worker that produced a large buffer asks its
:class:`SlabAllocator` for a block, copies the bytes in once, and ships only the
block's address ``(segment_name, offset, length)`` to the scheduler.  Every other
process that needs the buffer maps the segment once (:class:`MappingCache`) and
reads it in place, read-only.  When the scheduler releases the key, the block
goes back to its owner's free list and the next result of the same size class
is written into pages that are already allocated and mapped.

Why it is shaped so:

- **No resource tracker.**  ``multiprocessing.shared_memory`` registers every
  segment a process *attaches* with the resource tracker, which then unlinks or
  warns about segments it never owned (CPython gh-82300).  We call
  ``shm_open``/``shm_unlink`` from ``_posixshmem`` and ``mmap`` directly; the
  cluster's :class:`ShmStore` and the janitor process own cleanup instead.
- **Reuse, not creation.**  Creating, touching and unlinking a 40 MB segment
  costs ~30 ms of page faults here, rewriting an already-mapped buffer ~3 ms.
  So blocks are recycled by size class (four classes per power of two: at most
  25 % slack), small classes share a multi-megabyte slab, and a free block
  keeps its pages.  Freed memory beyond ``cache_bytes`` is given back by
  unlinking whole slabs once all their blocks are free.
- **Names say who owns what.**  ``shmdask-<cluster_id>-<owner>-<n>``: the store
  can sweep one dead worker's leftovers, the janitor the whole cluster's.
"""

from __future__ import annotations

import _posixshmem
import errno
import mmap
import os
import threading
from collections.abc import Iterable

SHM_DIR = "/dev/shm"
PREFIX = "shmdask"
PAGE = mmap.PAGESIZE
SLAB_BYTES = 4 << 20  # a slab of small blocks; larger classes get a segment each
DEFAULT_CACHE_BYTES = 512 << 20  # free memory a worker keeps mapped for reuse

# A block address, as it travels in messages: (segment name, byte offset, length).
BlockRef = tuple  # tuple[str, int, int]


def new_cluster_id() -> str:
    """A fresh cluster id.  The creating pid leads, so a test run can tell its
    own segments from those of other processes on the machine."""
    import secrets  # here: a worker process never needs it (hmac costs ~10 ms to import)

    return f"{os.getpid()}p{secrets.token_hex(3)}"


def segment_name(cluster_id: str, owner: str, n: int) -> str:
    """The name of the ``n``-th segment that ``owner`` created in ``cluster_id``."""
    return f"{PREFIX}-{cluster_id}-{owner}-{n}"


def cluster_prefix(cluster_id: str, owner: str | None = None) -> str:
    """Prefix shared by a cluster's segments (or by one owner's, if given)."""
    if owner is None:
        return f"{PREFIX}-{cluster_id}-"
    return f"{PREFIX}-{cluster_id}-{owner}-"


def create_segment(name: str, size: int) -> mmap.mmap:
    """Create a new segment of ``size`` bytes and map it read-write."""
    if size <= 0:
        raise ValueError(f"segment size must be positive, got {size}")
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        try:
            # Reserve the pages now: a full /dev/shm (64 MB in a default docker
            # container) then fails here with ENOSPC, not later with a SIGBUS
            # in the middle of a write.  It costs nothing extra on tmpfs.
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    except BaseException:
        unlink_segment(name)
        raise
    finally:
        os.close(fd)


def attach_segment(name: str) -> mmap.mmap:
    """Map an existing segment read-only (so views of it are read-only too)."""
    fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0)
    try:
        size = os.fstat(fd).st_size
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


def unlink_segment(name: str) -> bool:
    """Remove a segment's name; mappings stay valid until closed. False if it was gone."""
    try:
        _posixshmem.shm_unlink("/" + name)
        return True
    except FileNotFoundError:
        return False


def list_segments(prefix: str) -> list[str]:
    """Names in /dev/shm that start with ``prefix``."""
    try:
        return [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    except FileNotFoundError:
        return []


def sweep(prefix: str, keep: Iterable[str] = ()) -> list[str]:
    """Unlink every segment whose name starts with ``prefix``, except ``keep``."""
    keep = set(keep)
    removed = []
    for name in list_segments(prefix):
        if name not in keep and unlink_segment(name):
            removed.append(name)
    return removed


def size_class(nbytes: int) -> int:
    """Capacity of the block that holds ``nbytes``: whole pages, then four
    classes per power of two, so a block wastes at most a quarter of itself."""
    if nbytes <= PAGE:
        return PAGE
    top = (nbytes - 1).bit_length()  # 2**(top-1) < nbytes <= 2**top
    step = max(1 << (top - 3), PAGE)
    return (nbytes + step - 1) // step * step


def close_quietly(m: mmap.mmap) -> bool:
    """Close a mapping unless something still holds a view of it."""
    try:
        m.close()
        return True
    except BufferError:
        return False


class _Slab:
    __slots__ = ("name", "map", "capacity", "nblocks", "live")

    def __init__(self, name: str, m: mmap.mmap, capacity: int, nblocks: int):
        self.name = name
        self.map = m
        self.capacity = capacity
        self.nblocks = nblocks
        self.live = 0


class SlabAllocator:
    """Blocks of shared memory for one owner (a worker, or the client for scatter).

    ``alloc`` hands out a writeable view plus the block's address; ``free`` takes
    addresses back (the scheduler drives it as keys are released).  Thread-safe:
    a worker's executor threads allocate while its receiver thread frees.
    """

    def __init__(
        self,
        cluster_id: str,
        owner: str,
        slab_bytes: int = SLAB_BYTES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        self.cluster_id = cluster_id
        self.owner = owner
        self.slab_bytes = slab_bytes
        self.cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._count = 0
        self._slabs: dict[str, _Slab] = {}
        self._free: dict[int, list[tuple[str, int]]] = {}  # capacity -> [(segment, offset)]
        self._free_bytes = 0
        self._allocated: set[tuple[str, int]] = set()
        self.segments_created = 0
        self.unlinked: list[str] = []  # segments given back since the owner last looked

    def alloc(self, nbytes: int) -> tuple[BlockRef, memoryview]:
        """A block of at least ``nbytes``: its address and a writeable view of it."""
        capacity = size_class(nbytes)
        with self._lock:
            free = self._free.get(capacity)
            if not free:
                self._new_slab(capacity)
                free = self._free[capacity]
            name, offset = free.pop()
            self._free_bytes -= capacity
            slab = self._slabs[name]
            slab.live += 1
            self._allocated.add((name, offset))
        view = memoryview(slab.map)[offset : offset + nbytes]
        return (name, offset, nbytes), view

    def _new_slab(self, capacity: int) -> None:
        nblocks = max(1, self.slab_bytes // capacity)
        name = segment_name(self.cluster_id, self.owner, self._count)
        self._count += 1
        m = create_segment(name, capacity * nblocks)
        self.segments_created += 1
        self._slabs[name] = _Slab(name, m, capacity, nblocks)
        # Pop from the end: hand out low offsets first.
        blocks = [(name, i * capacity) for i in reversed(range(nblocks))]
        self._free.setdefault(capacity, []).extend(blocks)
        self._free_bytes += capacity * nblocks

    def free(self, blocks: Iterable[BlockRef]) -> list[str]:
        """Return blocks to the free lists; unlink slabs beyond the cache budget.

        Returns the names of segments unlinked by this call (readers elsewhere
        should drop their mappings of them)."""
        unlinked = []
        with self._lock:
            for name, offset, _length in blocks:
                slab = self._slabs.get(name)
                if slab is None or (name, offset) not in self._allocated:
                    continue  # not ours, or freed already: never hand a block out twice
                self._allocated.discard((name, offset))
                slab.live -= 1
                self._free[slab.capacity].append((name, offset))
                self._free_bytes += slab.capacity
                if slab.live == 0 and self._free_bytes > self.cache_bytes:
                    self._drop_slab(slab)
                    unlinked.append(name)
            self.unlinked.extend(unlinked)
        return unlinked

    def _drop_slab(self, slab: _Slab) -> None:
        free = self._free[slab.capacity]
        self._free[slab.capacity] = [b for b in free if b[0] != slab.name]
        self._free_bytes -= slab.capacity * slab.nblocks
        del self._slabs[slab.name]
        unlink_segment(slab.name)
        close_quietly(slab.map)

    def take_unlinked(self) -> list[str]:
        """Segments unlinked since the last call (to tell the scheduler)."""
        with self._lock:
            out, self.unlinked = self.unlinked, []
        return out

    def readonly_view(self, name: str, offset: int, length: int) -> memoryview | None:
        """A read-only view of one of our own blocks (None if not ours)."""
        slab = self._slabs.get(name)
        if slab is None:
            return None
        return memoryview(slab.map)[offset : offset + length].toreadonly()

    @property
    def mapped_bytes(self) -> int:
        with self._lock:
            return sum(s.capacity * s.nblocks for s in self._slabs.values())

    @property
    def free_bytes(self) -> int:
        return self._free_bytes

    def close(self, unlink: bool = True) -> None:
        """Drop every slab (and its name, if ``unlink``)."""
        with self._lock:
            for slab in self._slabs.values():
                if unlink:
                    unlink_segment(slab.name)
                close_quietly(slab.map)
            self._slabs.clear()
            self._free.clear()
            self._allocated.clear()
            self._free_bytes = 0


class MappingCache:
    """Read-only mappings of other owners' segments, one per segment per process.

    A reader maps a segment the first time it needs one of its blocks and keeps
    the mapping: later blocks of the same slab cost neither a syscall nor page
    faults.  ``forget`` drops mappings of unlinked segments; a mapping that a live
    numpy array still views is kept until a later ``forget`` finds it unused.
    """

    def __init__(self, own: SlabAllocator | None = None):
        self.own = own
        self._maps: dict[str, mmap.mmap] = {}
        self._views: dict[str, memoryview] = {}
        self._zombies: list[mmap.mmap] = []
        self._lock = threading.Lock()
        self.attached = 0

    def view(self, name: str, offset: int, length: int) -> memoryview:
        """A read-only view of a block, mapping its segment on first use."""
        if self.own is not None:
            mine = self.own.readonly_view(name, offset, length)
            if mine is not None:
                return mine
        whole = self._views.get(name)
        if whole is None:
            with self._lock:
                whole = self._views.get(name)
                if whole is None:
                    m = attach_segment(name)
                    self.attached += 1
                    self._maps[name] = m
                    whole = self._views[name] = memoryview(m)
        return whole[offset : offset + length]

    def forget(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in names:
                m = self._maps.pop(name, None)
                view = self._views.pop(name, None)
                if m is None:
                    continue
                view.release()
                if not close_quietly(m):
                    self._zombies.append(m)
            self._zombies = [m for m in self._zombies if not close_quietly(m)]

    def __contains__(self, name: str) -> bool:
        return name in self._maps

    def close(self) -> None:
        self.forget(list(self._maps))
