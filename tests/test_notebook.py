"""The tutorial runs end to end: the notebook in a Jupyter kernel, the script in a
subprocess, plainly and under ``shmdask run`` (where it must use the run's Client).

In: ``notebooks/distributed-tutorial.ipynb`` and ``notebooks/distributed_tutorial.py``
of this checkout, run at ``SHMDASK_TUTORIAL_SCALE=0.01`` (sleeps of 20 ms, arrays
a hundredth of the tutorial's first axis). Out: pass when every cell runs without
error and the results the tutorial computes are the right numbers, with the
pictures it promises (graphs, task streams, the array's HTML table) present.

All run this checkout's shmdask: the kernel and the subprocess get the repository
root first on PYTHONPATH.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "distributed-tutorial.ipynb"
SCRIPT = ROOT / "notebooks" / "distributed_tutorial.py"
SMALL_SCALE = "0.01"
# how the notebook's timed cluster computations start
TIMED_STREAM = "%%time\nwith client.get_task_stream() as ts:\n    "
TOTAL = sum((i + 1) + i for i in range(256))  # each chain gives inc(i) + dec(inc(i))


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["SHMDASK_TUTORIAL_SCALE"] = SMALL_SCALE
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.pop("MPLBACKEND", None)  # the kernel picks its inline backend itself
    return env


def _outputs(nb, source: str) -> list[dict]:
    """Outputs of the code cells whose source is ``source``; a ``source`` ending in
    "..." matches the cells whose source starts with the rest."""
    prefix = source[:-3] if source.endswith("...") else None
    found = []
    for cell in nb.cells:
        text = cell.source.strip()
        if cell.cell_type == "code" and (
                text == source if prefix is None else text.startswith(prefix)):
            found.extend(cell.outputs)
    return found


def _results(nb, source: str) -> list[str]:
    """The text of the value each matching cell displayed (its last expression)."""
    return [o["data"]["text/plain"] for o in _outputs(nb, source)
            if o.get("output_type") == "execute_result"]


def _plain(outputs: list[dict]) -> str:
    parts = []
    for out in outputs:
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        else:
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.timeout(110)
def test_notebook_runs_end_to_end(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=60,  # per cell
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=_environment())  # raises CellExecutionError on any error

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code_cells), "a code cell did not run"
    assert "SHMDASK_TUTORIAL_SCALE = 0.01" in _plain(code_cells[0].outputs)

    # the results of the tutorial's computations
    sequential, lazy = _results(nb, "%%time\nx = inc(1)\ny = dec(2)\nz = add(x, y)\nz")
    assert sequential == "3" and lazy.startswith("Delayed(")
    assert _results(nb, "%%time\nz.compute()") == ["3"]
    assert _results(nb, TIMED_STREAM + "result = z.compute()\nresult") == ["3"]
    assert _results(nb, TIMED_STREAM + "zs...") == [str(TOTAL)]
    assert _results(nb, TIMED_STREAM + "result = shmdask...") == [f"([{TOTAL}],)"]
    (array_result,) = _results(nb, TIMED_STREAM + "result = z.compute()\nresult.shape...")
    assert array_result.startswith("((100,),")
    # E[arcsin(u)] + E[arccos(v)] = pi/2 for uniform u, v: each row sums to ~pi * 1e5
    values = [float(v) for v in re.findall(r"\d+\.\d+", array_result)]
    assert len(values) == 5 and all(abs(v / 314_159.27 - 1) < 0.01 for v in values), values

    # pictures: two graph drawings, and a task stream after every cluster computation
    graphs = _outputs(nb, "z.visualize(rankdir='LR')") + _outputs(nb, "shmdask.visualize(*L)")
    assert [("image/png" in o.get("data", {})) for o in graphs] == [True, True]
    streams = _outputs(nb, "ts.plot()")
    assert len(streams) == 6
    assert all("image/png" in o.get("data", {}) for o in streams)

    # the cluster description, the dashboard's link, and the array's HTML table
    assert "'workers':" in _plain(_outputs(nb, "client.scheduler_info()"))
    links = _results(nb, "client.dashboard_link")
    assert len(links) == 2 and all(re.fullmatch(r"'http://127\.0\.0\.1:\d+/status'", link)
                                   for link in links), links
    starts = "cluster = LocalCluster()\nclient = Client(cluster)\nclient"
    clients = [o for source in ("from shmdask.distributed import Client, LocalCluster\n\n",
                                "client.close()\ncluster.close()\n\n")
               for o in _outputs(nb, source + starts) if o.get("output_type") == "execute_result"]
    assert len(clients) == 2 and all("Dashboard: <a href=" in o["data"]["text/html"]
                                     for o in clients)
    (x_out,) = _outputs(nb, "x")
    html = x_out["data"]["text/html"]
    assert "<table" in html and "(100, 20000, 10)" in html

    # chunk sizes: three runs and numpy, each with a measured time
    table = _plain(_outputs(nb, "for label, seconds in timings.items():..."))
    for label in ("100 chunks of 1,000", "10 chunks of 10,000", "1 chunks of 100,000",
                  "numpy, in this process"):
        assert re.search(re.escape(label) + r": +[0-9.]+ s", table), table


@pytest.mark.slow
@pytest.mark.timeout(110)
def _run_script(command: list, out_dir) -> subprocess.CompletedProcess:
    """Run the tutorial script (plainly or under ``shmdask run``) into ``out_dir``."""
    proc = subprocess.run(
        [*command, "--out", str(out_dir)],
        env=_environment(),
        cwd=out_dir.parent,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_script_runs_end_to_end(tmp_path):
    out_dir = tmp_path / "pictures"
    proc = _run_script([sys.executable, str(SCRIPT)], out_dir)
    out = proc.stdout
    assert "SHMDASK_TUTORIAL_SCALE=0.01" in out
    assert "started a LocalCluster" in out
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/status", out), out
    assert f"total = {TOTAL}" in out
    assert f"tree sum = [{TOTAL}]" in out
    assert "z: shape (100,)" in out
    assert "tutorial done in" in out
    pictures = sorted(p.name for p in out_dir.iterdir())
    assert pictures == sorted([
        "graph-inc-dec-add.png", "graph-tree.png",
        "task-stream-inc-dec-add.png", "task-stream-for-loop.png", "task-stream-tree.png",
        "task-stream-array.png", "task-stream-chunks-1000.png",
        "task-stream-chunks-10000.png", "task-stream-chunks-100000.png",
    ])
    assert all((out_dir / name).stat().st_size > 1000 for name in pictures)


def test_scale_is_read_and_checked(monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import distributed_tutorial as tutorial
    finally:
        sys.path.remove(str(SCRIPT.parent))
    monkeypatch.delenv("SHMDASK_TUTORIAL_SCALE", raising=False)
    assert tutorial.read_scale() == tutorial.DEFAULT_SCALE
    monkeypatch.setenv("SHMDASK_TUTORIAL_SCALE", "1")
    assert tutorial.read_scale() == 1.0
    for bad in ("0", "-1", "nan", "big"):
        monkeypatch.setenv("SHMDASK_TUTORIAL_SCALE", bad)
        with pytest.raises(ValueError, match="SHMDASK_TUTORIAL_SCALE"):
            tutorial.read_scale()
    # full size is the tutorial's; small sizes keep chunks that divide the shape
    assert tutorial.array_shape(1) == ((10_000, 20_000, 10), (1_000, 1_000, 5))
    assert tutorial.array_shape(0.01) == ((100, 20_000, 10), (100, 1_000, 5))
    assert tutorial.chunk_sizes(1) == (10_000_000, [1_000, 1_000_000, 10_000_000])
    assert tutorial.chunk_sizes(0.01) == (100_000, [1_000, 10_000, 100_000])


@pytest.mark.slow
@pytest.mark.timeout(110)
def test_script_under_shmdask_run_uses_its_client(tmp_path):
    pytest.importorskip("shmdask.cli")
    out_dir = tmp_path / "pictures"
    proc = _run_script([sys.executable, "-m", "shmdask", "run", "--no-report", str(SCRIPT)],
                       out_dir)
    assert "using the default Client that is already open" in proc.stdout
    assert f"tree sum = [{TOTAL}]" in proc.stdout
    assert (out_dir / "task-stream-array.png").exists()
