"""Tests for the progress bars and progress() (shmdask.diagnostics.progress)."""

from __future__ import annotations

import importlib
import io
import sys
import threading
import time
import types

import pytest
from conftest import run_in_kernel

from shmdask.diagnostics.progress import (
    NotebookProgressBar,
    ProgressBar,
    format_elapsed,
    make_progress_bar,
    progress,
    progress_enabled,
)


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, dt):
        self.t += dt


def make_bar(**kwargs):
    clock = FakeClock()
    out = io.StringIO()
    kwargs.setdefault("enabled", True)
    bar = ProgressBar(stream=out, clock=clock, ticker=False, width=10, **kwargs)
    return bar, clock, out


def frames(out: io.StringIO) -> list[str]:
    return [f.rstrip() for f in out.getvalue().split("\r") if f]


def test_nothing_before_delay_then_drawn():
    bar, clock, out = make_bar(delay=1.0)
    bar.start(100)
    clock.advance(0.5)
    bar.update(10)
    assert out.getvalue() == ""
    clock.advance(0.6)  # 1.1 s in
    bar.update(50)
    assert frames(out) == ["[#####     ]  50% | 50/100 tasks | 1.1 s"]
    assert bar.shown


def test_fast_run_prints_nothing_at_all():
    bar, clock, out = make_bar(delay=1.0)
    bar.start(10)
    clock.advance(0.3)
    bar.update(10)
    bar.finish()
    assert out.getvalue() == "" and not bar.shown


def test_redraws_rate_limited():
    bar, clock, out = make_bar(delay=0.0, interval=0.1)
    bar.start(1000)
    for i in range(1000):  # 1000 updates within 0.5 s of fake time
        clock.advance(0.0005)
        bar.update(i + 1)
    assert 4 <= len(frames(out)) <= 6


def test_final_line_has_elapsed_and_newline():
    bar, clock, out = make_bar(delay=1.0)
    bar.start(4)
    clock.advance(2.0)
    bar.update(2)
    clock.advance(1.25)
    bar.update(4)  # within the interval? no: 1.25 s later, drawn
    bar.finish()
    text = out.getvalue()
    assert text.endswith("\n")
    last = frames(out)[-1]
    assert last == "[##########] 100% | 4/4 tasks | done in 3.2 s"


def test_failed_run_says_so():
    bar, clock, out = make_bar(delay=0.0)
    bar.start(10)
    clock.advance(2.0)
    bar.update(3)
    bar.finish(failed=True)
    assert frames(out)[-1] == "[###       ]  30% | 3/10 tasks | failed after 2.0 s"
    bar, clock, out = make_bar(delay=0.0)
    with pytest.raises(KeyError):
        with bar:
            bar.start(0)
            raise KeyError("x")
    assert "failed after" in out.getvalue()


def test_finish_after_delay_draws_even_without_updates():
    bar, clock, out = make_bar(delay=1.0)
    bar.start(3)
    clock.advance(1.5)
    bar.finish()
    assert frames(out) == ["[          ]   0% | 0/3 tasks | done in 1.5 s"]


def test_shorter_line_clears_the_longer_one():
    bar, clock, out = make_bar(delay=0.0, interval=0.1)
    bar.start(100_000)
    clock.advance(1.0)
    bar.update(5)
    clock.advance(1.0)
    bar.update(5, 10)  # the engine learned the graph got smaller: the line shrinks
    first, second = out.getvalue().split("\r")[1:]
    assert len(second.rstrip()) < len(first)
    assert len(second) >= len(first)  # padded with spaces over the old text


def test_disabled_by_argument_and_config(monkeypatch):
    bar, clock, out = make_bar(delay=0.0, enabled=False)
    bar.start(5)
    clock.advance(5)
    bar.update(5)
    bar.finish()
    assert out.getvalue() == ""

    fake_config = types.ModuleType("shmdask.config")
    settings = {"progress": False}
    fake_config.get = lambda key, default=None: settings.get(key, default)
    import shmdask

    monkeypatch.setitem(sys.modules, "shmdask.config", fake_config)
    monkeypatch.setattr(shmdask, "config", fake_config, raising=False)
    assert progress_enabled() is False
    out = io.StringIO()
    clock = FakeClock()
    bar = ProgressBar(stream=out, clock=clock, ticker=False, delay=0.0)  # enabled from config
    bar.start(5)
    clock.advance(2)
    bar.update(3)
    bar.finish()
    assert out.getvalue() == ""
    settings["progress"] = True
    bar.start(5)
    clock.advance(2)
    bar.update(3)
    bar.finish()
    assert "3/5" in out.getvalue()


def test_config_without_get_means_enabled(monkeypatch):
    import shmdask

    empty = types.ModuleType("shmdask.config")
    monkeypatch.setitem(sys.modules, "shmdask.config", empty)
    monkeypatch.setattr(shmdask, "config", empty, raising=False)
    assert progress_enabled() is True


def test_update_before_start_and_double_finish_are_harmless():
    bar, clock, out = make_bar(delay=0.0)
    bar.update(3, 10)
    bar.finish()
    assert out.getvalue() == ""
    bar.start(2)
    bar.update(2)
    bar.finish()
    bar.finish()
    assert out.getvalue().count("\n") == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="interval"):
        ProgressBar(interval=0)
    with pytest.raises(ValueError, match="delay"):
        ProgressBar(delay=-1)


