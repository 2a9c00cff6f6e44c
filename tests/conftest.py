"""Shared fixtures: configuration reset, and no shared memory left behind."""

from __future__ import annotations

import os

import pytest

import shmdask


@pytest.fixture(autouse=True)
def _fresh_config():
    yield
    shmdask.config.refresh()


def _shm_segments() -> list[str]:
    """Segments of clusters made by this process (cluster ids start with our pid,
    so other test runs on the same machine do not count)."""
    mine = f"shmdask-{os.getpid()}p"
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(mine))
    except FileNotFoundError:  # not Linux
        return []


@pytest.fixture(autouse=True, scope="module")
def _no_shared_memory_left():
    """After every test module, /dev/shm holds no shmdask segment."""
    before = set(_shm_segments())
    yield
    import gc
    import time

    gc.collect()
    deadline = time.time() + 5
    while (left := set(_shm_segments()) - before) and time.time() < deadline:
        time.sleep(0.05)
    assert not left, f"shared-memory segments left behind: {sorted(left)[:10]}"


def run_in_kernel(code: str) -> list:
    """Run ``code`` as one cell in a real Jupyter kernel that imports this
    checkout's shmdask; returns the cell's outputs."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import sys; sys.path.insert(0, {root!r})\n{code}")]
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    return nb.cells[0].outputs


@pytest.fixture(scope="module")
def process_client():
    """One LocalCluster client per test module, closed (shared memory freed) at its end."""
    from shmdask.client import Client

    client = Client(n_workers=2, set_as_default=False)
    yield client
    client.close()


@pytest.fixture(params=["sync", "threads", "processes"])
def any_scheduler(request):
    """Each scheduler a collection can run on: a name, or a LocalCluster client."""
    if request.param == "processes":
        return request.getfixturevalue("process_client")
    return request.param


def wait_for(condition, timeout: float = 20, what: str = "condition") -> None:
    """Poll ``condition()`` until it is true; TimeoutError naming ``what`` after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def mapped_file(address: int) -> str | None:
    """The file mapped at ``address`` in this process, per /proc/self/maps (None
    if anonymous memory): where a value's data really lives (run it in a task
    to ask a worker)."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            if lo <= address < hi:
                return parts[5] if len(parts) > 5 else None
    return None
