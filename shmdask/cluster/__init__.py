"""Worker processes on this machine, and the shared-memory data plane they share.

- :mod:`.shm`: POSIX shared-memory segments, per-owner slab allocators, mapping caches.
- :mod:`.protocol`: values as pickle-5 headers plus inline or shm buffers; messages
  as frames; functions sent once per connection by token.
- :mod:`.worker`: the worker process (``python -m shmdask.cluster.worker``).
- :mod:`.local_cluster`: :class:`LocalCluster`, its :class:`ShmStore` and the
  engine's handles on worker processes.
- :mod:`.janitor`: the process that removes a dead client's shared memory.
- :mod:`.comm`: addresses, cluster keys, the authenticated handshake, TCP framing.
- :mod:`.tcp`: the listener that lets remote workers and clients join an engine,
  and the connection a ``Client("host:port")`` uses.
- :mod:`.remote_worker`: ``shmdask worker ADDRESS``, a worker on the other end of TCP.

Kept light: a worker process imports :mod:`.protocol` and :mod:`.shm` through this
package, so the cluster machinery loads only when ``LocalCluster`` is asked for.
"""

from typing import Any

__all__ = ["LocalCluster"]


def __getattr__(name: str) -> Any:
    if name == "LocalCluster":
        from shmdask.cluster.local_cluster import LocalCluster

        return LocalCluster
    raise AttributeError(f"module 'shmdask.cluster' has no attribute {name!r}")
