"""Progress display for computations: a terminal bar and a notebook bar.

In: three callbacks from the engine's scheduler thread -- ``start(total)``,
``update(done, total)``, ``finish()`` -- or, through ``progress(...)``, a set of
future-like objects polled for ``.done()``.
Out: a one-line bar redrawn in place on stderr (``\\r``), or an HTML ``<progress>``
element updated in place in a Jupyter notebook (through an IPython display id;
ipywidgets is not needed).

Why shaped so:
* Short computations should print nothing, so the bar appears only once a run
  has lasted ``delay`` seconds (1 s by default). One daemon "ticker" thread per
  process redraws the active bars so that a bar appears, and its clock moves,
  even while one long task produces no updates; a bar joins it at ``start`` and
  leaves at ``finish`` (a set insertion, not a thread start).
* ``update`` sits on the engine's hot path: it stores two numbers under a lock
  and draws at most ``1 / interval`` times per second (10/s by default).
* The bar is ~100 lines of our own rather than tqdm: runtime dependencies are
  fixed, our callback protocol (absolute ``done`` counts from another thread, a
  display delay, a notebook display without ipywidgets) is not tqdm's model, and
  tests drive it with a fake clock and stream.
* ``shmdask.config.get("progress", True)`` false turns the bar off; the config
  module is read defensively so the bar works before it exists.
"""

from __future__ import annotations

import html
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from .figure import in_notebook


def progress_enabled() -> bool:
    """The ``progress`` config setting (default True); True if config is unavailable."""
    try:
        from shmdask import config
    except ImportError:
        return True
    get = getattr(config, "get", None)
    if not callable(get):
        return True
    try:
        return bool(get("progress", True))
    except (KeyError, TypeError, ValueError):
        return True


def format_elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s"


