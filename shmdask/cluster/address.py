"""Addresses of schedulers: ``tcp://host:port``, ``tls://host:port``, ``host:port``.

One parser for every place an address comes in (``Client("...")``, ``shmdask
worker ADDRESS``, ``shmdask scheduler --host/--port``, ``LocalCluster(listen=)``),
so that they all accept and refuse the same spellings with the same message.
"""

from __future__ import annotations

import re

DEFAULT_PORT = 8786

def parse_address(address: str, default_port: int = DEFAULT_PORT,
                  require_port: bool = False) -> tuple[str, str, int]:
    """``"tcp://host:port"``, ``"tls://host:port"``, ``"host:port"``, ``"[::1]:port"``
    -> (scheme, host, port).

    ``require_port=True`` is for command lines, where a forgotten host or port
    (or port 0) is a mistake rather than a wish for the default."""
    if not isinstance(address, str):
        raise TypeError(f"an address is a string like 'tcp://127.0.0.1:8786', "
                        f"not {type(address).__name__}")
    scheme = "tcp"
    rest = address.strip()
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme not in ("tcp", "tls"):
            raise ValueError(f"address {address!r}: unknown scheme {scheme!r} "
                             "(use tcp:// or tls://)")
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:/\[\]]*)(?::(\d+))?", rest)
    host = m and (m.group(1) or m.group(3))
    port_text = m and (m.group(2) or m.group(4))
    if require_port and not (host and port_text and 0 < int(port_text) < 65536):
        raise ValueError(f"{address!r} is not an address like 127.0.0.1:8786")
    if m is None:
        raise ValueError(f"address {address!r} is not like 'tcp://host:port'")
    port = int(port_text) if port_text is not None else default_port
    if not 0 <= port <= 65535:
        raise ValueError(f"address {address!r}: port {port} is out of range")
    return scheme, host or "127.0.0.1", port


def format_address(scheme: str, host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
