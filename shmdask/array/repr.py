"""How an Array shows itself: one-line ``repr`` and the notebook's HTML table.

In: an Array (metadata only -- nothing is computed, and the task count is
read off the layers without writing the graph out).  Out: text.  The HTML is
a table in the spirit of dask's (bytes, shape, count of chunks and tasks,
dtype, for the whole array and for one chunk) next to an SVG sketch of the
chunk grid: a bar for 1-d, a grid for 2-d, an oblique box for 3-d.  Axes
with very many chunks are drawn as a solid band rather than thousands of
lines, so the sketch stays small in the notebook file.
"""

from __future__ import annotations

import math
from typing import Any

from shmdask.graph import key_split
from shmdask.units import format_bytes

from .chunks import has_unknown
from .layers import BlockwiseLayer, fused_inlined

MAX_LINES = 60


def task_count(x: Any) -> int:
    """Tasks in the (fused) graph, counted per layer without building it."""
    inlined = fused_inlined(x._layers, {x.name})
    total = 0
    for name, layer in x._layers.items():
        if name not in inlined:
            total += len(layer) if isinstance(layer, BlockwiseLayer) else len(layer.graph)
    return total


def _fmt_shape(shape: tuple) -> str:
    inner = ", ".join("nan" if isinstance(s, float) else str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def array_repr(x: Any) -> str:
    return (f"shmdask.array<{key_split(x.name)}, shape={_fmt_shape(x.shape)}, "
            f"dtype={x.dtype}, chunksize={_fmt_shape(x.chunksize)}, "
            f"chunktype=numpy.ndarray>")


def _sizes(shape: tuple, largest: float = 120.0) -> list[float]:
    """Pixel lengths per axis: proportional, but never thinner than a stripe."""
    known = [s if not isinstance(s, float) else 1 for s in shape]
    top = max(known) if known else 1
    return [max(12.0, largest * (s / top) ** 0.5 if top else 12.0) for s in known]


def _ticks(chunks: tuple, length: float) -> list[float]:
    total = sum(chunks)
    if not total:
        return [0.0, length]
    pos, out = 0, [0.0]
    for c in chunks:
        pos += c
        out.append(length * pos / total)
    if len(out) > MAX_LINES:
        step = len(out) / MAX_LINES
        out = [out[int(i * step)] for i in range(MAX_LINES)] + [length]
    return out


def _line(x1: float, y1: float, x2: float, y2: float) -> str:
    return (f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            'style="stroke-width:1" />')


def _lines_2d(x0: float, y0: float, w: float, h: float, col_ticks: list, row_ticks: list,
              dx: float = 0.0, dy: float = 0.0) -> list[str]:
    out = []
    for t in row_ticks:
        out.append(f'<line x1="{x0:.1f}" y1="{y0 + t:.1f}" x2="{x0 + w:.1f}" '
                   f'y2="{y0 + t:.1f}" style="stroke-width:1" />')
    for t in col_ticks:
        out.append(f'<line x1="{x0 + t:.1f}" y1="{y0:.1f}" x2="{x0 + t:.1f}" '
                   f'y2="{y0 + h:.1f}" style="stroke-width:1" />')
    out.append(f'<polygon points="{x0:.1f},{y0:.1f} {x0 + w:.1f},{y0:.1f} {x0 + w:.1f},'
               f'{y0 + h:.1f} {x0:.1f},{y0 + h:.1f}" style="fill:#ECB172A0;stroke-width:0"/>')
    return out


def svg(chunks: tuple) -> str:
    """An SVG sketch of the chunk grid (1 to 3 dims); '' otherwise."""
    ndim = len(chunks)
    if ndim == 0 or ndim > 3 or has_unknown(chunks):
        return ""
    shape = tuple(sum(c) for c in chunks)
    parts: list[str] = []
    if ndim == 1:
        (w,) = _sizes(shape)
        h = 25.0
        parts += _lines_2d(10, 10, w, h, _ticks(chunks[0], w), [0.0, h])
        parts.append(f'<text x="{10 + w / 2:.1f}" y="{h + 30:.1f}" font-size="1.0rem" '
                     f'text-anchor="middle">{shape[0]}</text>')
        width, height = w + 30, h + 40
    elif ndim == 2:
        h, w = _sizes(shape)
        parts += _lines_2d(10, 10, w, h, _ticks(chunks[1], w), _ticks(chunks[0], h))
        parts.append(f'<text x="{10 + w / 2:.1f}" y="{h + 30:.1f}" font-size="1.0rem" '
                     f'text-anchor="middle">{shape[1]}</text>')
        parts.append(f'<text x="{w + 30:.1f}" y="{10 + h / 2:.1f}" font-size="1.0rem" '
                     f'text-anchor="middle" transform="rotate(-90,{w + 30:.1f},{10 + h / 2:.1f})"'
                     f'>{shape[0]}</text>')
        width, height = w + 50, h + 40
    else:
        d, h, w = _sizes(shape)
        dx = dy = d * 0.5  # axis 0 runs into the page, up and to the right
        x0, y0 = 10.0, 10.0 + dy
        depth = _ticks(chunks[0], 1.0)
        cols, rows = _ticks(chunks[2], w), _ticks(chunks[1], h)
        top = [(x0, y0), (x0 + w, y0), (x0 + w + dx, y0 - dy), (x0 + dx, y0 - dy)]
        side = [(x0 + w, y0), (x0 + w + dx, y0 - dy), (x0 + w + dx, y0 + h - dy),
                (x0 + w, y0 + h)]
        for face in (top, side):
            pts = " ".join(f"{px:.1f},{py:.1f}" for px, py in face)
            parts.append(f'<polygon points="{pts}" style="fill:#ECB172A0;stroke-width:0"/>')
        for t in cols:  # top face, along axis 2
            parts.append(_line(x0 + t, y0, x0 + t + dx, y0 - dy))
        for t in rows:  # side face, along axis 1
            parts.append(_line(x0 + w, y0 + t, x0 + w + dx, y0 + t - dy))
        for u in depth:  # both faces, along axis 0
            parts.append(_line(x0 + u * dx, y0 - u * dy, x0 + w + u * dx, y0 - u * dy))
            parts.append(_line(x0 + w + u * dx, y0 - u * dy, x0 + w + u * dx, y0 + h - u * dy))
        parts += _lines_2d(x0, y0, w, h, cols, rows)
        parts.append(f'<text x="{x0 + w / 2:.1f}" y="{y0 + h + 20:.1f}" font-size="1.0rem" '
                     f'text-anchor="middle">{shape[2]}</text>')
        parts.append(f'<text x="{x0 + w + dx + 25:.1f}" y="{y0 + h / 2 - dy / 2:.1f}" '
                     f'font-size="1.0rem" text-anchor="middle">{shape[1]}</text>')
        parts.append(f'<text x="{x0 + dx / 2 - 20:.1f}" y="{y0 - dy / 2:.1f}" '
                     f'font-size="1.0rem" text-anchor="middle">{shape[0]}</text>')
        width, height = x0 + w + dx + 60, y0 + h + 30
    body = "\n  ".join(parts)
    return (f'<svg width="{width:.0f}" height="{height:.0f}" style="stroke:rgb(0,0,0)">\n  '
            f'{body}\n</svg>')


def array_repr_html(x: Any) -> str:
    chunk_bytes = math.prod(x.chunksize) * x.dtype.itemsize
    rows = [
        ("Bytes", format_bytes(x.nbytes), format_bytes(chunk_bytes)),
        ("Shape", _fmt_shape(x.shape), _fmt_shape(x.chunksize)),
        ("Count", f"{task_count(x)} tasks", f"{x.npartitions} chunks in "
                                            f"{len(x._layers)} graph layers"),
        ("Type", f"{x.dtype} numpy.ndarray", ""),
    ]
    table = ["<table>", "  <thead>",
             "    <tr><td> </td><th> Array </th><th> Chunk </th></tr>", "  </thead>",
             "  <tbody>"]
    for label, whole, part in rows:
        table.append(f"    <tr><th> {label} </th><td> {whole} </td><td> {part} </td></tr>")
    table += ["  </tbody>", "</table>"]
    return ("<table>\n<tr>\n<td>\n" + "\n".join(table) + "\n</td>\n<td>\n" + svg(x.chunks)
            + "\n</td>\n</tr>\n</table>")
