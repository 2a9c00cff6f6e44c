"""Worker processes on this machine, and the shared-memory data plane they share.

- :mod:`.shm`: POSIX shared-memory segments, per-owner slab allocators, mapping caches.
- :mod:`.protocol`: values as pickle-5 headers plus inline or shm buffers; messages
  as frames; functions sent once per connection by token (the one serialization path).
- :mod:`.store`: :class:`ShmStore`, the engine's data plane (which blocks are live,
  and who owns them); also how its values cross a socket.
- :mod:`.worker`: the worker process (``python -m shmdask.cluster.worker``).
- :mod:`.pipe_transport`: the engine's handles on local worker processes, and their start.
- :mod:`.local_cluster`: :class:`LocalCluster`: store, engine, workers, janitor, limits.
- :mod:`.janitor`: the process that removes a dead client's shared memory.
- :mod:`.address`: ``tcp://host:port`` and friends, parsed one way everywhere.
- :mod:`.auth`: cluster keys and key files, TLS contexts, the HMAC handshake.
- :mod:`.comm`: frames over an authenticated socket, values on the wire, peer clocks.
- :mod:`.tcp_server`: the listener that lets remote workers and clients join an engine.
- :mod:`.tcp_sessions`: the listener's peers: remote worker handles, client sessions.
- :mod:`.tcp_client`: the connection a ``Client("host:port")`` (and a remote worker) opens.
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
