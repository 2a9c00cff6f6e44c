"""The spill directory: values on disk that readers map read-only, like shared memory.

What flows in and out:

- The store's spiller writes the buffers of a cold value into one file and
  swaps the value's shared-memory blocks for *file blocks* ``(path, offset,
  length)``: the same 3-tuple shape as a shm block, told apart by the leading
  "/" of an absolute path (segment names never have one).  Readers map the
  file read-only through the same :class:`~shmdask.cluster.shm.MappingCache`,
  so a task that reads a spilled value gets zero-copy views of the page cache
  (shared memory too), never a pickled copy.
- A worker whose shared memory is over its budget, or finds /dev/shm full or
  missing, writes new results straight into files here
  (:class:`BudgetedAllocator`): nothing overflows into the client process.
- The store unlinks a file when its value is released; the whole folder goes
  at ``close()``, and the janitor removes it after a crashed client.

Why it is shaped so: one folder per cluster (``shmdask-<cluster>-spill`` under
``temporary_directory``) so cleanup is one ``rmtree``; one file per value so
releasing a key gives its disk space back at once; buffers at page-aligned
offsets so every mapped view starts aligned.
"""

from __future__ import annotations

import itertools
import mmap
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable

PAGE = mmap.PAGESIZE


def spill_directory(cluster_id: str, base: str | os.PathLike | None = None) -> str:
    """The spill folder of ``cluster_id`` under ``base`` (default: the system temp dir)."""
    root = os.fspath(base) if base is not None else tempfile.gettempdir()
    return os.path.join(os.path.abspath(root), f"shmdask-{cluster_id}-spill")


def is_file_block(ref: tuple) -> bool:
    """True for a block in a spill file, False for one in a shared-memory segment."""
    return ref[0][:1] == "/"


def _aligned(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


class SpillDir:
    """One process's handle on a cluster's spill folder: write, create and remove files.

    Thread-safe: names come from a per-process counter under ``tag`` (the
    writer's id), so processes of one cluster never pick the same name."""

    def __init__(self, path: str, tag: str):
        self.path = path
        self.tag = tag
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self.bytes_written = 0
        self.files_written = 0

    def _new_path(self) -> str:
        with self._lock:
            n = next(self._counter)
        return os.path.join(self.path, f"{self.tag}-{n}")

    def _open_new(self) -> tuple[str, int]:
        path = self._new_path()
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except FileNotFoundError:  # first file of the cluster (or the folder was removed)
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        return path, fd

    def _new_file(self, fill: Callable[[str, int], tuple]) -> tuple:
        """Make a new file and ``fill(path, fd)`` it; on any error the file goes.
        Returns ``(bytes written, what fill returned)``."""
        path, fd = self._open_new()
        try:
            nbytes, out = fill(path, fd)
        except BaseException:
            remove_files([path])
            raise
        finally:
            os.close(fd)
        with self._lock:
            self.bytes_written += nbytes
            self.files_written += 1
        return out

    def write(self, buffers: Iterable) -> list[tuple]:
        """Write byte buffers into one new file; their file blocks, in order."""
        def fill(path: str, fd: int) -> tuple:
            refs = []
            offset = 0
            for buf in buffers:
                view = memoryview(buf).cast("B")
                written = 0
                while written < view.nbytes:
                    written += os.pwrite(fd, view[written:], offset + written)
                refs.append((path, offset, view.nbytes))
                offset = _aligned(offset + view.nbytes)
            return sum(r[2] for r in refs), refs

        return self._new_file(fill)

    def create(self, nbytes: int) -> tuple[tuple, memoryview]:
        """A new file of ``nbytes``: its block and a writeable view of it (the
        file keeps the data once the view is released)."""
        def fill(path: str, fd: int) -> tuple:
            os.ftruncate(fd, max(nbytes, 1))
            m = mmap.mmap(fd, max(nbytes, 1))
            return nbytes, ((path, 0, nbytes), memoryview(m)[:nbytes])

        return self._new_file(fill)

    def close(self) -> None:
        """Remove the whole folder (every process's files)."""
        shutil.rmtree(self.path, ignore_errors=True)


def remove_files(paths: Iterable[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class BudgetedAllocator:
    """Where a process puts the large buffers of the values it produces.

    Shared memory (a :class:`~shmdask.cluster.shm.SlabAllocator`) while the
    owner stays under its spill threshold; a file in the spill folder once
    growing the shared memory would pass it (``over_budget(nbytes)`` says), or
    when /dev/shm is full or missing.  ``alloc``/``free`` have the slab
    allocator's signature, so :func:`~shmdask.cluster.protocol.serialize_value`
    takes either."""

    def __init__(self, slabs, spill_dir: SpillDir | None,
                 over_budget: Callable[[int], bool] = lambda nbytes: False):
        self.slabs = slabs
        self.spill_dir = spill_dir
        self.over_budget = over_budget
        self.spilled_results = 0

    def alloc(self, nbytes: int) -> tuple[tuple, memoryview]:
        slabs = self.slabs
        if self.spill_dir is None:
            return slabs.alloc(nbytes)
        if slabs is not None and (slabs.can_reuse(nbytes) or not self.over_budget(nbytes)):
            try:
                return slabs.alloc(nbytes)
            except OSError:  # /dev/shm is full (or missing): the disk takes it
                pass
        self.spilled_results += 1
        return self.spill_dir.create(nbytes)

    def free(self, blocks: Iterable[tuple]) -> list[str]:
        blocks = list(blocks)
        remove_files(b[0] for b in blocks if is_file_block(b))
        shm = [b for b in blocks if not is_file_block(b)]
        return self.slabs.free(shm) if shm and self.slabs is not None else []


def private_memory() -> int:
    """This process's resident memory that is its own (not shared pages nor the
    page cache of mapped files), from /proc/self/statm; 0 where unknown."""
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        return (int(fields[1]) - int(fields[2])) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


__all__ = ["BudgetedAllocator", "SpillDir", "is_file_block", "private_memory",
           "remove_files", "spill_directory"]
