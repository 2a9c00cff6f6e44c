"""Figure plumbing shared by the Gantt plot and the graph drawing.

In: nothing but sizes and a filename. Out: a ``matplotlib.figure.Figure`` bound to
an Agg canvas, written to png/svg/pdf by extension, or turned into PNG bytes for
an inline notebook picture.

Why shaped so: shmdask must never touch pyplot's global state (its current figure,
its backend choice, its GUI event loop) -- a library that draws from a scheduler
thread or inside a user's script would otherwise fight the user's own plots. A
Figure attached directly to ``FigureCanvasAgg`` needs no backend and no pyplot,
and is safe to build in any thread. matplotlib itself is imported on first use,
so ``import shmdask`` stays fast.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # matplotlib is imported when a figure is made, not before
    from matplotlib.figure import Figure

#: file extensions we can write, mapped to matplotlib's format names
SAVE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def new_figure(width_in: float, height_in: float, dpi: float = 100) -> Figure:
    """A Figure of the given size on its own Agg canvas (no pyplot involved)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    show_inline_in_notebooks()
    return fig


def check_filename(filename: str | os.PathLike) -> str:
    """Return the matplotlib format for ``filename``; ValueError on an unknown extension.

    Called before any drawing so that a typo costs nothing.
    """
    ext = os.path.splitext(os.fspath(filename))[1].lower()
    if ext not in SAVE_FORMATS:
        known = ", ".join(sorted(SAVE_FORMATS))
        raise ValueError(
            f"cannot save a figure to {os.fspath(filename)!r}: unknown extension {ext!r} "
            f"(use one of {known})"
        )
    return SAVE_FORMATS[ext]


def save_figure(fig: Figure, filename: str | os.PathLike) -> None:
    """Write ``fig`` to ``filename`` in the format named by its extension."""
    fmt = check_filename(filename)
    fig.savefig(os.fspath(filename), format=fmt, dpi=fig.dpi)


def png_bytes(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes in memory."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def in_notebook() -> bool:
    """True when running inside a Jupyter kernel (an IPython shell with a kernel)."""
    import sys

    if "IPython" not in sys.modules:  # never import IPython just to find out
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython half-installed
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show_inline_in_notebooks() -> None:
    """In a Jupyter kernel, let a returned Figure display as a PNG.

    Our Figures never pass through pyplot, so the inline backend's display
    hook may not be installed (it is only once pyplot or ``%matplotlib`` was
    used); registering a PNG formatter for Figure makes ``ts.plot()`` as the
    last line of a cell show the picture either way.
    """
    if not in_notebook():
        return
    from IPython import get_ipython
    from matplotlib.figure import Figure

    formatter = get_ipython().display_formatter.formatters["image/png"]
    try:
        formatter.lookup_by_type(Figure)  # pyplot's inline backend has one already
    except KeyError:
        formatter.for_type(Figure, png_bytes)
