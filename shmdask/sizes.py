"""Byte counts for people: one formatter for every repr, summary and plot label."""

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
