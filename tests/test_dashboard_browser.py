"""The dashboard page in a real browser: headless Chromium, driven by selenium.

In: a LocalCluster with its dashboard on a free port, a computation held open
by a gate file (so "while it runs" does not depend on timing), and a saved
report.  Out: pass when the page loads without console errors, its task-stream
canvas gains bars of the groups' colours while the computation runs, its
progress numbers rise to the total, its workers table lists every worker by
pid -- and when a saved report shows the same from a file, fetching nothing.

Needs Debian's ``chromium`` and ``chromium-driver`` (CI installs them); skipped
only when they are missing.  The driver is given explicitly so that selenium
never looks for one on the network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest
from conftest import wait_for

import shmdask

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1200"]

webdriver = pytest.importorskip("selenium.webdriver")
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="shmdask-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


PAGE_STATE = """
var S = window.shmdaskDashboard;
if (!S) { return null; }
var canvas = document.getElementById("task-stream");
var data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
var wanted = {};
Object.keys(S.stream.colors).forEach(function (g) {
  var h = S.stream.colors[g];
  wanted[[parseInt(h.substr(1, 2), 16), parseInt(h.substr(3, 2), 16),
          parseInt(h.substr(5, 2), 16)].join(",")] = true;
});
var coloured = 0;
for (var i = 0; i < data.length; i += 4) {
  if (wanted[data[i] + "," + data[i + 1] + "," + data[i + 2]]) { coloured++; }
}
var groups = {};
document.querySelectorAll("#progress tbody tr").forEach(function (tr) {
  groups[tr.dataset.group] = [Number(tr.dataset.done), Number(tr.dataset.total)];
});
var pids = [];
document.querySelectorAll("#workers tbody tr").forEach(function (tr) {
  pids.push(tr.dataset.pid === "" ? null : Number(tr.dataset.pid));
});
return {updates: S.updates, bars: S.barsDrawn, coloured: coloured, groups: groups,
        pids: pids, failures: S.failures, error: S.lastError,
        resources: performance.getEntriesByType("resource").map(function (e) { return e.name; })};
"""


def page_state(driver) -> dict:
    return driver.execute_script(PAGE_STATE)


def slow_work(i: int) -> int:
    time.sleep(0.002)
    return i


def gate(values: list, path: str) -> int:
    """Finishes when ``path`` exists: keeps a computation running until the test says."""
    while not os.path.exists(path):
        time.sleep(0.01)
    return sum(values)


def test_live_page_follows_a_computation(browser, tmp_path):
    from shmdask.distributed import Client, LocalCluster

    n = 300
    gate_file = str(tmp_path / "open")
    with LocalCluster(n_workers=2, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        browser.get(cluster.dashboard_link)
        wait_for(lambda: (page_state(browser) or {}).get("updates", 0) >= 1, 60,
                 "the page's first update")
        assert console_errors(browser) == []
        pids = sorted(h.pid for h in cluster.workers.values())
        wait_for(lambda: sorted(page_state(browser)["pids"]) == pids, 60,
                 "the workers table to list every worker")

        work = [shmdask.delayed(slow_work, pure=False)(i) for i in range(n)]
        future = client.compute(shmdask.delayed(gate)(work, gate_file))
        seen = []

        def work_done_with_bars() -> bool:
            state = page_state(browser)
            seen.append(state["groups"].get("slow_work", [0, 0])[0])
            return state["groups"].get("slow_work") == [n, n] and state["coloured"] > 0

        wait_for(work_done_with_bars, 90, "bars and the work's progress while the gate is shut")
        state = page_state(browser)
        assert not future.done()  # the gate holds the computation open
        assert state["bars"] > 0 and state["coloured"] > 100
        assert seen == sorted(seen) and seen[-1] == n  # the numbers only rise
        # the gate's own group (fused into the final task) is not done
        assert any(d < t for d, t in state["groups"].values()), state["groups"]

        open(gate_file, "w").close()
        assert future.result(timeout=60) == sum(range(n))
        wait_for(lambda: all(d == t for d, t in page_state(browser)["groups"].values()), 60,
                 "every group's progress to reach its total")
        state = page_state(browser)
        assert state["groups"]["slow_work"] == [n, n]
        assert sum(t for _, t in state["groups"].values()) >= n + 1
        assert sorted(state["pids"]) == pids
        assert state["failures"] == 0 and state["error"] is None
        assert console_errors(browser) == []
        browser.get("about:blank")  # stop polling before the cluster goes


def test_saved_report_opens_offline(browser, tmp_path):
    from shmdask.distributed import Client, LocalCluster, performance_report

    path = tmp_path / "report.html"
    n = 120
    with LocalCluster(n_workers=2, dashboard_address=None) as cluster, Client(cluster):
        with performance_report(filename=str(path)):
            total = shmdask.delayed(sum)([shmdask.delayed(slow_work)(i) for i in range(n)])
            assert total.compute() == sum(range(n))
        pids = sorted(h.pid for h in cluster.workers.values())
    # the cluster is gone: nothing could answer a request now
    browser.get(path.as_uri())
    wait_for(lambda: (page_state(browser) or {}).get("updates", 0) >= 1, 60, "the report")
    state = page_state(browser)
    assert state["resources"] == []  # it fetched nothing
    assert state["groups"]["slow_work"] == [n, n]
    assert all(d == t for d, t in state["groups"].values())
    assert state["bars"] > 0 and state["coloured"] > 100
    assert sorted(state["pids"]) == pids
    assert console_errors(browser) == []
    header = browser.find_element("id", "connection").text
    assert header == "saved report"
