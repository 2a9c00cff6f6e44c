"""Objects that start when awaited: ``await x``, ``async with x``.

In: an object whose start and close block (a Client connecting or making a
LocalCluster; a hand-made Scheduler or Worker).  Out: the same object usable
from asyncio code, its start and close run in the event loop's executor so
the loop keeps serving meanwhile.  One mixin, so the Client and the servers
of :mod:`shmdask.cluster.servers` start and stop the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any


class StartOnAwait:
    """``await obj`` and ``async with obj`` run the blocking ``_start()`` (it
    must be harmless to call again) and ``_close()`` off the event loop."""

    def _start(self) -> Any:
        raise NotImplementedError

    def _close(self) -> Any:
        raise NotImplementedError

    async def _start_async(self) -> Any:
        await asyncio.get_running_loop().run_in_executor(None, self._start)
        return self

    def __await__(self):
        return self._start_async().__await__()

    async def __aenter__(self) -> Any:
        return await self._start_async()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._close)
