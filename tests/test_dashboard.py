"""The live dashboard without a browser: its accounting, its HTTP server and API,
/metrics, the saved report, and how clusters and clients show where it is.

The page itself, in headless Chromium, is tested in test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import wait_for

import shmdask
import shmdask.distributed
from shmdask.diagnostics.dashboard import (
    DashboardPortWarning,
    parse_dashboard_address,
    performance_report,
    report_data,
    write_report,
)
from shmdask.diagnostics.dashboard.metrics import prometheus_text
from shmdask.diagnostics.dashboard.model import (
    MAX_GRAPH_TASKS,
    GraphView,
    GroupProgress,
    MemorySeries,
    TaskWindow,
    worker_rows,
)
from shmdask.diagnostics.palette import group_colors
from shmdask.diagnostics.summary import summarize


def record(key, group, lane="worker-0/0", start=0.0, stop=0.1, **extra):
    return {"key": key, "group": group, "worker": lane.split("/")[0], "lane": lane,
            "start": start, "stop": stop, "nbytes": 0, "where": "inline",
            "kind": extra.pop("kind", "compute"), "remote": False, **extra}


# ----------------------------------------------------------------------------- addresses


@pytest.mark.parametrize("address, expected", [
    (":8787", ("127.0.0.1", 8787)),
    ("8787", ("127.0.0.1", 8787)),
    (8787, ("127.0.0.1", 8787)),
    (":0", ("127.0.0.1", 0)),
    ("0.0.0.0:9000", ("0.0.0.0", 9000)),
    ("localhost:9000", ("localhost", 9000)),
    ("[::1]:9000", ("::1", 9000)),
    ("http://127.0.0.1:9000/", ("127.0.0.1", 9000)),
    (None, None),
    (False, None),
])
def test_parse_dashboard_address(address, expected):
    assert parse_dashboard_address(address) == expected


@pytest.mark.parametrize("address, error, words", [
    ("localhost", ValueError, "no port"),
    (":70000", ValueError, "0 to 65535"),
    (":http", ValueError, "port"),
    ("::1:8787", ValueError, "brackets"),
    (3.5, TypeError, "float"),
])
def test_bad_dashboard_address_is_named(address, error, words):
    with pytest.raises(error, match=words):
        parse_dashboard_address(address)


# ----------------------------------------------------------------------------- model


def test_task_stream_read_gives_records_and_the_next_position():
    from shmdask.scheduler.records import TaskStream

    stream = TaskStream(max_records=8, max_samples=4)
    stream.add([record(f"k{i}", "inc") for i in range(5)])
    got, nxt = stream.read(0)
    assert [r["key"] for r in got] == [f"k{i}" for i in range(5)] and nxt == 5
    stream.add([record(f"k{i}", "inc") for i in range(5, 12)])  # the oldest are dropped
    got, nxt = stream.read(nxt)
    assert [r["key"] for r in got][-1] == "k11" and nxt == 12 and len(got) <= 7
    assert stream.read(nxt) == ([], 12)
    held, _ = stream.read(nxt - 1, copy=False)  # in place, for a reader that only looks
    assert held[0] is stream.read(nxt - 1, copy=False)[0][0]
    assert stream.read(nxt - 1)[0][0] is not held[0] and stream.read(nxt - 1)[0] == held
    for t in range(6):
        stream.add_memory_sample({"time": float(t), "rss": {"w": 1}})
    samples, nxt = stream.read_memory(0)
    assert samples[-1]["time"] == 5.0 and nxt == 6
    samples[-1]["rss"]["w"] = 99  # copies: the stream is untouched
    assert stream.read_memory(5)[0][0]["rss"] == {"w": 1}


def test_task_window_hands_out_what_a_poller_has_not_seen():
    w = TaskWindow(seconds=10)
    w.add([record("a", "inc", start=100.0, stop=100.5),
           record("b", "dec", lane="worker-1/0", start=100.2, stop=100.4),
           record("t", "inc", lane="remote-0/transfer", start=100.1, stop=100.2,
                  kind="transfer", remote=True),
           record("e", "inc", start=100.6, stop=100.7, error=True)])
    first = w.since(None, now=101.0, window=10)
    assert first["cursor"] == 4
    assert len(first["start"]) == 4
    assert [w.lanes[i][0] for i in first["lane"]] == [
        "worker-0/0", "worker-1/0", "remote-0/transfer", "worker-0/0"]
    assert first["kind"] == [0, 0, 1, 2]
    assert first["lanes"][2] == ["remote-0/transfer", "remote-0", True]
    # absolute times come back as epoch + offset
    assert first["epoch"] + first["start"][0] == pytest.approx(100.0, abs=1e-3)
    assert w.since(first["cursor"], now=101.0, window=10)["start"] == []
    w.add([record("c", "inc", start=101.0, stop=101.2)])
    assert len(w.since(first["cursor"], now=101.5, window=10)["start"]) == 1
    # old records leave the window; positions keep counting
    w.add([record("d", "inc", start=120.0, stop=120.1)])
    assert w.first > 0 and w.position == 6
    assert len(w.since(None, now=120.2, window=10)["start"]) == 1


def test_task_window_colours_are_the_pictures():
    records = [record(f"k{i}", g, start=i, stop=i + d)
               for i, (g, d) in enumerate([("inc", 0.5), ("dec", 2.0), ("add", 0.1),
                                           ("inc", 0.5), ("sum-chunk", 0.3)] * 5)]
    w = TaskWindow(seconds=1000)
    w.add(records)
    assert w.colors() == group_colors(summarize(records)["groups"])


def test_group_progress_between_and_after_full_counts():
    p = GroupProgress()
    # 10 'inc' tasks: 4 waiting, 3 ready, 2 processing, 1 done
    p.add_records([record("inc-0", "inc")])
    p.set_states({"inc": {"waiting": 4, "ready": 3, "processing": 2, "memory": 1}})
    p.set_processing({"inc": 2})
    (row,) = p.rows()
    assert (row["waiting"], row["ready"], row["processing"], row["memory"]) == (4, 3, 2, 1)
    assert (row["done"], row["total"]) == (1, 10)
    # three more finish before the next full count: the row moves on anyway
    p.add_records([record(f"inc-{i}", "inc") for i in (1, 2, 3)])
    p.set_processing({"inc": 2})
    (row,) = p.rows()
    assert (row["done"], row["total"]) == (4, 10)
    assert row["waiting"] + row["ready"] + row["processing"] == 6
    # everything finished; one result still held, the rest released
    p.add_records([record(f"inc-{i}", "inc") for i in range(4, 10)])
    p.set_states({"inc": {"memory": 1}})
    p.set_processing({})
    (row,) = p.rows()
    assert (row["done"], row["total"], row["memory"], row["released"]) == (10, 10, 1, 9)


def test_group_progress_starts_afresh_when_a_group_comes_back():
    p = GroupProgress()
    p.add_records([record(f"inc-{i}", "inc") for i in range(5)])
    p.set_states({})
    p.set_states({})  # gone twice in a row: its tasks all left
    (row,) = p.rows()
    assert (row["done"], row["total"]) == (5, 5)
    p.add_records([record("inc-new", "inc")])  # a new computation of the same group
    p.set_states({"inc": {"waiting": 1}})
    (row,) = p.rows()
    assert (row["done"], row["total"]) == (1, 2)


def test_group_progress_counts_errors_and_orders_unfinished_first():
    p = GroupProgress()
    p.add_records([record("a-1", "a"), record("b-1", "b", error=True)])
    p.set_states({"b": {"erred": 3}, "c": {"waiting": 2}})
    rows = {r["name"]: r for r in p.rows()}
    assert rows["b"]["erred"] == 3 and rows["b"]["done"] == 3
    assert p.rows()[0]["name"] == "c"


def test_memory_series_rate_and_cursor():
    m = MemorySeries(rate_span=1.0)
    m.add([{"time": 10.0 + 0.1 * i, "shm_bytes": 100 * i, "rss": {"w0": 1000, "w1": 500},
            "done": 50 * i} for i in range(30)])
    out = m.since(None)
    assert out["cursor"] == 30 and out["memory"][0] == 1500 and out["shm"][-1] == 2900
    assert out["rate"][-1] == pytest.approx(500.0, rel=0.02)  # 50 tasks per 0.1 s
    assert m.since(out["cursor"])["time"] == []


def test_worker_rows_merge_measurements():
    info = {"worker-1": {"name": "worker-1", "pid": 12, "host": "h", "kind": "local",
                         "nthreads": 2, "memory_limit": 1 << 30,
                         "metrics": {"memory": 1000, "executing": 2, "shm_bytes": 64}},
            "worker-0": {"pid": 11, "nthreads": 1, "metrics": {}}}
    rows = worker_rows(info, lambda i: {"cpu": 50.0, "private": 10, "memory": None})
    assert [r["id"] for r in rows] == ["worker-0", "worker-1"]
    assert rows[1]["shm"] == 64 and rows[1]["cpu"] == 50.0 and rows[1]["memory"] == 1000


def test_graph_view_layout_and_states():
    inc = lambda x: x + 1  # noqa: E731
    dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "b")}
    view = GraphView(1, dsk)
    live = {"b": "memory", "c": "processing"}
    out = view.payload(live.get)
    assert out["status"] == "ok" and len(out["nodes"]["x"]) == 5  # 2 tasks, 3 data
    assert dict(zip(view.keys, out["states"], strict=True)) == {
        "a": "forgotten", "b": "memory", "c": "processing"}
    view.add_records([record("c", "inc")])
    assert view.payload({}.get)["states"][view.keys.index("c")] == "released"
    big = GraphView(2, MAX_GRAPH_TASKS + 1)
    assert big.payload({}.get)["status"] == "too-large"


def test_prometheus_text_is_well_formed():
    text = prometheus_text(
        info={"tasks_done": 7, "started": 1.5},
        progress={"groups": [{"name": 'we"ird\\group\n', "waiting": 1, "ready": 0,
                              "processing": 0, "memory": 0, "erred": 0, "done": 2,
                              "total": 3}],
                  "totals": {"waiting": 1}},
        workers={"workers": [{"id": "worker-0", "kind": "local", "nthreads": 1, "cpu": 150.0,
                              "memory": 10, "private": 5, "shm": 0, "executing": 1,
                              "memory_limit": None}]},
        memory={"shm": [3], "memory": [10], "rate": [2.5]})
    lines = text.splitlines()
    families = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(families) == len(set(families))
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="(\\.|[^"\\])*"(,[a-z_]+="(\\.|[^"\\])*")*\})? '
                        r'(-?[0-9.e+]+|NaN|[+-]Inf)$')
    for line in lines:
        assert line.startswith("#") or sample.match(line), line
    assert "shmdask_tasks_finished_total 7" in lines
    assert 'shmdask_worker_cpu_ratio{worker="worker-0",kind="local"} 1.5' in lines
    assert 'group="we\\"ird\\\\group\\n"' in text
    assert not any(line.startswith("shmdask_worker_memory_limit_bytes{") for line in lines)


def test_report_data_escapes_the_page(tmp_path):
    nasty = "</script><script>alert(1)</script>"
    records = [record("a", nasty, start=1.0, stop=2.0), record("b", "inc", start=1.5, stop=2.5)]
    path = write_report(tmp_path / "r.html", records,
                        [{"time": 1.0, "shm_bytes": 0, "rss": {}, "done": 0}])
    html = open(path, encoding="utf-8").read()
    assert nasty not in html and "alert(1)" in html  # present, but only escaped
    assert "http://" not in html.replace("http://www.w3.org", "")  # nothing to fetch
    data = _embedded(html)
    assert data["tasks"]["groups"] == [nasty, "inc"]
    assert {g["name"]: (g["done"], g["total"]) for g in data["progress"]["groups"]} == {
        nasty: (1, 1), "inc": (1, 1)}
    assert [w["id"] for w in data["workers"]["workers"]] == ["worker-0"]
    with pytest.raises(ValueError, match="html"):
        write_report(tmp_path / "r.png", records)


def _embedded(html: str) -> dict:
    m = re.search(r'<script id="shmdask-data" type="application/json">(.*?)</script>', html, re.S)
    assert m, "no embedded data"
    return json.loads(m.group(1))


# ----------------------------------------------------------------------------- live


def get(url: str, timeout: float = 20) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(base: str, path: str) -> dict:
    status, headers, body = get(base + path)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


@pytest.fixture(scope="module")
def cluster():
    from shmdask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, dashboard_address=":0") as c, \
            Client(c, set_as_default=False) as client:
        c.client = client
        yield c


@pytest.fixture
def base(cluster) -> str:
    return cluster.dashboard_link.rsplit("/", 1)[0]


def test_api_follows_a_computation(cluster, base):
    client = cluster.client

    @shmdask.delayed
    def slow_inc(x):
        time.sleep(0.002)
        return x + 1

    n = 300
    total = shmdask.delayed(sum)([slow_inc(i) for i in range(n)])
    stream = get_json(base, "/api/task-stream")
    cursor = stream["cursor"]
    result = client.compute(total).result()
    assert result == sum(range(1, n + 1))

    def progress_done() -> bool:
        groups = {g["name"]: g for g in get_json(base, "/api/progress")["groups"]}
        stream = get_json(base, f"/api/task-stream?since={cursor}&window=600")
        return groups.get("slow_inc", {}).get("done") == n and len(stream["start"]) == n + 1

    wait_for(progress_done, what="progress to reach the total")
    groups = {g["name"]: g for g in get_json(base, "/api/progress")["groups"]}
    assert groups["slow_inc"]["total"] == n and groups["slow_inc"]["waiting"] == 0
    new = get_json(base, f"/api/task-stream?since={cursor}&window=600")
    names = [new["groups"][g] for g in new["group"]]
    assert names.count("slow_inc") == n and len(names) == n + 1  # and the final sum
    assert "slow_inc" in new["colors"]
    assert get_json(base, f"/api/task-stream?since={new['cursor']}")["start"] == []

    workers = get_json(base, "/api/workers")["workers"]
    assert sorted(w["pid"] for w in workers) == sorted(h.pid for h in cluster.workers.values())
    assert all(w["kind"] == "local" and w["memory_limit"] for w in workers)
    memory = get_json(base, "/api/memory")
    assert memory["time"] and len(memory["time"]) == len(memory["rate"])
    info = get_json(base, "/api/info")
    assert info["cluster"] == cluster.id and info["dashboard"] == cluster.dashboard_link
    assert info["tasks_done"] >= n + 1


def test_api_update_is_the_parts_in_one(cluster, base):
    cluster.client.submit(sum, [1, 2]).result()
    parts = get_json(base, "/api/update")
    assert set(parts) == {"task_stream", "progress", "workers", "memory"}
    assert parts["task_stream"]["cursor"] == get_json(base, "/api/task-stream")["cursor"]
    cursor, memory = parts["task_stream"]["cursor"], parts["memory"]["cursor"]
    more = get_json(base, f"/api/update?since={cursor}&memory_since={memory}&graph=1&info=1")
    assert set(more) == {"task_stream", "progress", "workers", "memory", "graph", "info"}
    assert more["task_stream"]["start"] == [] and more["info"]["cluster"] == cluster.id


def test_api_graph_of_the_current_computation(cluster, base):
    inc = lambda x: x + 1  # noqa: E731
    graph = shmdask.delayed(inc)(shmdask.delayed(inc)(1))
    assert cluster.client.compute(graph).result() == 3

    def drawn() -> bool:
        g = get_json(base, "/api/graph")
        return g["status"] == "ok" and "released" in g["states"] + ["memory"]

    wait_for(drawn, what="the graph")
    g = get_json(base, "/api/graph")
    assert len(g["nodes"]["x"]) == len(g["nodes"]["kind"]) == len(g["nodes"]["label"])
    assert set(g["states"]) <= {"memory", "released", "forgotten"}
    import shmdask.array as da

    big = da.ones(MAX_GRAPH_TASKS * 2, chunks=1).sum()
    cluster.client.compute(big).result()
    wait_for(lambda: get_json(base, "/api/graph")["status"] == "too-large",
             what="a big graph to be refused")


def test_metrics_endpoint(cluster, base):
    status, headers, body = get(base + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert "shmdask_workers 2" in text.splitlines()
    assert "# TYPE shmdask_tasks_finished_total counter" in text


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/nope", 404),
    ("GET", "/static/../setup.cfg", 404),
    ("GET", "/api/task-stream?since=abc", 400),
    ("GET", "/api/task-stream?since=-1", 400),
    ("GET", "/api/task-stream?window=nan", 400),
    ("GET", "/api/task-stream?window=1e9", 400),
    ("GET", "/api/progress?cmd=restart", 400),
    ("GET", "/api/memory?since=1&since=2&&=", 400),
    ("GET", "/api/update?memory_since=x", 400),
    ("GET", "/api/update?graph=yes", 400),
    ("POST", "/api/info", 405),
    ("DELETE", "/status", 405),
    ("PUT", "/api/workers", 405),
])
def test_bad_requests_get_4xx(base, method, path, status):
    req = urllib.request.Request(base + path, method=method, data=b"x" if method != "GET"
                                 else None)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            code, body = r.status, r.read()
    except urllib.error.HTTPError as exc:
        code, body = exc.code, exc.read()
    assert code == status, body
    assert b"Traceback" not in body
    if path.startswith("/api") and code != 405:
        assert "error" in json.loads(body)


@pytest.mark.parametrize("request_line, status", [
    (b"GARBAGE", b"400"),
    (b"GET /status HTTP/9.9", b"400"),
    (b"BREW /status HTTP/1.1", b"405"),
    (b"GET /" + b"x" * 70000 + b" HTTP/1.1", b"414"),
])
def test_malformed_requests_get_an_answer(base, request_line, status):
    host, port = base.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(request_line + b"\r\n\r\n")
        first_line = s.makefile("rb").readline()
    assert first_line.split()[1] == status, first_line


def test_page_and_static_files(base):
    status, headers, page = get(base + "/")
    assert status == 200 and b'<canvas id="task-stream">' in page  # redirected to /status
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    for path, kind in (("/static/dashboard.js", "javascript"), ("/static/dashboard.css", "css")):
        status, headers, _ = get(base + path)
        assert status == 200 and kind in headers["Content-Type"]


def test_many_loads_and_a_client_that_never_reads(cluster, base):
    host, port = base.split("//")[1].split(":")
    stuck = []
    # one client asks and never reads, one connects and never asks
    s1 = socket.create_connection((host, int(port)))
    s1.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s1.sendall(b"GET /static/dashboard.js HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
    stuck.append(s1)
    stuck.append(socket.create_connection((host, int(port))))
    results: list = []

    def load(i: int) -> None:
        path = ["/status", "/api/progress", "/api/task-stream", "/api/workers",
                "/static/dashboard.js"][i % 5]
        results.append(get(base + path)[0])

    threads = [threading.Thread(target=load, args=(i,)) for i in range(50)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [200] * 50
        # and the cluster still computes meanwhile
        assert cluster.client.submit(sum, [1, 2]).result(timeout=30) == 3
    finally:
        for s in stuck:
            s.close()


def test_serving_never_blocks_the_scheduler(cluster, base):
    """A dashboard stuck in the middle of building an answer holds up no computation."""
    get_json(base, "/api/progress")  # the collector runs
    collector = cluster._runtime.dashboard.collector
    # its models and answers are locked: every request and every refresh waits
    with collector._lock, collector._answers_lock:
        blocked = threading.Thread(target=get, args=(base + "/api/progress",), daemon=True)
        blocked.start()
        futures = cluster.client.map(lambda x: x * 2, range(200))
        assert sum(f.result(timeout=30) for f in futures) == 2 * sum(range(200))
        assert blocked.is_alive()
    blocked.join(30)


def test_closing_frees_the_port_and_a_taken_port_moves():
    from shmdask.distributed import LocalCluster

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.warns(DashboardPortWarning, match=f"port {port} is already in use"):
            c = LocalCluster(n_workers=1, dashboard_address=f":{port}")
    with c:
        link = c.dashboard_link
        assert link.startswith("http://127.0.0.1:") and f":{port}/" not in link
        moved = int(link.split(":")[2].split("/")[0])
        assert get(link)[0] == 200
    assert c.dashboard_link is None
    with socket.socket() as again:  # free at once after close
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", moved))
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(link, timeout=5)


def test_the_accept_loop_sleeps_until_a_connection_or_close(monkeypatch):
    """No polling: an idle server waits in one select() and close() wakes it,
    also when close() comes before the loop has started."""
    import selectors

    from shmdask.diagnostics.dashboard.server import bind_server

    selects = []
    real_select = selectors.DefaultSelector.select

    def counted_select(self, timeout=None):
        selects.append(timeout)
        return real_select(self, timeout)

    monkeypatch.setattr(selectors.DefaultSelector, "select", counted_select)
    server, _ = bind_server("127.0.0.1", 0, collector=None)
    loop = threading.Thread(target=server.serve_until_closed, daemon=True)
    loop.start()
    wait_for(lambda: selects, timeout=10)
    time.sleep(0.5)  # socketserver's serve_forever would have polled several times
    assert selects == [None]
    server.close()
    loop.join(10)
    assert not loop.is_alive()

    unstarted, _ = bind_server("127.0.0.1", 0, collector=None)
    unstarted.close()
    unstarted.serve_until_closed()  # returns at once: it was closed first


def test_no_dashboard_and_bad_address():
    from shmdask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, dashboard_address=None) as c, \
            Client(c, set_as_default=False) as client:
        assert c.dashboard_link is None and client.dashboard_link is None
        assert c.scheduler_info()["services"] == {}
        assert "dashboard" not in repr(client)
    with pytest.raises(ValueError, match="no port"):
        LocalCluster(n_workers=1, dashboard_address="localhost")


def test_links_in_client_reprs_and_over_tcp(cluster):
    from shmdask.distributed import Client

    client = cluster.client
    link = cluster.dashboard_link
    assert client.dashboard_link == link
    assert link in repr(client) and link in repr(cluster)
    assert f'href="{link}"' in client._repr_html_() and link in cluster._repr_html_()
    assert cluster.scheduler_info()["services"]["dashboard"] == int(link.split(":")[2][:-7])
    listener_cluster = pytest.importorskip("shmdask.distributed").LocalCluster(
        n_workers=1, listen=True, dashboard_address=":0")
    with listener_cluster, Client(listener_cluster.scheduler_address,
                                  set_as_default=False) as remote:
        assert remote.dashboard_link == listener_cluster.dashboard_link
        assert listener_cluster.dashboard_link in repr(remote)


def test_performance_report(tmp_path):
    from shmdask.distributed import Client, LocalCluster

    path = tmp_path / "report.html"
    with LocalCluster(n_workers=2, dashboard_address=None) as c, Client(c):
        with shmdask.distributed.performance_report(filename=str(path)):
            total = shmdask.delayed(sum)([shmdask.delayed(abs)(-i) for i in range(50)])
            assert total.compute() == sum(range(50))
        pids = sorted(h.pid for h in c.workers.values())
    data = _embedded(path.read_text(encoding="utf-8"))
    groups = {g["name"]: (g["done"], g["total"]) for g in data["progress"]["groups"]}
    assert groups == {"abs": (50, 50), "sum": (1, 1)}
    assert sorted(w["pid"] for w in data["workers"]["workers"]) == pids
    assert len(data["tasks"]["start"]) == 51 and data["info"]["live"] is False
    with pytest.raises(RuntimeError, match="needs a Client"), \
            shmdask.config.set(scheduler="threads"), \
            performance_report(filename=str(tmp_path / "x.html")):
        pass


def test_report_data_without_worker_info():
    data = report_data([record("a", "inc", lane="worker-3/1")])
    (w,) = data["workers"]["workers"]
    assert w["id"] == "worker-3" and w["nthreads"] == 1 and w["pid"] is None


def test_dashboard_threads_end_with_the_cluster():
    from shmdask.distributed import LocalCluster

    def ours() -> set:
        return {t for t in threading.enumerate() if t.name.startswith("shmdask-dashboard")}

    before = ours()
    with LocalCluster(n_workers=1, dashboard_address=":0") as c:
        get(c.dashboard_link.replace("/status", "/api/info"))
        assert len(ours() - before) >= 2  # server and collector
    wait_for(lambda: not (ours() - before), what="dashboard threads to end")

