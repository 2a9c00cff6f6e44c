"""The ``shmdask`` command line, run as a user runs it: in subprocesses.

Every subprocess call has a timeout.  Runs use one worker and no picture
unless the test is about them, to keep the module fast.  Leaks are checked
precisely: every process a test starts carries a marker in its environment
(workers and janitors inherit it), and a run's script prints its cluster id so
that its shared-memory segments can be looked for by name.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import psutil
import pytest

from shmdask import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 60  # seconds for any one subprocess call


# ----------------------------------------------------------------------------- helpers


def _env(marker: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [env.get("PYTHONPATH")])])
    env["SHMDASK_TEST_MARKER"] = marker
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("SHMDASK_AUTH_KEY", None)
    return env


def _default_sigint() -> None:
    # A child of a background job inherits SIGINT ignored; a user's terminal does not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def marked_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("SHMDASK_TEST_MARKER") == marker:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
    return found


def assert_no_processes_left(marker: str, grace: float = 10.0) -> None:
    deadline = time.monotonic() + grace
    while True:
        left = marked_processes(marker)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left, f"processes left behind: {[p.cmdline() for p in left]}"


def shm_segments() -> set[str]:
    return {os.path.basename(p) for p in glob.glob("/dev/shm/shmdask*")}


def foreign_clusters(marker: str) -> set[str]:
    """Cluster ids of live janitors that some other process (not this test) started."""
    ids = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            cmd = proc.cmdline()
            if len(cmd) >= 2 and cmd[-2].endswith("janitor.py"):
                if proc.environ().get("SHMDASK_TEST_MARKER") != marker:
                    ids.add(cmd[-1])
    return ids


def _owned_by_other_process(segment: str) -> bool:
    """Whether the process that made ``segment`` still runs (a cluster id starts
    with its creator's pid).  The commands a test runs have exited when it checks,
    so a segment with a live creator belongs to some other cluster on the machine."""
    pid = segment.removeprefix("shmdask-").split("p", 1)[0]
    if not pid.isdigit():
        return False
    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def assert_no_new_shm(before: set[str], marker: str) -> None:
    """Segments made since ``before`` are leaks unless another live cluster owns them
    (other test suites may run on this machine at the same time)."""
    deadline = time.monotonic() + 5
    while True:
        others = foreign_clusters(marker)
        new = {s for s in shm_segments() - before
               if not any(s.startswith(f"shmdask-{cid}") for cid in others)
               and not _owned_by_other_process(s)}
        if not new or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not new, f"shared memory left behind: {sorted(new)}"


class Shmdask:
    """Runs ``python -m shmdask`` (or the installed script) with this checkout's code."""

    def __init__(self, tmp_path, command: list[str] | None = None):
        self.marker = uuid.uuid4().hex
        self.env = _env(self.marker)
        self.cwd = str(tmp_path)
        self.command = command or [sys.executable, "-m", "shmdask"]
        self.shm_before = shm_segments()

    def __call__(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run([*self.command, *args], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=timeout,
                              preexec_fn=_default_sigint)

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen([*self.command, *args], cwd=self.cwd, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_default_sigint, **kwargs)

    def assert_clean(self) -> None:
        assert_no_processes_left(self.marker)
        assert_no_new_shm(self.shm_before, self.marker)


@pytest.fixture
def shmdask_cmd(tmp_path):
    runner = Shmdask(tmp_path)
    yield runner
    for proc in marked_processes(runner.marker):  # a failed test must not leak either
        with contextlib.suppress(psutil.Error):
            proc.kill()


def write(tmp_path, name: str, source: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return str(path)


# Prints what a test needs to find the run's cluster afterwards.
CLUSTER_INFO = """
import json as _json, shmdask as _shmdask
_client = _shmdask.config.get("scheduler")
_cluster = _client.cluster
print("CLUSTER " + _json.dumps({
    "id": _cluster.id,
    "pids": [h.pid for h in _cluster.workers.values()] + [_cluster._runtime.janitor.pid],
    "info": _client.scheduler_info()["workers"],
}), flush=True)
"""


def cluster_info(stdout: str) -> dict:
    for line in stdout.splitlines():
        if line.startswith("CLUSTER "):
            return json.loads(line[len("CLUSTER "):])
    raise AssertionError(f"the script did not print its cluster:\n{stdout}")


def assert_cluster_gone(info: dict) -> None:
    assert not glob.glob(f"/dev/shm/shmdask-{info['id']}*")
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) for p in info["pids"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = []
    for pid in info["pids"]:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
    assert not alive, f"cluster processes still running: {alive}"


def script_stderr(stderr: str) -> str:
    """stderr without the run's opening banner (where its dashboard is)."""
    lines = stderr.splitlines(keepends=True)
    while lines and lines[0].startswith("shmdask run: dashboard at "):
        lines.pop(0)
    return "".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- group


def test_version_and_help(shmdask_cmd):
    import shmdask

    out = shmdask_cmd("--version")
    assert out.returncode == 0, out.stderr
    assert shmdask.__version__ in out.stdout
    out = shmdask_cmd("--help")
    assert out.returncode == 0
    for word in ("run", "scheduler", "worker", "Examples:", "shmdask run analysis.py"):
        assert word in out.stdout
    out = shmdask_cmd("run", "--help")
    assert out.returncode == 0
    for word in ("--workers", "--threads-per-worker", "--memory-limit", "--report",
                 "--no-report", "--listen", "Examples:"):
        assert word in out.stdout
    for command in ("scheduler", "worker"):
        out = shmdask_cmd(command, "--help")
        assert out.returncode == 0 and "Examples:" in out.stdout


def test_installed_console_script(tmp_path):
    script = shutil.which("shmdask")
    if script is None:
        pytest.skip("the shmdask console script is not installed (pip install -e .)")
    runner = Shmdask(tmp_path, command=[script])
    out = runner("--version")
    assert out.returncode == 0 and "shmdask" in out.stdout
    path = write(tmp_path, "where.py", """
        import shmdask
        print("FROM", shmdask.__file__)
        print("SUM", shmdask.delayed(sum)([1, 2, 3]).compute())
    """)
    out = runner("run", "-w", "1", "--no-report", path)
    assert out.returncode == 0, out.stderr
    assert f"FROM {os.path.join(REPO, 'shmdask', '__init__.py')}" in out.stdout
    assert "SUM 6" in out.stdout
    assert "1 task" in out.stderr
    runner.assert_clean()


# ----------------------------------------------------------------------------- run


def test_run_is_like_python_and_uses_the_cluster(shmdask_cmd, tmp_path):
    write(tmp_path, "proj/helper.py", """
        def double(x):
            return 2 * x
    """)
    write(tmp_path, "proj/main.py", CLUSTER_INFO + """
import sys, json, os
import numpy as np
import shmdask
from helper import double   # found through sys.path[0], in the workers too

print("STATE " + json.dumps({"argv": sys.argv, "file": __file__, "path0": sys.path[0],
                             "name": __name__}))
if __name__ == "__main__":
    parts = [shmdask.delayed(double)(np.full(50_000, i)) for i in range(6)]
    total = shmdask.delayed(sum)(parts)
    print("TOTAL", float(total.compute().sum()))
""")
    report = tmp_path / "reports"
    out = shmdask_cmd("run", "--workers", "1", "--threads-per-worker", "2",
                      "--memory-limit", "1GB", "--report", str(report),
                      "proj/main.py", "--flag", "value")
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout.split("STATE ", 1)[1].splitlines()[0])
    assert state["argv"][1:] == ["--flag", "value"]
    assert state["argv"][0].endswith(os.path.join("proj", "main.py"))
    assert state["file"] == str(tmp_path / "proj" / "main.py")
    assert state["path0"] == os.path.realpath(tmp_path / "proj")
    assert state["name"] == "__main__"
    assert f"TOTAL {2.0 * 50_000 * sum(range(6))}" in out.stdout
    info = cluster_info(out.stdout)
    (worker,) = info["info"].values()
    assert worker["nthreads"] == 2 and worker["memory_limit"] == 10**9
    # the summary: wall time, tasks, per-worker utilisation, peak shm, the plot
    err = out.stderr
    assert re.search(r"main\.py finished after \d", err), err
    assert re.search(r"\d+ tasks on 1 worker", err), err
    assert re.search(r"worker-0: \d+ tasks, busy .*utilisation \d+%", err), err
    assert "peak shared memory:" in err
    plots = list(report.glob("run-*.png"))
    assert len(plots) == 1 and plots[0].stat().st_size > 1000
    assert f"task stream: {report / plots[0].name}" in err
    assert_cluster_gone(info)
    shmdask_cmd.assert_clean()


def test_run_default_report_dir_and_no_report(shmdask_cmd, tmp_path):
    path = write(tmp_path, "one.py", """
        import shmdask
        print(shmdask.delayed(max)(3, 4).compute())
    """)
    out = shmdask_cmd("run", "-w", "1", path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"
    plots = list((tmp_path / "shmdask-report").glob("run-*.png"))
    assert len(plots) == 1
    out = shmdask_cmd("run", "-w", "1", "--no-report", path)
    assert out.returncode == 0
    assert "task stream:" not in out.stderr and "1 task on 1 worker" in out.stderr
    assert len(list((tmp_path / "shmdask-report").glob("run-*.png"))) == 1
    shmdask_cmd.assert_clean()


def test_run_of_a_script_whose_task_calls_sys_exit(shmdask_cmd, tmp_path):
    """The task fails with an error naming its key; the script does not end
    silently with the task's exit status."""
    path = write(tmp_path, "leaves.py", """
        import sys
        import shmdask
        print("before", flush=True)
        shmdask.delayed(sys.exit)(3, dask_key_name="leaving-task").compute()
        print("after")
    """)
    out = shmdask_cmd("run", "-w", "1", "--no-report", path)
    assert out.returncode == 1, out.stderr
    assert out.stdout == "before\n"
    assert "TaskExit: task 'leaving-task' raised SystemExit(3)" in out.stderr
    assert "leaves.py failed (TaskExit)" in out.stderr
    assert "1 task on 1 worker" in out.stderr and "no tasks were run" not in out.stderr
    shmdask_cmd.assert_clean()


def test_run_without_tasks(shmdask_cmd, tmp_path):
    path = write(tmp_path, "idle.py", 'print("idle")\n')
    out = shmdask_cmd("run", "-w", "1", "--report", "rep", path)
    assert out.returncode == 0
    assert out.stdout == "idle\n"
    assert "no tasks were run" in out.stderr
    assert not list((tmp_path / "rep").glob("*.png"))
    shmdask_cmd.assert_clean()


def test_run_exit_status_of_sys_exit(shmdask_cmd, tmp_path):
    path = write(tmp_path, "ex.py", CLUSTER_INFO + """
import sys, shmdask
shmdask.delayed(len)([1]).compute()
sys.exit(int(sys.argv[1]) if sys.argv[1:] else "bad input, giving up")
""")
    out = shmdask_cmd("run", "-w", "1", "--no-report", path, "3")
    assert out.returncode == 3
    assert "Traceback" not in out.stderr
    assert "exited with status 3" in out.stderr and "1 task" in out.stderr
    assert_cluster_gone(cluster_info(out.stdout))
    out = shmdask_cmd("run", "-w", "1", "--no-report", path)
    assert out.returncode == 1
    assert script_stderr(out.stderr).startswith("bad input, giving up\n")
    shmdask_cmd.assert_clean()


def test_run_traceback_is_pythons(shmdask_cmd, tmp_path):
    path = write(tmp_path, "fails.py", """
        import shmdask

        def check(x):
            raise ValueError(f"bad value {x}")

        shmdask.delayed(abs)(-1).compute()
        check(41)
    """)
    out = shmdask_cmd("run", "-w", "1", "--no-report", path)
    assert out.returncode == 1
    plain = subprocess.run([sys.executable, path], capture_output=True, text=True,
                           env=shmdask_cmd.env, cwd=shmdask_cmd.cwd, timeout=TIMEOUT)
    assert plain.returncode == 1
    assert script_stderr(out.stderr).startswith(plain.stderr), (out.stderr, plain.stderr)
    assert "runpy" not in out.stderr and "cli.py" not in out.stderr
    assert "fails.py failed (ValueError)" in out.stderr
    shmdask_cmd.assert_clean()


def test_run_script_with_its_own_client(shmdask_cmd, tmp_path):
    path = write(tmp_path, "own.py", """
        import shmdask
        from shmdask.distributed import Client, LocalCluster

        ours = shmdask.config.get("scheduler")
        inc = shmdask.delayed(lambda x: x + 1)
        with LocalCluster(n_workers=1) as cluster, Client(cluster) as client:
            assert shmdask.config.get("scheduler") is client
            print("MINE", inc(1).compute())
        assert shmdask.config.get("scheduler") is ours
        print("OURS", inc(2).compute())
    """)
    out = shmdask_cmd("run", "-w", "1", "--no-report", path)
    assert out.returncode == 0, out.stderr
    assert "MINE 2" in out.stdout and "OURS 3" in out.stdout
    assert "1 task on 1 worker" in out.stderr  # the script's own cluster ran the other
    shmdask_cmd.assert_clean()


LOOP = CLUSTER_INFO + """
import time
import numpy as np
import shmdask

@shmdask.delayed
def chunk(i):
    time.sleep(0.005)
    return np.full(20_000, i)   # big enough to live in shared memory

rounds = 0
while True:
    shmdask.compute(*[chunk(i) for i in range(6)])
    rounds += 1
    if rounds == 3:
        print("LOOPING", flush=True)
"""


@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated")])
def test_run_interrupted(shmdask_cmd, tmp_path, sig, status, word):
    path = write(tmp_path, "loop.py", LOOP)
    proc = shmdask_cmd.popen("run", "--workers", "2", "--report", "rep", path)
    try:
        stdout = _read_until(proc, "LOOPING", timeout=TIMEOUT)
        info = cluster_info(stdout)
        assert len(info["pids"]) == 3
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == status, err
    assert f"loop.py was {word}" in err
    assert re.search(r"\d+ tasks on 2 workers", err), err
    assert "task stream:" in err and list((tmp_path / "rep").glob("run-*.png"))
    assert "dashboard of the run:" in err and list((tmp_path / "rep").glob("run-*.html"))
    if sig == signal.SIGINT:
        assert script_stderr(err).startswith("Traceback") and "KeyboardInterrupt" in err
        assert "cli.py" not in err
    assert_cluster_gone(info)
    shmdask_cmd.assert_clean()


def _read_until(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    """Read stdout lines until one contains ``marker`` (a thread keeps it bounded)."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        proc.kill()
        raise AssertionError(f"no {marker!r} within {timeout} s: {''.join(lines)}"
                             f"{proc.stderr.read()}")
    return "".join(lines)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args, status, words", [
    (["run", "missing.py"], 2, ["missing.py", "No such file"]),
    (["run", "syntax.py"], 1, ["syntax error", "syntax.py, line 2"]),
    (["run", "--bogus", "ok.py"], 2, ["--bogus"]),
    (["frobnicate"], 2, ["frobnicate"]),
    (["run"], 2, ["SCRIPT"]),
    (["run", "--workers", "0", "ok.py"], 2, ["--workers"]),
    (["run", "--workers", "two", "ok.py"], 2, ["--workers"]),
    (["run", "--memory-limit", "2XB", "ok.py"], 2, ["--memory-limit", "2XB"]),
    (["run", "--listen", "nowhere", "ok.py"], 2, ["--listen", "nowhere"]),
    (["run", "--report", "ok.py/sub", "ok.py"], 2, ["report directory"]),
    (["run", "."], 2, ["directory"]),
    (["worker", "not-an-address"], 2, ["not-an-address"]),
    (["worker", "127.0.0.1:99999"], 2, ["99999"]),
    (["worker"], 2, ["ADDRESS"]),
    (["worker", "no-such-host.invalid:8786"], 1, ["no-such-host.invalid"]),
    (["worker", "127.0.0.1:8786", "--nthreads", "0"], 2, ["--nthreads"]),
    (["scheduler", "--port", "-5"], 2, ["--port"]),
    (["run", "--dashboard-address", "localhost", "ok.py"], 2, ["--dashboard-address", "port"]),
    (["scheduler", "--dashboard-address", ":99999"], 2, ["--dashboard-address", "65535"]),
])
def test_bad_input_gets_one_line(shmdask_cmd, tmp_path, args, status, words):
    write(tmp_path, "ok.py", 'print("should not run")\n')
    write(tmp_path, "syntax.py", "x = 1\ndef f(:\n")
    out = shmdask_cmd(*args)
    assert out.returncode == status, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("shmdask: error: ")
    for word in words:
        assert word in lines[0]
    assert "should not run" not in out.stdout
    shmdask_cmd.assert_clean()


# ----------------------------------------------------------------------------- TCP


def _start_scheduler(runner: Shmdask, port: int, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = runner.popen("scheduler", "--port", str(port), *extra)
    banner = _read_until(proc, "Scheduler started at", timeout=TIMEOUT)
    address = banner.split("Scheduler started at", 1)[1].split()[0]
    return proc, address


def _stop(proc: subprocess.Popen, sig: int) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode


def _kill_left(procs: list[subprocess.Popen]) -> None:
    """Whatever a failed test left running."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_seed_sequence_scheduler_three_workers_client(shmdask_cmd):
    pytest.importorskip("shmdask.cluster.tcp_server")
    pytest.importorskip("shmdask.cluster.remote_worker")
    from shmdask.distributed import Client

    port = free_port()
    scheduler, address = _start_scheduler(shmdask_cmd, port)
    workers = []
    try:
        assert address.endswith(f"127.0.0.1:{port}")
        workers = [shmdask_cmd.popen("worker", f"127.0.0.1:{port}") for _ in range(3)]
        client = Client(f"127.0.0.1:{port}", set_as_default=False)
        try:
            deadline = time.monotonic() + 30
            while len(client.scheduler_info()["workers"]) < 3:
                assert time.monotonic() < deadline, client.scheduler_info()
                assert all(w.poll() is None for w in workers)
                time.sleep(0.1)
            assert len(client.scheduler_info()["workers"]) == 3
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        finally:
            client.close()
        # workers leave on SIGTERM and on Ctrl-C, the scheduler on Ctrl-C
        assert _stop(workers[0], signal.SIGTERM) == 0
        assert _stop(workers[1], signal.SIGINT) in (0, 130)
        assert _stop(workers[2], signal.SIGTERM) == 0
        assert _stop(scheduler, signal.SIGINT) in (0, 130)
    finally:
        _kill_left([scheduler, *workers])
    shmdask_cmd.assert_clean()


def test_scheduler_and_workers_with_options(shmdask_cmd, monkeypatch):
    pytest.importorskip("shmdask.cluster.tcp_server")
    pytest.importorskip("shmdask.cluster.remote_worker")
    from shmdask.distributed import Client

    key = uuid.uuid4().hex
    scheduler, address = _start_scheduler(shmdask_cmd, 0, "--host", "127.0.0.1",
                                          "--workers", "1", "--auth-key", key)
    procs = [scheduler]
    try:
        port = int(address.rsplit(":", 1)[1])
        # a wrong key is refused at once: one line, status 2
        wrong = shmdask_cmd("worker", f"127.0.0.1:{port}", "--auth-key", "not-the-key")
        assert wrong.returncode == 2
        assert len(wrong.stderr.splitlines()) == 1, wrong.stderr
        procs.append(shmdask_cmd.popen("worker", address, "--nworkers", "2", "--name", "edge",
                                       "--nthreads", "2", "--auth-key", key))
        monkeypatch.setenv("SHMDASK_AUTH_KEY", key)
        client = Client(address, set_as_default=False)
        try:
            deadline = time.monotonic() + 30
            while len(client.scheduler_info()["workers"]) < 3:
                assert time.monotonic() < deadline, client.scheduler_info()
                assert procs[1].poll() is None
                time.sleep(0.1)
            workers = client.scheduler_info()["workers"].values()
            remote = sorted((w["name"], w["nthreads"]) for w in workers
                            if w["kind"] == "remote")
            assert remote == [("edge-0", 2), ("edge-1", 2)]
            assert sum(w["kind"] == "local" for w in workers) == 1
        finally:
            client.close()
        assert _stop(procs[1], signal.SIGTERM) == 0
        assert _stop(scheduler, signal.SIGTERM) == 0
    finally:
        _kill_left(procs)
    shmdask_cmd.assert_clean()


def test_scheduler_banner_shows_the_dashboard(shmdask_cmd):
    pytest.importorskip("shmdask.cluster.tcp_server")
    import urllib.request

    proc = shmdask_cmd.popen("scheduler", "--port", "0", "--dashboard-address", ":0")
    try:
        banner = _read_until(proc, "Dashboard at", timeout=TIMEOUT)
        link = re.search(r"Dashboard at (http://127\.0\.0\.1:\d+/status)$", banner, re.M)
        assert link, banner
        with urllib.request.urlopen(link.group(1).replace("/status", "/api/info"),
                                    timeout=30) as r:
            info = json.loads(r.read())
        assert info["workers"] == 0 and info["scheduler"].startswith("tcp://127.0.0.1:")
    finally:
        assert _stop(proc, signal.SIGINT) == 0
    shmdask_cmd.assert_clean()


def test_run_dashboard_and_its_report(shmdask_cmd, tmp_path):
    path = write(tmp_path, "dash.py", """
        import shmdask
        client = shmdask.config.get("scheduler")
        print("LINK", client.dashboard_link)
        print(shmdask.delayed(sum)([shmdask.delayed(abs)(-i) for i in range(20)]).compute())
    """)
    out = shmdask_cmd("run", "-w", "1", "--dashboard-address", ":0", "--report", "rep", path)
    assert out.returncode == 0, out.stderr
    link = out.stdout.split("LINK ", 1)[1].split()[0]
    assert out.stderr.startswith(f"shmdask run: dashboard at {link}\n")
    (picture,) = (tmp_path / "rep").glob("run-*.png")
    page = picture.with_suffix(".html")
    assert f"dashboard of the run: rep/{page.name}" in out.stderr
    html = page.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script id="shmdask-data" type="application/json">(.*?)'
                                r"</script>", html, re.S).group(1))
    assert {g["name"]: g["done"] for g in data["progress"]["groups"]}["abs"] == 20
    assert [w["pid"] for w in data["workers"]["workers"]][0] > 0
    off = shmdask_cmd("run", "-w", "1", "--dashboard-address", "none", "--no-report", path)
    assert off.returncode == 0 and "LINK None" in off.stdout
    assert "dashboard" not in off.stderr
    shmdask_cmd.assert_clean()


def test_scheduler_port_in_use(shmdask_cmd):
    pytest.importorskip("shmdask.cluster.tcp_server")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # with a local worker, so that the failure happens after processes started
        out = shmdask_cmd("scheduler", "--port", str(port), "--workers", "1")
    assert out.returncode not in (0, None)
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and str(port) in lines[0], out.stderr
    shmdask_cmd.assert_clean()


def test_run_listen_port_in_use(shmdask_cmd, tmp_path):
    pytest.importorskip("shmdask.cluster.tcp_server")
    path = write(tmp_path, "ok.py", 'print("should not run")\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = shmdask_cmd("run", "-w", "1", "--listen", f"127.0.0.1:{port}", path)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and str(port) in lines[0] and "in use" in lines[0], out.stderr
    assert "should not run" not in out.stdout
    shmdask_cmd.assert_clean()


def test_worker_unreachable_address(shmdask_cmd):
    pytest.importorskip("shmdask.cluster.remote_worker")
    port = free_port()  # nobody listens there
    out = shmdask_cmd("worker", f"127.0.0.1:{port}", "--reconnect-timeout", "0.5")
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and str(port) in lines[0], out.stderr
    shmdask_cmd.assert_clean()


def test_run_listen_lets_a_remote_worker_join(shmdask_cmd, tmp_path):
    pytest.importorskip("shmdask.cluster.tcp_server")
    pytest.importorskip("shmdask.cluster.remote_worker")
    port = free_port()
    path = write(tmp_path, "joined.py", CLUSTER_INFO + f"""
import os, subprocess, sys, time
import shmdask
client = _shmdask.config.get("scheduler")
worker = subprocess.Popen([sys.executable, "-m", "shmdask", "worker",
                           "127.0.0.1:{port}", "--name", "far-away"])
try:
    deadline = time.monotonic() + 30
    while len(client.scheduler_info()["workers"]) < 2:
        assert time.monotonic() < deadline, "the remote worker did not join"
        time.sleep(0.1)
    print("WORKERS", len(client.scheduler_info()["workers"]), flush=True)
    print("SUM", sum(shmdask.compute(*[shmdask.delayed(abs)(-i) for i in range(50)])))
finally:
    worker.terminate()
    worker.wait(20)
""")
    out = shmdask_cmd("run", "-w", "1", "--no-report", "--listen", f"127.0.0.1:{port}", path)
    assert out.returncode == 0, out.stderr
    assert "WORKERS 2" in out.stdout and f"SUM {sum(range(50))}" in out.stdout
    assert f"127.0.0.1:{port}" in out.stderr
    shmdask_cmd.assert_clean()


# ----------------------------------------------------------------------------- in-process


def test_parse_address():
    assert cli.parse_address("127.0.0.1:8786") == ("tcp", "127.0.0.1", 8786)
    assert cli.parse_address("tcp://example.org:1") == ("tcp", "example.org", 1)
    assert cli.parse_address("tls://[::1]:8786") == ("tls", "::1", 8786)
    with pytest.raises(ValueError, match="unknown scheme"):
        cli.parse_address("http://host:80")
    for bad in ("8786", "host:", ":8786", "host:0", "host:65536", "host:http", "::1:8786"):
        with pytest.raises(ValueError, match="not an address"):
            cli.parse_address(bad)


def test_exit_status():
    assert cli.exit_status(None) == 0
    assert cli.exit_status(0) == 0
    assert cli.exit_status(7) == 7
    assert cli.exit_status(256 + 3) == 3
    assert cli.exit_status(True) == 1


def test_trim_traceback_keeps_script_frames(tmp_path):
    path = write(tmp_path, "s.py", "def f():\n    1 / 0\nf()\n")
    code = cli.load_script(path)
    try:
        exec(code, {"__name__": "__main__"})
    except ZeroDivisionError as exc:
        tb = cli.trim_traceback(exc.__traceback__, code.co_filename)
    frames = []
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    assert frames == [(code.co_filename, "<module>"), (code.co_filename, "f")]


def test_format_summary_and_report_filename(tmp_path):
    outcome = cli.ScriptOutcome(0, "finished")
    report = cli.RunReport("x/job.py", 2.5, outcome, peak_shm=3 * 2**20, plot="r/run.png")
    summary = {"n_tasks": 10, "n_workers": 2, "wall": 2.0, "utilisation": 0.5,
               "n_errors": 0,
               "workers": {"worker-0": {"tasks": 6, "busy": 1.5, "utilisation": 0.75},
                           "worker-1": {"tasks": 4, "busy": 0.5, "utilisation": 0.25,
                                        "remote": True}}}
    lines = cli.format_summary(report, summary)
    assert lines[0] == "shmdask run: job.py finished after 2.50 s"
    assert "10 tasks on 2 workers" in lines[1] and "utilisation 50%" in lines[1]
    assert "worker-0: 6 tasks, busy 1.50 s, utilisation 75%" in lines[2]
    assert "worker-1 (remote)" in lines[3]
    assert lines[4] == "  peak shared memory: 3.00 MiB"
    assert lines[5] == "  task stream: r/run.png"
    empty = cli.format_summary(cli.RunReport("job.py", 0.1, outcome), None)
    assert empty[1] == "  no tasks were run" and len(empty) == 2
    first = cli.report_filename(str(tmp_path), 0.0)
    open(first, "w").close()
    second = cli.report_filename(str(tmp_path), 0.0)
    assert first != second and second.endswith("-1.png")


def test_remote_hint_only_for_hosts_others_can_reach():
    assert cli.remote_hint("tcp://127.0.0.1:8786", "127.0.0.1", None) == []
    assert cli.remote_hint("tcp://localhost:8786", "localhost", None) == []
    (line,) = cli.remote_hint("tcp://0.0.0.0:8786", "0.0.0.0", None)
    assert f"shmdask worker tcp://{socket.gethostname()}:8786 --auth-key KEY" in line
    assert "0.0.0.0_8786.key" in line and "SHMDASK_AUTH_KEY" in line
    (line,) = cli.remote_hint("tcp://10.1.2.3:9000", "10.1.2.3", "s3cret")
    assert "tcp://10.1.2.3:9000 --auth-key KEY" in line and "s3cret" not in line


def test_tls_from_the_command_line(shmdask_cmd, certificate, monkeypatch):
    """A TLS scheduler from options, a worker trusting it through SHMDASK_TLS_CA
    (the issue's case), a client through the same variable."""
    from shmdask.distributed import Client

    cert, key = certificate
    scheduler = shmdask_cmd.popen("scheduler", "--port", "0", "--tls-cert", cert,
                                  "--tls-key", key)
    procs = [scheduler]
    try:
        banner = _read_until(scheduler, "Traffic is", timeout=TIMEOUT)
        address = banner.split("Scheduler started at", 1)[1].split()[0]
        assert address.startswith("tls://127.0.0.1:")
        assert f"shmdask worker {address} --tls-ca {cert}" in banner
        assert "Traffic is encrypted with TLS." in banner
        # No CA for a tls:// address: one line at once, not minutes of retries.
        out = shmdask_cmd("worker", address, "--reconnect-timeout", "30", timeout=20)
        assert out.returncode == 2, out.stderr
        assert len(out.stderr.splitlines()) == 1 and "--tls-ca" in out.stderr
        shmdask_cmd.env["SHMDASK_TLS_CA"] = cert
        procs.append(shmdask_cmd.popen("worker", address, "--reconnect-timeout", "30"))
        monkeypatch.setenv("SHMDASK_TLS_CA", cert)
        with Client(address, set_as_default=False) as client:
            deadline = time.monotonic() + 30
            while not client.scheduler_info()["workers"]:
                assert time.monotonic() < deadline and procs[1].poll() is None
                time.sleep(0.1)
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        assert _stop(procs[1], signal.SIGTERM) == 0
        assert _stop(scheduler, signal.SIGINT) in (0, 130)
    finally:
        _kill_left(procs)
    shmdask_cmd.assert_clean()


def test_banner_says_when_traffic_is_not_encrypted():
    from shmdask.cli.cluster import banner

    everywhere = "\n".join(banner("tcp://0.0.0.0:8786", "0.0.0.0", "/k", None))
    assert "authenticated but NOT encrypted" in everywhere and "--tls-cert" in everywhere
    assert "encrypted" not in "\n".join(banner("tcp://127.0.0.1:8786", "127.0.0.1", "/k",
                                              None))
    tls = "\n".join(banner("tls://0.0.0.0:8786", "0.0.0.0", "/k", "/c.pem"))
    assert "NOT encrypted" not in tls and "encrypted with TLS" in tls
