"""One cluster's dashboard: its collector and its HTTP server, started and closed together.

In: an engine, a ``scheduler_info()`` callable and a ``dashboard_address`` as
dask spells it (``":8787"``, ``"0.0.0.0:8787"``, ``8787``, ``None`` for none).
Out: a :class:`Dashboard` serving on that address -- on a free port instead
when that one is taken, with a :class:`DashboardPortWarning` saying where --
and its ``link``; ``close()`` frees the port.

``start_dashboard(cluster, address)`` is the one call a cluster makes.  It
hands the dashboard weak references only, so a forgotten cluster can still be
garbage-collected (and its finalizer close the dashboard).
"""

from __future__ import annotations

import logging
import socket
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

from .collector import Collector
from .server import bind_server

logger = logging.getLogger("shmdask.dashboard")

DEFAULT_ADDRESS = ":8787"
DEFAULT_HOST = "127.0.0.1"


class DashboardPortWarning(UserWarning):
    """The dashboard's port was taken; it serves on another one."""


def parse_dashboard_address(address: Any) -> tuple[str, int] | None:
    """``":8787"`` -> ``("127.0.0.1", 8787)``; ``"0.0.0.0:8787"``, ``"[::1]:0"``,
    ``8787`` and ``"http://host:port"`` likewise; ``None`` or ``False`` -> None (no
    dashboard).  A host without a port, or a port outside 0..65535, is a ValueError."""
    if address is None or address is False:
        return None
    if address is True:
        address = DEFAULT_ADDRESS
    if isinstance(address, int) and not isinstance(address, bool):
        host, port_text = DEFAULT_HOST, str(address)
    elif isinstance(address, str):
        text = address.strip()
        for scheme in ("http://", "tcp://"):
            if text.startswith(scheme):
                text = text[len(scheme):]
        text = text.rstrip("/")
        if text.isdigit():
            host, port_text = DEFAULT_HOST, text
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                raise ValueError(f"dashboard_address {address!r} has no port: write it like "
                                 "':8787' or '127.0.0.1:8787' (None turns the dashboard off)")
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            elif ":" in host:
                raise ValueError(f"dashboard_address {address!r}: put an IPv6 host in "
                                 "brackets, like '[::1]:8787'")
            host = host or DEFAULT_HOST
    else:
        raise TypeError(f"dashboard_address must be an address like ':8787' or None, not "
                        f"{type(address).__name__}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"dashboard_address {address!r}: the port must be a number from 0 "
                         "to 65535 (0: any free port)")
    return host, int(port_text)


def moved_note(asked: Any, link: str) -> str:
    """' (port 8787 is in use)' when a dashboard asked for ``asked`` serves at ``link``
    on another port; '' otherwise (for banners that say where the dashboard is)."""
    wanted = (parse_dashboard_address(asked) or ("", 0))[1]
    return f" (port {wanted} is in use)" if wanted and f":{wanted}/" not in link else ""


def _link_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):  # every interface: the name others reach us by
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def dashboard_link_of(info: dict, connected_to: str | None = None) -> str | None:
    """The dashboard link from a scheduler's ``scheduler_info()``, for a client that
    reached the scheduler at ``connected_to`` (``tcp://host:port``); None if it has
    no dashboard."""
    port = (info.get("services") or {}).get("dashboard")
    if not isinstance(port, int):
        return None
    host = info.get("dashboard_host") or DEFAULT_HOST
    if host in ("0.0.0.0", "", "::") and connected_to:
        # serving on every interface: the client reaches it where it reached the scheduler
        text = str(connected_to).split("://", 1)[-1]
        host = text.rpartition(":")[0].strip("[]") or host
    return f"http://{_link_host(host)}:{port}/status"


class Dashboard:
    """The live page of one engine at ``address``; see the module docstring."""

    def __init__(self, engine: Any, scheduler_info: Callable[[], dict],
                 address: Any = DEFAULT_ADDRESS, describe: Callable[[], dict] | None = None):
        parsed = parse_dashboard_address(address)
        if parsed is None:
            raise ValueError("Dashboard needs an address; use dashboard_address=None on the "
                             "cluster for no dashboard")
        host, wanted = parsed
        self._describe = describe
        self.collector = Collector(engine, scheduler_info, describe=self._description)
        try:
            self.server, moved = bind_server(host, wanted, self.collector)
        except OSError as exc:
            self.collector.close()
            raise OSError(exc.errno, f"cannot start the dashboard at {host}:{wanted}: "
                                     f"{exc.strerror or exc}") from None
        self.host = host
        self.port = self.server.server_address[1]
        self.closed = False
        self._thread = threading.Thread(target=self.server.serve_until_closed, daemon=True,
                                        name=f"shmdask-dashboard-{self.port}")
        self._thread.start()
        if moved:
            warnings.warn(f"shmdask: port {wanted} is already in use (another cluster's "
                          f"dashboard?); the dashboard is at {self.link} instead",
                          DashboardPortWarning, stacklevel=4)
        logger.debug("dashboard at %s", self.link)

    @property
    def link(self) -> str:
        return f"http://{_link_host(self.host)}:{self.port}/status"

    def _description(self) -> dict:
        out = dict(self._describe()) if self._describe is not None else {}
        out["dashboard"] = self.link
        return out

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.server.close()
        self.collector.close()
        self._thread.join(5)

    def __repr__(self) -> str:
        return f"<Dashboard {self.link}{' closed' if self.closed else ''}>"


def start_dashboard(cluster: Any, address: Any = DEFAULT_ADDRESS) -> Dashboard | None:
    """The dashboard of ``cluster`` (anything with ``.engine``, ``.scheduler_info()``,
    ``.id`` and ``.address``) at ``address``; None when ``address`` is None."""
    if parse_dashboard_address(address) is None:
        return None
    ref = weakref.ref(cluster)

    def scheduler_info() -> dict:
        c = ref()
        if c is None:
            raise RuntimeError("the cluster is gone")
        return c.scheduler_info()

    def describe() -> dict:
        c = ref()
        return {} if c is None else {"cluster": c.id, "scheduler": c.address}

    return Dashboard(cluster.engine, scheduler_info, address, describe=describe)
