"""Colours of task groups, shared by the Gantt picture, the graph drawing and the dashboard.

In: group names (with their compute seconds, for the legend's order).  Out: hex colours.

Why shaped so: a group must have the same colour wherever it is drawn -- in the
picture after a run, on the live page, in every run -- so both list groups in
one order (``busiest_first``), and a group's colour is a stable function of its
name (a CRC of it picks a palette slot), moved on to the next free slot only
when two names of one picture collide.  Reds are kept for
transfers and greys for the groups beyond the legend ("other").
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

# Qualitative palette: matplotlib's tab20 without its reds (reserved for
# transfers) and its greys (reserved for "other").
PALETTE = (
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a",
    "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2",
    "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
)  # fmt: skip
TRANSFER_COLOR = "#d62728"
OTHER_COLOR = "#b0b0b0"


def busiest_first(busy: Mapping[str, float]) -> list[str]:
    """Group names by compute seconds, largest first (ties by name): the order the
    legends list groups in, and so the order :func:`group_colors` hands colours out
    in -- shared by the picture and the live page so a group looks the same on both."""
    return sorted(busy, key=lambda group: (-busy[group], group))


def group_colors(groups: Iterable[str], limit: int = 12) -> dict[str, str]:
    """A colour for each of the first ``limit`` groups; a group's colour depends on its
    name only, unless two names collide in one picture (then the later one moves on)."""
    colors: dict[str, str] = {}
    taken: set[int] = set()
    for group in groups:
        if len(colors) >= min(limit, len(PALETTE)):
            break
        slot = zlib.crc32(group.encode("utf-8", "surrogatepass")) % len(PALETTE)
        while slot in taken:
            slot = (slot + 1) % len(PALETTE)
        taken.add(slot)
        colors[group] = PALETTE[slot]
    return colors
