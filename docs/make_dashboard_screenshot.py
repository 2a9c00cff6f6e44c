"""Redraw docs/dashboard.png: the live dashboard during the tutorial's array step.

    python docs/make_dashboard_screenshot.py [docs/dashboard.png]

Starts a LocalCluster(2), runs the tutorial's 256 inc/dec/add chains (short
sleeps) and then its ``(arcsin(x) + arccos(y)).sum(axis=(1, 2))`` at a tenth of
its size, and photographs the page in headless Chromium when that array
computation is about half done.  Needs chromium, chromium-driver and selenium.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shmdask  # noqa: E402
import shmdask.array as da  # noqa: E402
from shmdask.distributed import Client, LocalCluster  # noqa: E402


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


def browser(width: int = 1400, height: int = 1250):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp()}")
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def main(out: str) -> None:
    shmdask.config.set(progress=False)

    @shmdask.delayed
    def inc(x):
        time.sleep(0.005)
        return x + 1

    @shmdask.delayed
    def dec(x):
        time.sleep(0.005)
        return x - 1

    @shmdask.delayed
    def add(x, y):
        time.sleep(0.005)
        return x + y

    with LocalCluster(n_workers=2, dashboard_address=":0") as cluster, Client(cluster) as client:
        api = cluster.dashboard_link.replace("/status", "/api/")
        driver = browser()
        try:
            driver.get(cluster.dashboard_link)
            zs = [add(inc(i), dec(inc(i))) for i in range(256)]
            shmdask.delayed(sum)(zs).compute()
            shape, chunks = (1_000, 20_000, 10), (1_000, 1_000, 5)
            x = da.random.random(shape, chunks=chunks)
            y = da.random.random(shape, chunks=chunks)
            time.sleep(1.0)  # the page catches up with the loop
            before = get(api + "progress")["totals"]["done"]
            future = client.compute((da.arcsin(x) + da.arccos(y)).sum(axis=(1, 2)))
            while not future.done():  # until about half of the array's tasks are done
                graph = get(api + "graph")
                if graph["n_tasks"] and graph["status"] != "none":
                    done = get(api + "progress")["totals"]["done"] - before
                    if done >= 0.5 * graph["n_tasks"]:
                        break
                time.sleep(0.05)
            time.sleep(0.6)  # the page's next update
            driver.save_screenshot(out)
            future.result()
        finally:
            driver.quit()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                              "dashboard.png"))
