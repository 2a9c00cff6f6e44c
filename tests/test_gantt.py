"""Tests for the task-stream Gantt picture and its numbers (shmdask.diagnostics: gantt, summary,
palette, memory_panel)."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
from conftest import run_in_kernel

from shmdask.diagnostics.gantt import BIN_ABOVE, merge_spans, plot_task_stream
from shmdask.diagnostics.palette import OTHER_COLOR, TRANSFER_COLOR, group_colors
from shmdask.diagnostics.summary import lane_layout, stats_line, summarize
from shmdask.diagnostics.task_stream import TaskStream, TaskStreamContext


def record(key, group, lane, start, stop, kind="compute", remote=False, nbytes=8):
    return {
        "key": key,
        "group": group,
        "worker": lane.split("/")[0],
        "lane": lane,
        "start": start,
        "stop": stop,
        "nbytes": nbytes,
        "where": "inline",
        "kind": kind,
        "remote": remote,
    }


def synthetic_run(n_tasks, n_workers=2, threads=1, groups=("inc", "dec", "add"), seed=0):
    """Back-to-back tasks with small random gaps on each lane, plus one transfer."""
    rnd = random.Random(seed)
    lanes = [f"worker-{w}/{t}" for w in range(n_workers) for t in range(threads)]
    clock = dict.fromkeys(lanes, 100.0)
    out = []
    for i in range(n_tasks):
        lane = lanes[i % len(lanes)]
        start = clock[lane] + rnd.uniform(0, 0.001)
        stop = start + rnd.uniform(0.001, 0.01)
        group = groups[rnd.randrange(len(groups))]
        out.append(record((f"{group}-abc", i), group, lane, start, stop))
        clock[lane] = stop
    out.append(record("x-1", "x", lanes[-1], 100.01, 100.03, kind="transfer"))
    return out


def memory_samples(t0, t1, workers=("worker-0", "worker-1"), n=20):
    return [
        {
            "time": t,
            "shm_bytes": int(1e6 * (1 + i % 5)),
            "rss": {w: int(5e7 + 1e6 * i) for w in workers},
            "done": i,
        }
        for i, t in enumerate(np.linspace(t0, t1, n))
    ]


def collections_by_label(fig):
    ax = fig.axes[0]
    return {c.get_label(): c for c in ax.collections}


# ----------------------------------------------------------------------------- numbers


def test_summarize_numbers():
    recs = [
        record("a", "inc", "worker-0/0", 10.0, 11.0),
        record("b", "inc", "worker-0/1", 10.0, 10.5),
        record("c", "dec", "worker-1/0", 10.5, 12.0),
        record("t", "x", "worker-1/0", 10.0, 10.5, kind="transfer"),
    ]
    s = summarize(recs)
    assert s["wall"] == pytest.approx(2.0)
    assert s["n_tasks"] == 3 and s["n_transfers"] == 1
    assert s["n_workers"] == 2 and s["n_lanes"] == 3
    assert s["busy"] == pytest.approx(3.0)
    assert s["utilisation"] == pytest.approx(3.0 / (2.0 * 3))
    assert s["workers"]["worker-0"]["utilisation"] == pytest.approx(1.5 / (2.0 * 2))
    assert s["workers"]["worker-1"]["utilisation"] == pytest.approx(1.5 / 2.0)
    assert s["workers"]["worker-0"]["tasks"] == 2
    assert s["groups"] == {"dec": {"count": 1, "busy": 1.5}, "inc": {"count": 2, "busy": 1.5}}
    assert list(s["groups"]) == ["dec", "inc"]  # by busy time, then name


def test_stats_line():
    recs = [
        record("a", "inc", "worker-0/0", 10.0, 10.5),
        dict(record("b", "inc", "worker-0/0", 10.5, 11.0), error=True),
        record("t", "x", "worker-0/0", 10.0, 10.2, kind="transfer"),
    ]
    assert stats_line(summarize(recs)) == (
        "wall 1.00 s · 2 tasks · 1 transfer · 1 worker · 1 lane · utilisation 100% · 1 erred"
    )


def test_summarize_empty():
    s = summarize([])
    assert s["n_tasks"] == 0 and s["wall"] == 0.0 and s["utilisation"] == 0.0


def test_lane_layout_groups_by_worker_in_natural_order():
    recs = [
        record("a", "g", "worker-10/0", 0, 1),
        record("b", "g", "worker-2/1", 0, 1),
        record("c", "g", "worker-2/0", 0, 1, remote=True),
        record("d", "g", "worker-1/0", 0, 1),
    ]
    layout = lane_layout(recs)
    assert [lane for lane, _ in sorted(layout.items(), key=lambda kv: kv[1]["row"])] == [
        "worker-1/0",
        "worker-2/0",
        "worker-2/1",
        "worker-10/0",
    ]
    assert layout["worker-2/0"]["remote"] and "remote" in layout["worker-2/0"]["label"]
    assert not layout["worker-2/1"]["remote"]
    assert layout["worker-10/0"]["worker"] == "worker-10"


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"start": 0, "stop": 1}, "lane"),
        ({"lane": "w/0", "stop": 1}, "start"),
        ({"lane": "w/0", "start": 2.0, "stop": 1.0}, "stops before it starts"),
        ({"lane": "w/0", "start": float("nan"), "stop": 1.0}, "non-finite"),
    ],
)
def test_bad_records_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        summarize([record("a", "g", "w/0", 0, 1), bad])


def test_non_dict_record_is_a_type_error():
    with pytest.raises(TypeError, match="record 0 is a list"):
        plot_task_stream([[1, 2, 3]])


def test_group_colors_stable_and_distinct():
    a = group_colors(["inc", "dec", "add"])
    b = group_colors(["inc"])
    assert a["inc"] == b["inc"]  # colour follows the name
    assert len(set(a.values())) == 3
    many = group_colors([f"g{i}" for i in range(30)], limit=12)
    assert len(many) == 12 and len(set(many.values())) == 12
    assert TRANSFER_COLOR not in many.values() and OTHER_COLOR not in many.values()


def test_merge_spans():
    start = np.array([0.0, 1.0, 2.0, 10.0, 0.0, 3.0])
    stop = np.array([0.9, 1.95, 2.5, 11.0, 5.0, 4.0])
    row = np.array([0, 0, 0, 0, 1, 0])
    color = np.array([0, 0, 0, 0, 0, 1])
    s, e, r, c = merge_spans(start, stop, row, color, min_gap=0.2)
    spans = sorted(zip(r.tolist(), s.tolist(), e.tolist(), c.tolist(), strict=True))
    # row 0: [0, 2.5] colour 0, then [3, 4] colour 1 stops the merge, then [10, 11]
    assert spans == [(0, 0.0, 2.5, 0), (0, 3.0, 4.0, 1), (0, 10.0, 11.0, 0), (1, 0.0, 5.0, 0)]


# ----------------------------------------------------------------------------- drawing


def test_plot_small_stream_draws_every_bar(tmp_path):
    recs = synthetic_run(20, n_workers=2, threads=2)
    fig = plot_task_stream(recs, memory_samples(100.0, 100.2), filename=tmp_path / "ts.png")
    assert (tmp_path / "ts.png").stat().st_size > 1000
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["worker-0/0", "worker-0/1", "worker-1/0", "worker-1/1"]
    by_label = collections_by_label(fig)
    counts = {}
    for r in recs:
        if r["kind"] == "compute":
            counts[r["group"]] = counts.get(r["group"], 0) + 1
    for group, n in counts.items():
        assert len(by_label[group].get_paths()) == n
    transfer = by_label["transfer"]
    assert len(transfer.get_paths()) == 1
    assert tuple(transfer.get_facecolor()[0][:3]) == pytest.approx((214 / 255, 39 / 255, 40 / 255))
    # bars sit in the lane of their record, at seconds from the first start
    t0 = min(r["start"] for r in recs)
    first = recs[0]
    verts = by_label[first["group"]].get_paths()[0].vertices
    assert verts[:, 0].min() == pytest.approx(first["start"] - t0)
    assert verts[:, 0].max() == pytest.approx(first["stop"] - t0)
    assert (verts[:, 1].min() + verts[:, 1].max()) / 2 == pytest.approx(0.0)  # row 0
    title = ax.get_title(loc="left")
    assert "20 tasks" in title and "2 workers" in title and "utilisation" in title


def test_plot_marks_remote_lanes_and_writes_title():
    recs = [
        record("a", "inc", "worker-0/0", 0.0, 1.0),
        record("b", "inc", "worker-1/0", 0.0, 1.0, remote=True),
    ]
    fig = plot_task_stream(recs, title="my run")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["worker-0/0", "worker-1/0 (remote)"]
    assert fig._suptitle.get_text() == "my run"


def test_erred_tasks_are_hatched_and_counted():
    recs = [
        record("a", "inc", "worker-0/0", 0.0, 1.0),
        dict(record("b", "inc", "worker-0/0", 1.0, 1.5), error=True),
    ]
    assert summarize(recs)["n_errors"] == 1
    fig = plot_task_stream(recs)
    erred = collections_by_label(fig)["erred"]
    assert len(erred.get_paths()) == 1 and erred.get_hatch() == "xxx"
    assert len(collections_by_label(fig)["inc"].get_paths()) == 2  # still drawn in colour


def test_other_groups_beyond_legend_limit():
    recs = [record(f"g{i}-x", f"g{i}", "worker-0/0", i, i + 0.5) for i in range(15)]
    fig = plot_task_stream(recs, legend_groups=5)
    by_label = collections_by_label(fig)
    assert len(by_label["other"].get_paths()) == 10
    assert sum(len(c.get_paths()) for c in fig.axes[0].collections) == 15
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(legend) == 6 and legend[-1] == "other"


def test_memory_panel_and_tasks_done_curve():
    recs = synthetic_run(30)
    mem = memory_samples(100.0, 100.2)
    fig = plot_task_stream(recs, mem)
    ax_mem = fig.axes[1]
    rss_lines = [ln for ln in ax_mem.get_lines() if ln.get_label().startswith("RSS")]
    assert {ln.get_label() for ln in rss_lines} == {"RSS worker-0", "RSS worker-1"}
    done_axis = fig.axes[2]  # twin axis of the memory panel
    (done,) = done_axis.get_lines()
    assert done.get_ydata()[-1] == 30  # every compute record finished by the end
    assert np.all(np.diff(done.get_ydata()) >= 0)


def test_many_workers_share_one_rss_legend_entry():
    recs = [record(f"a{w}", "inc", f"worker-{w}/0", 0.0, 1.0) for w in range(10)]
    mem = memory_samples(0.0, 1.0, workers=[f"worker-{w}" for w in range(10)])
    fig = plot_task_stream(recs, mem)
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["shared memory", "RSS of 10 workers", "tasks done"]
    assert len([ln for ln in fig.axes[1].get_lines() if ln.get_label().startswith("RSS")]) == 10


def test_plot_without_memory_and_empty_stream(tmp_path):
    fig = plot_task_stream(synthetic_run(5), None)
    assert len(fig.axes) == 3
    fig = plot_task_stream([], filename=tmp_path / "empty.svg")
    assert "no tasks" in fig.axes[0].get_title(loc="left")
    assert (tmp_path / "empty.svg").stat().st_size > 0


def test_bad_extension_fails_before_drawing(tmp_path):
    with pytest.raises(ValueError, match=r"\.bmp"):
        plot_task_stream(synthetic_run(3), filename=tmp_path / "x.bmp")
    assert not (tmp_path / "x.bmp").exists()


@pytest.mark.parametrize("ext", ["png", "svg", "pdf"])
def test_writes_each_format(tmp_path, ext):
    path = tmp_path / f"stream.{ext}"
    plot_task_stream(synthetic_run(10), memory_samples(100.0, 100.1), filename=str(path))
    assert path.stat().st_size > 500


def test_large_stream_is_binned_and_renders(tmp_path):
    n = 50_000
    recs = synthetic_run(n, n_workers=2, threads=2, groups=("inc", "dec", "add", "sum", "mul"))
    path = tmp_path / "big.png"
    fig = plot_task_stream(recs, memory_samples(100.0, 200.0), filename=path)
    assert path.stat().st_size > 1000
    bars = sum(len(c.get_paths()) for c in fig.axes[0].collections if c.get_label() != "transfer")
    assert bars < n  # sub-pixel neighbours were merged
    assert n > BIN_ABOVE
    # merged spans still cover each lane from its first start to its last stop
    t0 = min(r["start"] for r in recs)
    last_stop = max(r["stop"] for r in recs if r["lane"] == "worker-0/0") - t0
    rightmost = max(
        p.vertices[:, 0].max()
        for c in fig.axes[0].collections
        if c.get_label() != "transfer"
        for p in c.get_paths()
        if abs(p.vertices[:, 1].min() + p.vertices[:, 1].max()) < 1e-9
    )
    span = max(r["stop"] for r in recs) - t0
    assert last_stop <= rightmost <= last_stop + span / 500  # a bar is at least 1 px wide


def test_drawing_from_threads_is_independent(tmp_path):
    """No pyplot state: two threads draw different pictures at once."""
    errors = []

    def draw(i):
        try:
            plot_task_stream(synthetic_run(50, seed=i), filename=tmp_path / f"t{i}.png")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all((tmp_path / f"t{i}.png").stat().st_size > 0 for i in range(3))


def test_task_stream_context_plot(tmp_path):
    stream = TaskStream()
    stream.add(synthetic_run(5))
    with TaskStreamContext(stream, plot=True, filename=tmp_path / "ctx.png") as ts:
        stream.add(synthetic_run(12, seed=3))
        stream.add_memory_sample({"time": 100.0, "shm_bytes": 10, "rss": {"worker-0": 5}})
    assert len(ts.data) == 13
    assert ts.figure is not None and (tmp_path / "ctx.png").stat().st_size > 0
    assert ts.summary()["n_tasks"] == 12


# ----------------------------------------------------------------------------- TaskStream


def test_task_stream_records_since_and_copies():
    stream = TaskStream()
    first = synthetic_run(3)
    stream.add(first)
    pos = stream.position
    assert pos == 4 and len(stream) == 4
    stream.add(iter(synthetic_run(2, seed=1)))  # any iterable
    since = stream.records_since(pos)
    assert len(since) == 3
    since[0]["group"] = "mutated"
    assert stream.records_since(pos)[0]["group"] != "mutated"  # readers get copies
    assert stream.records_since(stream.position) == []
    assert len(stream.records_since(0)) == 7


def test_compact_records_are_read_as_the_same_dicts():
    from shmdask.scheduler.records import (
        compute_record,
        record_dict,
        record_duration,
        task_record,
    )

    key = ("random_sample-ab12cd34ef", 3)
    args = (key, "worker-0", "worker-0/1", 10.0, 10.25, 800, "shm")
    compact = compute_record(*args)
    assert type(compact) is tuple
    full = task_record(*args)
    assert full["group"] == "random_sample" and full["kind"] == "compute"
    assert record_dict(compact) == full and record_dict(full) is full
    assert record_duration(compact) == record_duration(full) == 0.25
    stream = TaskStream()
    stream.add([compact, full])
    copied = stream.records_since(0)
    assert copied == [full, full]
    copied[1]["group"] = "mutated"
    assert full["group"] == "random_sample"  # a logged dict is copied out
    seen, end = stream.read(0, copy=False)
    assert seen == [full, full] and seen[1] is full and end == 2


def test_task_stream_bounded_keeps_absolute_positions():
    stream = TaskStream(max_records=100)
    for i in range(10):
        stream.add([{"key": f"k{i}-{j}", "lane": "w/0", "start": 0, "stop": 1} for j in range(30)])
    assert stream.position == 300
    assert len(stream) <= 100
    tail = stream.records_since(290)
    assert [r["key"] for r in tail] == [f"k9-{j}" for j in range(20, 30)]
    # a position that was dropped gives what is still held, oldest first
    held = stream.records_since(0)
    assert held[-1]["key"] == "k9-29" and len(held) == len(stream)
    stream.clear()
    assert len(stream) == 0 and stream.position == 300


def test_task_stream_memory_samples():
    stream = TaskStream()
    stream.add_memory_sample({"time": 1.0, "shm_bytes": 5, "rss": {"w": 1}, "done": 0})
    with TaskStreamContext(stream) as ctx:
        stream.add_memory_sample({"time": 2.0, "shm_bytes": 6, "rss": {"w": 2}, "done": 3})
    assert [s["time"] for s in ctx.memory] == [2.0]
    ctx.memory[0]["rss"]["w"] = 99
    assert stream.memory_since(0)[1]["rss"]["w"] == 2
    with pytest.raises(ValueError, match="time"):
        stream.add_memory_sample({"shm_bytes": 1})


def test_task_stream_concurrent_appends():
    stream = TaskStream(max_records=None)
    n_threads, batches, batch = 4, 200, 25
    barrier = threading.Barrier(n_threads + 2)  # writers, reader, this thread
    seen_lengths = []

    def writer(t):
        barrier.wait()
        for b in range(batches):
            stream.add(
                [
                    {"key": (f"t{t}", b, i), "lane": f"worker-{t}/0", "start": 0, "stop": 1}
                    for i in range(batch)
                ]  # fmt: skip
            )

    def reader():
        barrier.wait()
        pos = 0
        while pos < n_threads * batches * batch:
            new = stream.records_since(pos)
            pos += len(new)
            seen_lengths.append(len(new))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    barrier.wait()
    for t in threads:
        t.join(timeout=60)
    records = stream.records_since(0)
    assert len(records) == n_threads * batches * batch
    assert len({r["key"] for r in records}) == len(records)
    # each batch is appended whole: a thread's records stay in order and contiguous per batch
    for t in range(n_threads):
        mine = [r["key"] for r in records if r["key"][0] == f"t{t}"]
        assert mine == sorted(mine)
    assert sum(seen_lengths) == len(records)
    assert all(n % batch == 0 for n in seen_lengths)  # never half a batch


def test_task_stream_context_needs_a_stream():
    with pytest.raises(TypeError, match="TaskStream"):
        TaskStreamContext(42)
    ctx = TaskStreamContext(lambda: "not a stream")
    with pytest.raises(TypeError, match="str"):
        ctx.__enter__()
    with pytest.raises(ValueError, match="max_records"):
        TaskStream(max_records=0)


def test_task_stream_context_lazy_source_and_exception():
    stream = TaskStream()
    with pytest.raises(RuntimeError, match="boom"):
        with TaskStreamContext(lambda: stream, plot=True) as ctx:
            stream.add(synthetic_run(2))
            raise RuntimeError("boom")
    assert len(ctx.data) == 3  # captured even on error, but no picture drawn
    assert ctx.figure is None


def test_records_from_the_threads_engine_plot(tmp_path):
    """Real records, as the engine's thread workers stamp them, go through the store
    and the plot unchanged."""
    from operator import add

    from shmdask.graph import dependencies_of
    from shmdask.scheduler.local import get_local

    def inc(x):
        return x + 1

    dsk = {("inc-aaaaaaaa", i): (inc, i) for i in range(40)}
    dsk["add-bbbbbbbb"] = (sum, [("inc-aaaaaaaa", i) for i in range(40)])
    dsk["add-cccccccc"] = (add, "add-bbbbbbbb", 1)
    sink: list = []
    result = get_local(dsk, dependencies_of(dsk), ["add-cccccccc"], num_workers=2,
                       record_sink=sink)  # fmt: skip
    assert result["add-cccccccc"] == sum(range(1, 41)) + 1
    stream = TaskStream()
    with TaskStreamContext(stream) as ts:
        stream.add(sink)
    s = ts.summary()
    assert s["n_tasks"] == len(dsk)
    assert s["groups"]["inc"]["count"] == 40
    fig = ts.plot(tmp_path / "threads.png")
    assert len(fig.axes[0].get_yticklabels()) == s["n_lanes"] <= 2
    assert (tmp_path / "threads.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- MemorySampler


def test_memory_sampler_measures_rss_and_skips_dead_workers():
    import os
    import subprocess
    import sys

    from shmdask.diagnostics.task_stream import MemorySampler

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stream = TaskStream()
    sampler = MemorySampler(
        stream,
        worker_pids=lambda: {"worker-0": os.getpid(), "worker-1": dead.pid},
        shm_bytes=lambda: 4096,
        done=lambda: 7,
    )
    sample = sampler.sample()
    assert sample["rss"]["worker-0"] > 1_000_000
    assert "worker-1" not in sample["rss"]
    assert sample["shm_bytes"] == 4096 and sample["done"] == 7
    assert stream.memory_since(0) == [sample]


def test_memory_sampler_thread_samples_until_stopped():
    import os

    from shmdask.diagnostics.task_stream import MemorySampler

    stream = TaskStream()
    calls = []

    def pids():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("cluster busy")  # a failing probe skips one sample only
        return {"w": os.getpid()}

    with MemorySampler(stream, worker_pids=pids, interval=0.01):
        deadline = time.monotonic() + 10
        while len(stream.memory_since(0)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    n = len(stream.memory_since(0))
    assert n >= 3  # kept sampling after the failed probe, plus one on stop
    time.sleep(0.05)
    assert len(stream.memory_since(0)) == n  # stopped
    with pytest.raises(ValueError, match="interval"):
        MemorySampler(stream, worker_pids=dict, interval=0)


def test_a_returned_plot_shows_inline_in_a_jupyter_kernel():
    """No pyplot and no %matplotlib: the Figure still displays as a PNG."""
    outputs = run_in_kernel(
        "from shmdask.diagnostics.gantt import plot_task_stream\n"
        "plot_task_stream([{'key': 'a-1', 'group': 'a', 'worker': 'w', 'lane': 'w/0',\n"
        "                   'start': 0.0, 'stop': 1.0, 'nbytes': 0, 'where': 'memory',\n"
        "                   'kind': 'compute', 'remote': False}])\n"
    )
    (result,) = [o for o in outputs if o["output_type"] == "execute_result"]
    assert "image/png" in result["data"]


def test_memory_panel_shows_spilled_bytes_when_there_are_some():
    recs = [record("a", "inc", "worker-0/0", 0.0, 1.0)]
    mem = memory_samples(0.0, 1.0, workers=["worker-0"])
    for i, sample in enumerate(mem):
        sample["spilled_bytes"] = int(2e6 * i)
    fig = plot_task_stream(recs, mem)
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["shared memory", "spilled to disk", "RSS worker-0", "tasks done"]
