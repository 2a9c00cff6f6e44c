"""Peak memory of a process tree: its private memory plus the shared memory of one cluster.

The figure every memory benchmark reports: shared pages are counted once, as
the /dev/shm segments of the cluster (``prefix``), not once per process that
maps them.
"""

from __future__ import annotations

import os
import threading


class TreePeak:
    """Peak of this process tree's private memory plus /dev/shm in use by ``prefix``."""

    def __init__(self, shm_prefix: str | None):
        import psutil

        self.me = psutil.Process()
        self.prefix = shm_prefix
        self.peak = 0
        self.client_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _shm(self) -> int:
        if not self.prefix:
            return 0
        total = 0
        try:
            entries = os.scandir("/dev/shm")
        except FileNotFoundError:
            return 0
        with entries:
            for e in entries:
                if e.name.startswith(self.prefix):
                    try:
                        total += e.stat().st_blocks * 512
                    except FileNotFoundError:
                        pass
        return total

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.02):
            private = 0
            for proc in [self.me, *self.me.children(recursive=True)]:
                try:
                    m = proc.memory_info()
                except psutil.Error:
                    continue
                private += m.rss - m.shared
                if proc.pid == self.me.pid:
                    self.client_peak = max(self.client_peak, m.rss - m.shared)
            self.peak = max(self.peak, private + self._shm())

    def start(self) -> TreePeak:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
