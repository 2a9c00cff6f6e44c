"""A process-wide interpreter setting changed for as long as someone needs it.

Some of the engine's speed comes from settings that belong to the whole
process: how often threads hand the GIL over (``sys.setswitchinterval``),
how often the cyclic garbage collector looks at young objects
(``gc.set_threshold``).  A cluster or a running computation changes one
while it lives; the user's program owns it otherwise.  So::

    first hold()     ─▶ remember the user's value, write ours (if it is better)
    more holds       ─▶ count
    releases         ─▶ count down
    last release()   ─▶ put the user's value back, unless the setting no longer
                        reads as ours: whoever changed it meanwhile wins

Holds nest and may come from any thread; a release without a hold changes
nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any


class HeldSetting:
    """``read()``/``write(value)`` a setting; ``ours(current)`` is the value to
    write while held, or None when ``current`` is already as good."""

    def __init__(self, read: Callable[[], Any], write: Callable[[Any], None],
                 ours: Callable[[Any], Any]):
        self._read = read
        self._write = write
        self._ours = ours
        self._lock = threading.Lock()
        self.users = 0
        self._saved: Any = None
        self._written: Any = None  # what we wrote, None if we left it alone

    def hold(self) -> None:
        with self._lock:
            if self.users == 0:
                self._saved = self._read()
                self._written = self._ours(self._saved)
                if self._written is not None:
                    self._write(self._written)
            self.users += 1

    def release(self) -> None:
        with self._lock:
            if self.users == 0:
                return
            self.users -= 1
            if self.users == 0:
                if self._written is not None and self._read() == self._written:
                    self._write(self._saved)
                self._saved = self._written = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.hold()
        try:
            yield
        finally:
            self.release()