class ProgressBar:
    """Terminal progress bar driven by ``start`` / ``update`` / ``finish`` callbacks.

    ``delay``: seconds a run must last before anything is drawn. ``interval``:
    minimum seconds between redraws. ``stream``: where to write (default: the
    current ``sys.stderr``). ``clock``: a monotonic clock, replaceable in tests.
    ``enabled``: None reads the ``progress`` config setting at ``start``.
    ``ticker``: let the process's ticker thread redraw while no updates come.
    """

    def __init__(
        self,
        *,
        delay: float = 1.0,
        interval: float = 0.1,
        width: int = 40,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool | None = None,
        ticker: bool = True,
        label: str = "tasks",
    ):
        if delay < 0 or interval <= 0 or width < 1:
            raise ValueError(
                f"ProgressBar needs delay >= 0, interval > 0 and width >= 1 "
                f"(got delay={delay!r}, interval={interval!r}, width={width!r})"
            )
        self.delay = delay
        self.interval = interval
        self.width = width
        self._stream = stream
        self._clock = clock
        self._enabled_setting = enabled
        self._use_ticker = ticker
        self.label = label
        self._lock = threading.Lock()
        self._active = False
        self._enabled = False
        self._t_start = 0.0
        self._last_draw = -float("inf")
        self._done = 0
        self._total = 0
        self._drawn = False
        self._last_len = 0

    # -- callbacks -----------------------------------------------------------------

    def start(self, total: int) -> None:
        """A run of ``total`` tasks begins."""
        with self._lock:
            self._enabled = (
                progress_enabled() if self._enabled_setting is None else self._enabled_setting
            )
            self._active = True
            self._t_start = self._clock()
            self._last_draw = -float("inf")
            self._done = 0
            self._total = max(int(total), 0)
            self._drawn = False
            self._last_len = 0
        if self._enabled and self._use_ticker:
            _TICKER.add(self)

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` of ``total`` tasks are finished (absolute counts, not increments)."""
        with self._lock:
            if not self._active:
                return
            self._done = int(done)
            if total is not None:
                self._total = int(total)
            if self._enabled:
                self._maybe_draw(self._clock())

    def advance(self, n: int = 1) -> None:
        """``n`` more tasks finished (for callers that see batches, not totals,
        e.g. ``engine.record_callbacks.append(lambda recs: bar.advance(len(recs)))``)."""
        with self._lock:
            if not self._active:
                return
            self._done += int(n)
            if self._enabled:
                self._maybe_draw(self._clock())

    def finish(self, failed: bool = False) -> None:
        """The run is over: draw the final line (if the bar was due) and stop.
        ``failed=True`` says so on that line instead of "done"."""
        _TICKER.remove(self)
        with self._lock:
            if not self._active:
                return
            self._active = False
            if not self._enabled:
                return
            elapsed = self._clock() - self._t_start
            if self._drawn or elapsed >= self.delay:
                line = self._render(self._done, self._total, elapsed, final=True, failed=failed)
                self._write(line, True)

    def poll(self) -> None:
        """Redraw if due (what the ticker thread does every ``interval``)."""
        with self._lock:
            if self._active and self._enabled:
                self._maybe_draw(self._clock())

    # -- drawing ---------------------------------------------------------------------

    @property
    def shown(self) -> bool:
        """Whether anything has been drawn for the current run."""
        return self._drawn

    def _maybe_draw(self, now: float) -> None:
        # caller holds the lock
        elapsed = now - self._t_start
        if elapsed < self.delay or now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self._write(self._render(self._done, self._total, elapsed, final=False), False)

    @staticmethod
    def _when(elapsed: float, final: bool, failed: bool) -> str:
        if failed:
            return f"failed after {format_elapsed(elapsed)}"
        return f"done in {format_elapsed(elapsed)}" if final else format_elapsed(elapsed)

    def _render(
        self, done: int, total: int, elapsed: float, final: bool, failed: bool = False
    ) -> str:
        frac = min(done / total, 1.0) if total > 0 else (1.0 if final and not failed else 0.0)
        filled = int(round(frac * self.width))
        bar = "#" * filled + " " * (self.width - filled)
        when = self._when(elapsed, final, failed)
        return f"[{bar}] {frac:4.0%} | {done}/{total} {self.label} | {when}"

    def _write(self, line: str, final: bool) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        pad = " " * max(self._last_len - len(line), 0)
        self._last_len = len(line)
        try:
            stream.write("\r" + line + pad + ("\n" if final else ""))
            stream.flush()
        except (OSError, ValueError):  # closed or broken stream: progress is optional
            pass
        self._drawn = True

    # -- context manager: ``with ProgressBar() as bar: bar.start(n) ...`` ---------------

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info) -> None:
        self.finish(failed=exc_info[0] is not None)


class NotebookProgressBar(ProgressBar):
    """The same bar as an HTML ``<progress>`` element updated in place in a notebook.

    ``display`` is IPython's ``display`` function (injectable for tests); it is
    called once with ``display_id=True`` and the returned handle is updated.
    """

    def __init__(self, *, display: Callable[..., Any] | None = None, **kwargs):
        kwargs.setdefault("width", 300)
        super().__init__(**kwargs)
        self._display = display
        self._handle: Any = None

    def _html(self, line_html: str):
        try:
            from IPython.display import HTML
        except ImportError:  # pragma: no cover - only reached outside notebooks
            return line_html
        return HTML(line_html)

    def _render(
        self, done: int, total: int, elapsed: float, final: bool, failed: bool = False
    ) -> str:
        value = min(done, total) if total > 0 else (1 if final and not failed else 0)
        top = max(total, 1)
        frac = value / top
        when = self._when(elapsed, final, failed)
        text = html.escape(f"{frac:.0%} | {done}/{total} {self.label} | {when}")
        return (
            '<div style="font-family: monospace; display: flex; align-items: center; gap: 8px">'
            f'<progress value="{value}" max="{top}" style="width: {self.width}px"></progress>'
            f"<span>{text}</span></div>"
        )

    def _write(self, line: str, final: bool) -> None:
        obj = self._html(line)
        if self._handle is None:
            display = self._display
            if display is None:
                from IPython.display import display
            self._handle = display(obj, display_id=True)
        else:
            self._handle.update(obj)
        self._drawn = True

    def start(self, total: int) -> None:
        self._handle = None
        super().start(total)


class _Ticker:
    """One daemon thread for all bars of the process: it polls the active bars every
    ``interval`` and sleeps on a condition while there are none. Starting a thread
    per compute would cost ~0.5 ms, as much as a whole small compute."""

    idle_exit = 0.5  # seconds without bars before the thread ends

    def __init__(self):
        self._cond = threading.Condition()
        self._bars: set[ProgressBar] = set()
        self._thread: threading.Thread | None = None

    def add(self, bar: ProgressBar) -> None:
        with self._cond:
            self._bars.add(bar)
            # not alive: first use, or a child process after fork()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="shmdask-progress", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def remove(self, bar: ProgressBar) -> None:
        with self._cond:
            self._bars.discard(bar)

    def active(self) -> int:
        with self._cond:
            return len(self._bars)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._bars:
                    # Idle for a moment: go away, so no thread outlives the
                    # computes that needed it (the next bar starts a new one).
                    self._cond.wait(self.idle_exit)
                    if not self._bars:
                        self._thread = None
                        return
                bars = list(self._bars)
            for bar in bars:
                bar.poll()
            time.sleep(min(bar.interval for bar in bars))


_TICKER = _Ticker()


def make_progress_bar(notebook: bool | None = None, **kwargs) -> ProgressBar:
    """A NotebookProgressBar inside a Jupyter kernel (or when ``notebook=True``),
    a terminal ProgressBar otherwise."""
    if notebook is None:
        notebook = in_notebook()
    return NotebookProgressBar(**kwargs) if notebook else ProgressBar(**kwargs)


def _is_future_like(obj: Any) -> bool:
    return callable(getattr(obj, "done", None)) and not isinstance(obj, type)


def progress(
    *futures_or_collections: Any,
    notebook: bool | None = None,
    interval: float = 0.1,
    stream: TextIO | None = None,
    delay: float = 0.0,
) -> None:
    """Block until all given futures are done, showing a progress bar meanwhile.

    Accepts futures (anything with ``.done()``), persisted collections (their
    graph holds futures), and lists/tuples/dicts of these. Polls every
    ``interval`` seconds. Unlike the engine's bar this one shows at once
    (``delay=0``): the caller asked for it.
    """
    from shmdask.futures import futures_of  # the one way to find futures, as wait does

    if interval <= 0:
        raise ValueError(f"progress() needs interval > 0, got {interval!r}")
    for obj in futures_or_collections:
        if not (_is_future_like(obj) or hasattr(obj, "__shmdask_graph__")
                or isinstance(obj, list | tuple | set | frozenset | dict)):
            raise TypeError(
                f"progress() takes futures (objects with .done()) or collections, "
                f"got {type(obj).__name__}"
            )
    futures = futures_of(futures_or_collections, like=_is_future_like)
    bar = make_progress_bar(
        notebook, delay=delay, interval=interval, stream=stream, enabled=True, ticker=False
    )
    bar.start(len(futures))
    failed = True
    try:
        pending = futures
        while True:
            pending = [f for f in pending if not f.done()]
            bar.update(len(futures) - len(pending))
            if not pending:
                break
            time.sleep(interval)
        failed = False
    finally:
        bar.finish(failed=failed)  # e.g. Ctrl-C while waiting
