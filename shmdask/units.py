"""Byte counts and durations for people: one formatter each, for every repr,
summary and plot label."""

from __future__ import annotations

import math

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
