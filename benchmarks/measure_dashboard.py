"""What watching the live dashboard costs: the 10,000-chunk random sum on
LocalCluster(2), with the dashboard off vs. on and polled like the page polls it.

    python benchmarks/measure_dashboard.py                  # HTTP poller, 9 runs each
    python benchmarks/measure_dashboard.py --browser        # headless Chromium instead
    python benchmarks/measure_dashboard.py --chunks 200 --browser --runs 1
                                                            # 50,000 tasks: updates/s

One warm cluster serves every run; for the runs "on" its dashboard is started
(on a free port) and watched, for the runs "off" it is closed, so both settings
run on the same worker processes.  Runs alternate between the two settings so
that noise on this shared machine hits both alike.  The table gives medians,
the ratio on/off (of the medians, and the median of each adjacent pair's), how
many updates per second the watcher got while the timed compute ran, and the
CPU time the dashboard's own threads used in the scheduler's process during it
(as a share of the compute's wall time: a measure that machine load does not
blur).

The HTTP poller is a separate process (as a browser is) that requests what the
page requests (``/api/update``), on one kept-alive connection, every 0.4 s.  ``--browser`` opens
the page itself in headless Chromium (needs chromium, chromium-driver and
selenium); its drawing then competes for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

POLLER = r"""
import http.client, json, sys, time
host, port = sys.argv[1], int(sys.argv[2])
conn = http.client.HTTPConnection(host, port, timeout=30)
def get(path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, (path, r.status, body[:200])
    return json.loads(body)
cursor = memory = None
polls = 0
while True:  # what the page asks for, as often
    t0 = time.monotonic()
    answer = get("/api/update?window=30" + ("" if cursor is None else f"&since={cursor}")
                 + ("" if memory is None else f"&memory_since={memory}")
                 + ("&graph=1" if polls % 2 == 0 else "") + ("&info=1" if polls % 10 == 0 else ""))
    cursor = answer["task_stream"]["cursor"]
    memory = answer["memory"]["cursor"]
    polls += 1
    print(f"{time.time():.3f}", flush=True)
    time.sleep(max(0.0, 0.4 - (time.monotonic() - t0)))
"""


def dashboard_cpu_seconds() -> float:
    """CPU time used so far by this process's dashboard threads (collector, server,
    connections): what the dashboard takes from the scheduler's process, however
    busy the machine is."""
    import threading

    import psutil

    ours = {t.native_id for t in threading.enumerate()
            if t.name.startswith("shmdask-dashboard")}
    return sum(t.user_time + t.system_time for t in psutil.Process().threads()
               if t.id in ours)


def random_sum(chunks: int) -> float:
    import shmdask.array as da

    start = time.perf_counter()
    da.random.random(10_000_000, chunks=chunks).sum().compute()
    return time.perf_counter() - start


class Poller:
    def __init__(self, link: str):
        host, port = link.split("//")[1].split("/")[0].rsplit(":", 1)
        self.proc = subprocess.Popen([sys.executable, "-c", POLLER, host, port],
                                     stdout=subprocess.PIPE, text=True)
        self.stamps: list[float] = []
        import threading

        def read() -> None:
            for line in self.proc.stdout:
                self.stamps.append(float(line))

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        while not self.stamps:  # it answered once: the collector runs
            time.sleep(0.05)

    def updates_between(self, t0: float, t1: float) -> int:
        return sum(t0 <= s <= t1 for s in self.stamps)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Browser:
    def __init__(self, link: str):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--window-size=1400,1200"):
            options.add_argument(flag)
        self.profile = tempfile.mkdtemp(prefix="shmdask-bench-chromium-")
        options.add_argument(f"--user-data-dir={self.profile}")
        options.binary_location = "/usr/bin/chromium"
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"),
                                       options=options)
        self.driver.get(link)
        while not self.counts()[0]:
            time.sleep(0.05)

    def counts(self) -> tuple[int, int]:
        s = self.driver.execute_script(
            "var s = window.shmdaskDashboard; return s ? [s.updates, s.frames] : [0, 0];")
        return int(s[0]), int(s[1])

    def close(self) -> None:
        import shutil

        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)


def timed_run(cluster, on: bool, browser: bool, chunks: int) -> dict:
    """One timed compute on ``cluster``, its dashboard started and watched (``on``) or
    closed; the dashboard is started afresh each time, as a new cluster would."""
    from shmdask.diagnostics.dashboard import start_dashboard

    runtime = cluster._runtime
    watcher = None
    if on:
        runtime.dashboard = start_dashboard(cluster, ":0")
        link = cluster.dashboard_link
        watcher = Browser(link) if browser else Poller(link)
    try:
        before = watcher.counts() if browser and watcher else None
        cpu0 = dashboard_cpu_seconds()
        t0 = time.time()
        seconds = random_sum(chunks)
        t1 = time.time()
        out = {"seconds": seconds}
        if on:
            out["dashboard_cpu"] = dashboard_cpu_seconds() - cpu0
        if browser and watcher:
            after = watcher.counts()
            out["updates_per_s"] = (after[0] - before[0]) / (t1 - t0)
            out["frames_per_s"] = (after[1] - before[1]) / (t1 - t0)
        elif watcher:
            time.sleep(0.5)  # the poll that was in flight at the end
            out["updates_per_s"] = watcher.updates_between(t0, t1) / (t1 - t0)
        return out
    finally:
        if watcher is not None:
            watcher.close()
        if runtime.dashboard is not None:
            runtime.dashboard.close()
            runtime.dashboard = None


def main(argv: list[str] | None = None) -> None:
    import shmdask
    from benchmarks.run import paired_ratio
    from shmdask.distributed import Client, LocalCluster

    shmdask.config.set(progress=False)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--chunks", type=int, default=1000,
                        help="chunk size of the 10,000,000-element array (1000: 10,000 chunks)")
    parser.add_argument("--browser", action="store_true",
                        help="watch with headless Chromium instead of an HTTP poller")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args(argv)
    results: dict[bool, list[dict]] = {False: [], True: []}
    with LocalCluster(n_workers=2, dashboard_address=None) as cluster, Client(cluster):
        random_sum(args.chunks)  # warm: imports, mappings
        for i in range(args.runs):
            for on in (False, True) if i % 2 == 0 else (True, False):
                results[on].append(timed_run(cluster, on, args.browser, args.chunks))
                print(f"run {i + 1}/{args.runs} dashboard {'on ' if on else 'off'}: "
                      f"{results[on][-1]}", file=sys.stderr, flush=True)
    off = statistics.median(r["seconds"] for r in results[False])
    on = statistics.median(r["seconds"] for r in results[True])
    paired = paired_ratio([r["seconds"] for r in results[True]],
                          [r["seconds"] for r in results[False]])
    updates = statistics.median(r["updates_per_s"] for r in results[True])
    share = statistics.median(r["dashboard_cpu"] / r["seconds"] for r in results[True])
    watcher = "headless Chromium" if args.browser else "HTTP poller"
    n_chunks = 10_000_000 // args.chunks
    print(f"random sum of {n_chunks:,} chunks on one LocalCluster(2), {args.runs} runs each, "
          f"alternating")
    print("| dashboard | median seconds | ratio of medians | median ratio of pairs "
          "| updates/s seen | dashboard threads' CPU |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| off | {off:.3f} | 1.000 | 1.000 | - | - |")
    print(f"| on, {watcher} polling | {on:.3f} | {on / off:.3f} | {paired:.3f} | "
          f"{updates:.1f} | {share:.1%} of one core |")
    if args.browser:
        frames = statistics.median(r["frames_per_s"] for r in results[True])
        print(f"task-stream frames drawn per second: {frames:.1f}")
    if args.json:
        print(json.dumps({"off": results[False], "on": results[True]}))


if __name__ == "__main__":
    main()
