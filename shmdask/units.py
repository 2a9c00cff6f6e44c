"""Byte counts and durations for people: one formatter and one parser each, for
every repr, summary, plot label and option that takes a size or a duration
(``"64 MB"``, ``"128MiB"``, ``"100 ms"``, ``"60s"``: dask's spellings)."""

from __future__ import annotations

import math
import re
from typing import Any

_UNITS = (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.50 KiB'``; NaN (an unknown size) -> ``'unknown'``."""
    if isinstance(n, float) and math.isnan(n):
        return "unknown"
    for unit, size in _UNITS:
        if abs(n) >= size * 0.9:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def format_seconds(t: float) -> str:
    """``0.0042`` -> ``'4 ms'``, ``75`` -> ``'75.00 s'``, ``600`` -> ``'10.0 min'``."""
    if t < 1e-3:
        return f"{t * 1e6:.0f} µs"
    if t < 1:
        return f"{t * 1e3:.0f} ms"
    if t < 120:
        return f"{t:.2f} s"
    return f"{t / 60:.1f} min"


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_BYTE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
               "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12, "p": 10**15, "pb": 10**15,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50}


def parse_bytes(size: Any) -> int:
    """``"64 MB"`` -> 64_000_000, ``"100 MiB"`` -> 104_857_600, ``1e6`` -> 1_000_000."""
    if isinstance(size, bool):
        raise TypeError(f"a size must be a number of bytes or a string like '64 MB', "
                        f"not {size!r}")
    if isinstance(size, int | float):
        if size < 0:
            raise ValueError(f"a size cannot be negative: {size!r}")
        return int(size)
    if not isinstance(size, str):
        raise TypeError(f"a size must be a number of bytes or a string like '64 MB', "
                        f"not {type(size).__name__}")
    m = _SIZE.match(size)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _BYTE_UNITS:
        raise ValueError(f"{size!r} is not a size like '64 MB', '100 MiB' or '1.5GB'")
    return int(float(m.group(1)) * _BYTE_UNITS[unit])


_TIME_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
               "ms": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3,
               "us": 1e-6, "µs": 1e-6, "microsecond": 1e-6, "microseconds": 1e-6,
               "ns": 1e-9, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
               "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
               "d": 86400.0, "day": 86400.0, "days": 86400.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zµ]*)\s*$",
                       re.IGNORECASE)


def parse_timedelta(duration: Any) -> float:
    """``"100 ms"`` -> 0.1, ``"60s"`` -> 60.0, ``"2 minutes"`` -> 120.0, ``5`` -> 5.0."""
    if isinstance(duration, bool):
        raise TypeError(f"a duration must be seconds or a string like '100 ms', "
                        f"not {duration!r}")
    if isinstance(duration, int | float):
        seconds = float(duration)
    elif isinstance(duration, str):
        m = _DURATION.match(duration)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _TIME_UNITS:
            raise ValueError(f"{duration!r} is not a duration like '100 ms', '60s' or "
                             "'2 minutes'")
        seconds = float(m.group(1)) * _TIME_UNITS[unit]
    else:
        raise TypeError(f"a duration must be seconds or a string like '100 ms', "
                        f"not {type(duration).__name__}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {duration!r}")
    return seconds
