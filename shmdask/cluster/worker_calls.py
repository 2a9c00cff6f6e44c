"""What a worker process does outside the task system: ``client.run`` calls,
uploaded files, and the log lines ``get_logs`` reads.

In: a pickled ``(fn, args, kwargs)`` from the cluster (``client.run``,
``client.upload_file`` and ``cluster.get_logs`` all send functions of this
module or the user's).  Out: ``(ok, value)``: what the function returned, or
the exception it raised.  Functions run on a thread of their own, beside the
executor threads, as dask runs them beside its task pool.

Uploaded files go to a directory of this worker process (on this machine the
workers do not share one: a remote worker has no other choice, and one code
path is simpler); it is put first on ``sys.path`` and removed when the
worker exits.  A ``.py`` file is imported (reloaded if it was already), so
the next task sees the new code; a ``.zip`` / ``.egg`` is put on
``sys.path`` as an archive.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import importlib
import inspect
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

LOG_LINES = 10_000  # log records a process keeps for get_logs()
UPLOADABLE = (".py", ".zip", ".egg")


def call_function(worker: Any, load: Callable[[], tuple],
                  context_name: str = "dask_worker") -> tuple[bool, Any]:
    """Run the ``(fn, args, kwargs)`` that ``load()`` unpickles; ``dask_worker=``
    (``context_name``) is passed to functions that take it, as dask does."""
    try:
        fn, args, kwargs = load()
        with contextlib.suppress(TypeError, ValueError):  # builtins may have no signature
            if context_name in inspect.signature(fn).parameters:
                kwargs = {**kwargs, context_name: worker}
        return True, fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - handed back to the caller
        return False, exc


# -- logs ---------------------------------------------------------------------------


class RingLog(logging.Handler):
    """The last ``LOG_LINES`` records of this process, as ``(level, text)``."""

    def __init__(self, capacity: int = LOG_LINES):
        super().__init__()
        self.lines: collections.deque = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - "
                                            "%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append((record.levelname, self.format(record)))

    def note(self, level: str, message: str) -> None:
        """A line of our own (cluster events), formatted like the records."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.lines.append((level, f"{stamp} - shmdask - {level} - {message}"))


_ring: RingLog | None = None
_ring_lock = threading.Lock()


def keep_logs() -> RingLog:
    """Keep this process's shmdask log records (idempotent); returns the ring."""
    global _ring
    with _ring_lock:
        if _ring is None:
            _ring = RingLog()
            logging.getLogger("shmdask").addHandler(_ring)
        return _ring


def worker_logs(n: int | None = None) -> list[tuple[str, str]]:
    """This worker's kept log lines, oldest first (the last ``n`` if given)."""
    lines = list(keep_logs().lines)
    return lines[-n:] if n else lines


# -- uploaded files -----------------------------------------------------------------

_upload_dir: str | None = None


def _uploads() -> str:
    global _upload_dir
    if _upload_dir is None:
        _upload_dir = tempfile.mkdtemp(prefix=f"shmdask-uploads-{os.getpid()}-")
        sys.path.insert(0, _upload_dir)
        atexit.register(remove_uploads)
    return _upload_dir


def remove_uploads() -> None:
    if _upload_dir is not None:
        shutil.rmtree(_upload_dir, ignore_errors=True)


def install_upload(filename: str, data: bytes) -> str:
    """Save an uploaded file here and make it importable; returns where it went."""
    name = os.path.basename(filename)
    if not name.endswith(UPLOADABLE):
        raise ValueError(f"cannot upload {filename!r}: only {', '.join(UPLOADABLE)} files")
    path = os.path.join(_uploads(), name)
    tmp = f"{path}.part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    importlib.invalidate_caches()
    if name.endswith(".py"):
        module = name[:-3]
        if module in sys.modules:
            importlib.reload(sys.modules[module])
        else:
            importlib.import_module(module)
    else:
        if path not in sys.path:
            sys.path.insert(0, path)
        # modules of an older upload of this archive must be found anew
        sys.path_importer_cache.pop(path, None)
        import zipimport

        with contextlib.suppress(AttributeError):
            zipimport._zip_directory_cache.pop(path, None)  # type: ignore[attr-defined]
    return path


__all__ = ["call_function", "keep_logs", "worker_logs", "install_upload", "RingLog"]
