"""asyncio from threads: how sync and async code meet in the Client.

In: statuses finished on the scheduler's or a connection's thread, and
coroutines given to ``Client.sync`` by code that has no running loop.  Out: an
asyncio future resolved on its own loop (``resolve_soon``), and coroutines run
to completion on a loop thread of the client's (``LoopThread``).

Why so: an event loop must never block (a web server awaiting a future keeps
serving), and asyncio objects may only be touched on their loop's thread, so
other threads hand work over with ``call_soon_threadsafe`` and nothing more.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import Any


def in_event_loop() -> bool:
    """Is an asyncio loop running in this thread?"""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def resolve_soon(loop: asyncio.AbstractEventLoop, fut: asyncio.Future) -> None:
    """From any thread: mark an asyncio future done (if nobody gave up on it)."""
    def resolve() -> None:
        if not fut.done():
            fut.set_result(None)

    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


class LoopThread:
    """An event loop on a thread of its own, for ``Client.sync`` outside a loop
    (also in a notebook, whose own loop is busy running the cell)."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, awaitable: Awaitable, timeout: float | None) -> Any:
        async def main() -> Any:
            return await asyncio.wait_for(awaitable, timeout) if timeout else await awaitable

        return asyncio.run_coroutine_threadsafe(main(), self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()
