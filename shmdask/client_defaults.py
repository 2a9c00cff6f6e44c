"""Which Clients this process has: the open ones, the default one, the processes one.

In: each Client as it starts (``note_open``; with ``set_as_default=True`` also
``note_default``).  Out: ``default_client()`` (the client ``get_client``,
``Client.current`` and dask's ``compute`` use when none is named),
``held_futures`` (Futures for keys a graph refers to without holding them,
found among the open clients) and ``default_process_client`` (the
``scheduler="processes"`` cluster, made on first use).

Kept apart from :mod:`shmdask.client` because it is process-wide state, not a
client's own: weak references only, so a client nobody holds still goes away.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from shmdask import config

if TYPE_CHECKING:  # pragma: no cover
    from shmdask.client import Client

_open_clients: weakref.WeakSet = weakref.WeakSet()
_defaults: list[weakref.ref] = []  # clients that made themselves the default, oldest first


def note_open(client: Client) -> None:
    """``client`` has started (``held_futures`` looks among them)."""
    _open_clients.add(client)


def note_default(client: Client) -> None:
    """``client`` made itself the default: the newest such open client is it."""
    _defaults[:] = [r for r in _defaults if (c := r()) is not None and not c.closed]
    _defaults.append(weakref.ref(client))


def held_futures(keys: Iterable) -> dict:
    """``{key: Future}`` for the keys that some open Client of this process holds."""
    found: dict = {}
    for client in list(_open_clients):
        if client.closed:
            continue
        with client._lock:
            held = [k for k in keys if k not in found and k in client._held]
        found.update(zip(held, client._new_futures(held)[0], strict=True))
    return found


def default_client(c: Client | None = None) -> Client:
    """``c``, or the client in use: the configured scheduler if it is an open
    Client, else the newest open client made with ``set_as_default=True``."""
    if c is not None:
        return c
    from shmdask.client import Client

    configured = config.get("scheduler")
    if isinstance(configured, Client) and not configured.closed:
        return configured
    for ref in reversed(_defaults):
        client = ref()
        if client is not None and not client.closed and client.started:
            return client
    raise ValueError("No clients found: start one first, e.g.\n"
                     "  from shmdask.distributed import Client\n"
                     "  client = Client()                      # a local cluster\n"
                     "  client = Client('127.0.0.1:8786')      # or a running scheduler")


# -- the process scheduler without a Client ------------------------------------------

_process_client: Client | None = None
_process_lock = threading.Lock()


def default_process_client() -> Client:
    """``scheduler="processes"``: one LocalCluster made on first use, closed at exit."""
    global _process_client
    from shmdask.client import Client

    with _process_lock:
        if _process_client is None or _process_client.closed:
            _process_client = Client(set_as_default=False)
            atexit.register(_process_client.close)
        return _process_client