def test_ticker_thread_draws_without_updates():
    """With the real clock: the bar appears after the delay even if no task finishes."""
    out = io.StringIO()
    bar = ProgressBar(stream=out, delay=0.05, interval=0.01, enabled=True)
    bar.start(10)
    deadline = time.monotonic() + 10
    while "0/10" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    bar.update(10)
    bar.finish()
    assert "0/10 tasks" in out.getvalue()
    assert out.getvalue().endswith("\n")
    progress_module = importlib.import_module("shmdask.diagnostics.progress")
    assert bar not in progress_module._TICKER._bars  # finished bars leave the ticker


def test_updates_from_another_thread():
    bar, clock, out = make_bar(delay=0.0, interval=0.1)
    bar.start(400)

    def engine():
        for i in range(400):
            clock.advance(0.001)
            bar.update(i + 1)

    t = threading.Thread(target=engine)
    t.start()
    t.join()
    bar.finish()
    assert frames(out)[-1].startswith("[##########] 100% | 400/400 tasks")


def test_advance_counts_batches():
    bar, clock, out = make_bar(delay=0.0, interval=0.1)
    bar.start(10)
    for batch in ([1, 2, 3], [4], [5, 6, 7, 8, 9, 10]):
        clock.advance(0.2)
        bar.advance(len(batch))
    bar.finish()
    assert [f.split("|")[1].strip() for f in frames(out)] == [
        "3/10 tasks",
        "4/10 tasks",
        "10/10 tasks",
        "10/10 tasks",
    ]


def test_format_elapsed():
    assert format_elapsed(1.234) == "1.2 s"
    assert format_elapsed(125) == "2m 05s"
    assert format_elapsed(3725) == "1h 02m 05s"


# ----------------------------------------------------------------------------- notebook


class FakeHandle:
    def __init__(self, obj):
        self.shown = [obj]

    def update(self, obj):
        self.shown.append(obj)


def test_notebook_bar_displays_once_then_updates():
    handles = []

    def display(obj, display_id=None):
        assert display_id is True
        handles.append(FakeHandle(obj))
        return handles[-1]

    clock = FakeClock()
    bar = NotebookProgressBar(display=display, clock=clock, delay=0.0, ticker=False, enabled=True)
    bar.start(4)
    clock.advance(0.5)
    bar.update(1)
    clock.advance(0.5)
    bar.update(3)
    clock.advance(0.5)
    bar.finish()
    assert len(handles) == 1
    shown = [getattr(o, "data", o) for o in handles[0].shown]
    assert len(shown) == 3
    assert '<progress value="1" max="4"' in shown[0]
    assert '<progress value="3" max="4"' in shown[1]
    assert "done in 1.5 s" in shown[2]


def test_make_progress_bar_picks_terminal_outside_notebook():
    assert type(make_progress_bar()) is ProgressBar
    assert type(make_progress_bar(notebook=True)) is NotebookProgressBar


# ----------------------------------------------------------------------------- progress()


class FakeFuture:
    def __init__(self, polls_until_done):
        self.left = polls_until_done

    def done(self):
        self.left -= 1
        return self.left <= 0


def test_progress_blocks_until_all_done():
    futures = [FakeFuture(n) for n in (1, 3, 5)]
    out = io.StringIO()
    progress(futures, FakeFuture(2), interval=0.001, stream=out, notebook=False)
    assert all(f.left <= 0 for f in futures)
    lines = frames(out)
    assert lines[0].startswith("[") and "/4 tasks" in lines[0]
    assert "4/4 tasks | done in" in lines[-1]
    assert out.getvalue().endswith("\n")


def test_progress_takes_dicts_collections_and_dedups():
    f = FakeFuture(2)

    class Persisted:
        def __shmdask_graph__(self):
            return {"a": f, "b": 1}

    out = io.StringIO()
    progress({"x": f}, Persisted(), [f], interval=0.001, stream=out, notebook=False)
    assert "1/1 tasks" in out.getvalue()


def test_progress_rejects_other_things():
    with pytest.raises(TypeError, match="int"):
        progress(3, stream=io.StringIO())
    with pytest.raises(ValueError, match="interval"):
        progress(FakeFuture(1), interval=0)


def test_progress_with_real_threads():
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(time.sleep, 0.02) for _ in range(6)]
        out = io.StringIO()
        progress(futures, interval=0.005, stream=out, notebook=False)
        assert all(f.done() for f in futures)
    assert "6/6 tasks" in out.getvalue()


def test_in_a_real_jupyter_kernel():
    """Inside a kernel the bar is HTML, displayed once and updated in place."""
    outputs = run_in_kernel(
        "import time\n"
        "from shmdask.diagnostics.progress import make_progress_bar\n"
        "bar = make_progress_bar(delay=0.0, interval=0.01)\n"
        "print(type(bar).__name__)\n"
        "bar.start(3)\n"
        "for i in range(3):\n"
        "    time.sleep(0.03)\n"
        "    bar.update(i + 1)\n"
        "bar.finish()\n"
    )
    assert outputs[0]["text"].strip() == "NotebookProgressBar"
    displays = [o for o in outputs if o["output_type"] == "display_data"]
    assert len(displays) == 1  # updated in place, not appended
    html = displays[0]["data"]["text/html"]
    assert '<progress value="3" max="3"' in html and "done in" in html


def test_progress_over_client_futures():
    """shmdask.distributed.progress over real Futures of an in-process cluster."""
    from shmdask.distributed import Client
    from shmdask.distributed import progress as distributed_progress
    from shmdask.scheduler.local import ThreadCluster

    with ThreadCluster(2) as cluster:
        client = Client(cluster, set_as_default=False)
        try:
            futures = client.map(time.sleep, [0.02] * 8, pure=False)
            out = io.StringIO()
            distributed_progress(futures, stream=out, interval=0.005, notebook=False)
            assert all(f.done() for f in futures)
        finally:
            client.close()
    assert "8/8 tasks | done in" in out.getvalue()
