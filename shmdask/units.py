"""Byte counts and durations for people: one formatter each, for every repr,
summary and plot label, and one parser of sizes people write (``"2GB"``)."""

from __future__ import annotations

import math
import re

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


_SIZE = re.compile(r"^\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgtp]?i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50}


def parse_bytes(text: str | int | float) -> int:
    """``"2GB"`` -> 2_000_000_000, ``"512 MiB"`` -> 536_870_912, ``"100"`` -> 100
    (decimal units as dask reads them; ``KiB``-style units are powers of two)."""
    if isinstance(text, bool):
        raise TypeError(f"a size is a number of bytes or a string like '2GB', not {text!r}")
    if isinstance(text, int | float):
        return int(text)
    m = _SIZE.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a size like '2GB' or '512 MiB'")
    unit = m.group(2).lower()
    unit = unit[:-1] if unit.endswith("b") else unit
    if unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} has an unknown unit")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])
