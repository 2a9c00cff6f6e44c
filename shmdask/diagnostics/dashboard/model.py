"""The dashboard's numbers: pure accounting, shaped as the JSON the page draws.

In: task-stream records and memory samples (the schemas of
:mod:`shmdask.diagnostics.task_stream`), per-group counts of task states taken
from the scheduler, ``scheduler_info()["workers"]`` dicts and small task
graphs.  Out: plain dicts and lists, ready for ``json.dumps`` -- the bodies of
the ``/api/`` endpoints and of a saved ``report.html``.

No threads, no clocks, no I/O here: the live collector (``collector.py``) feeds
these objects from a running cluster a few times a second, and the report
(``report.py``) feeds the same objects once with a whole run, so the page reads
one format either way.

Why shaped so:

* **TaskWindow** keeps only what the page can show -- the records of the last
  ``seconds`` -- as parallel columns of small numbers (lane id, group id, times,
  a kind code), and hands out the part a poller has not seen yet by absolute
  position (its *cursor*), so a page polling twice a second moves a few
  kilobytes, not the history.
* **GroupProgress** must not cost the scheduler: counting every task's state
  is a walk over all tasks, so the collector does it rarely (more rarely the
  bigger the graph), and between two such walks the rows are brought forward
  from what is cheap to know exactly: tasks finished (records) and tasks
  running (the scheduler's processing set).  A group's counts start afresh
  when it comes back after all its tasks were gone, as dask's task groups do.
* Colours come from :func:`shmdask.diagnostics.palette.group_colors`, over the
  groups in the post-run picture's order (``busiest_first``), so a group has
  the same colour on the page as in the picture of the same run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shmdask.diagnostics.palette import (
    OTHER_COLOR,
    TRANSFER_COLOR,
    busiest_first,
    group_colors,
)
from shmdask.diagnostics.summary import group_of, natural_key, worker_of

KIND_COMPUTE, KIND_TRANSFER, KIND_ERRED = 0, 1, 2
STATES = ("waiting", "ready", "processing", "memory", "erred")
PENDING = ("waiting", "ready", "processing")

#: a graph with more tasks than this is not drawn (its size is said instead)
MAX_GRAPH_TASKS = 300

#: the colours the page needs besides the groups' own
PALETTE_INFO = {"transfer": TRANSFER_COLOR, "other": OTHER_COLOR}


def _r(t: float) -> float:
    """Seconds with millisecond precision: keeps the JSON short."""
    return round(t, 4)


# ----------------------------------------------------------------------------- stream


class TaskWindow:
    """The records of the last ``seconds``, as columns; see the module docstring."""

    def __init__(self, seconds: float = 300.0, max_records: int = 200_000):
        if not seconds > 0 or max_records < 1:
            raise ValueError(f"need seconds > 0 and max_records >= 1, got {seconds!r}, "
                             f"{max_records!r}")
        self.seconds = seconds
        self.max_records = max_records
        self.lanes: list[list] = []  # lane id -> [name, worker, remote]
        self._lane_ids: dict[str, int] = {}
        self.groups: list[str] = []  # group id -> name
        self._group_ids: dict[str, int] = {}
        self.busy: dict[str, float] = {}  # group -> compute seconds, whole run
        self.first = 0  # absolute position of the oldest record held
        self.newest = 0.0  # latest stop time seen
        self.oldest = float("inf")  # earliest start time seen
        self._start: list[float] = []
        self._stop: list[float] = []
        self._lane: list[int] = []
        self._group: list[int] = []
        self._kind: list[int] = []

    @property
    def position(self) -> int:
        """Absolute position one past the newest record."""
        return self.first + len(self._start)

    def _lane_id(self, record: Mapping) -> int:
        lane = str(record["lane"])
        i = self._lane_ids.get(lane)
        if i is None:
            i = self._lane_ids[lane] = len(self.lanes)
            self.lanes.append([lane, worker_of(record), bool(record.get("remote", False))])
        elif record.get("remote", False):
            self.lanes[i][2] = True
        return i

    def _group_id(self, group: str) -> int:
        i = self._group_ids.get(group)
        if i is None:
            i = self._group_ids[group] = len(self.groups)
            self.groups.append(group)
        return i

    def add(self, records: Iterable[Mapping]) -> None:
        # the scheduler's process pays for this loop: one pass, dict lookups only
        busy, lane_ids, group_ids = self.busy, self._lane_ids, self._group_ids
        starts, stops, lanes, groups, kinds = (self._start, self._stop, self._lane,
                                               self._group, self._kind)
        newest, oldest = self.newest, self.oldest
        for rec in records:
            try:
                start = float(rec["start"])
                stop = float(rec["stop"])
                lane = lane_ids.get(rec["lane"])
            except (KeyError, TypeError, ValueError):
                continue  # a malformed record is not the dashboard's to reject
            if lane is None or (rec.get("remote") and not self.lanes[lane][2]):
                lane = self._lane_id(rec)
            group = rec.get("group") or group_of(rec)
            gid = group_ids.get(group)
            if gid is None:
                gid = self._group_id(group)
            if rec.get("kind", "compute") == "transfer":
                kind = KIND_TRANSFER
            else:
                kind = KIND_ERRED if rec.get("error") else KIND_COMPUTE
                busy[group] = busy.get(group, 0.0) + (stop - start)
            starts.append(start)
            stops.append(stop)
            lanes.append(lane)
            groups.append(gid)
            kinds.append(kind)
            if stop > newest:
                newest = stop
            if start < oldest:
                oldest = start
        self.newest, self.oldest = newest, oldest
        self._trim()

    def _trim(self) -> None:
        stops = self._stop
        cutoff = self.newest - self.seconds
        drop = max(0, len(stops) - self.max_records)
        # records arrive nearly in stop order: dropping from the front is enough
        while drop < len(stops) and stops[drop] < cutoff:
            drop += 1
        if drop:
            for column in (self._start, self._stop, self._lane, self._group, self._kind):
                del column[:drop]
            self.first += drop

    def colors(self) -> dict[str, str]:
        """Group -> colour, as the post-run picture of the same records colours them."""
        return group_colors(busiest_first(self.busy))

    def since(self, cursor: int | None, now: float, window: float) -> dict[str, Any]:
        """The records at positions >= ``cursor`` that stopped in the last ``window``
        seconds before ``now``; times are seconds after ``epoch``."""
        i0 = 0 if cursor is None else max(0, cursor - self.first)
        cutoff = now - window
        stops = self._stop
        while i0 < len(stops) and stops[i0] < cutoff:
            i0 += 1
        if window == float("inf"):  # the whole run (a report): time 0 is its first task
            epoch = self.oldest if self.oldest != float("inf") else now
        else:
            epoch = cutoff
        start = [_r(t - epoch) for t in self._start[i0:]]
        return {
            "cursor": self.position,
            "now": now,
            "epoch": epoch,
            "lanes": self.lanes,
            "groups": self.groups,
            "colors": self.colors(),
            "start": start,
            "stop": [_r(t - epoch) for t in stops[i0:]],
            "lane": self._lane[i0:],
            "group": self._group[i0:],
            "kind": self._kind[i0:],
        }


# ----------------------------------------------------------------------------- progress


class _Group:
    __slots__ = ("finished", "erred", "scan", "finished_at_scan", "erred_at_scan",
                 "processing", "absent", "last_seen")

    def __init__(self) -> None:
        self.finished = 0  # compute records since the group (re)appeared
        self.erred = 0  # records of tasks that raised, same window
        self.scan = dict.fromkeys(STATES, 0)  # states at the last full count
        self.finished_at_scan = 0
        self.erred_at_scan = 0
        self.processing = 0  # running now (cheap to know every time)
        self.absent = 0  # full counts in a row that found no task of the group
        self.last_seen = 0

    @property
    def gone(self) -> bool:
        """All its tasks left -- twice in a row, as a single count may fall between
        a batch's state changes and its records: the next one starts a new window."""
        return self.absent >= 2

    def reset(self) -> None:
        self.__init__()


class GroupProgress:
    """Per task group: waiting / ready / processing / in memory / erred / done of total.

    Feed it with :meth:`add_records` (tasks that finished), :meth:`set_processing`
    (what runs now, by group) and now and then :meth:`set_states` (a full count of
    the scheduler's tasks by group and state); :meth:`rows` gives the table.
    """

    def __init__(self, max_groups: int = 200):
        self.groups: dict[str, _Group] = {}
        self.max_groups = max_groups
        self._clock = 0  # counts updates, to order groups by recency

    def _get(self, name: str) -> _Group:
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = _Group()
        elif g.gone:
            g.reset()
        g.last_seen = self._clock
        return g

    def add_records(self, records: Iterable[Mapping]) -> None:
        self._clock += 1
        finished: dict[str, int] = {}
        erred: dict[str, int] = {}
        for rec in records:  # counted per group first: one _get per group, not per record
            if rec.get("kind", "compute") == "transfer":
                continue
            name = rec.get("group") or group_of(rec)
            counts = erred if rec.get("error") else finished
            counts[name] = counts.get(name, 0) + 1
        for name, n in finished.items():
            self._get(name).finished += n
        for name, n in erred.items():
            self._get(name).erred += n

    def set_processing(self, by_group: Mapping[str, int]) -> None:
        for name, g in self.groups.items():
            g.processing = by_group.get(name, 0)
        for name, n in by_group.items():
            if name not in self.groups or self.groups[name].gone:
                self._get(name).processing = n

    def set_states(self, by_group: Mapping[str, Mapping[str, int]]) -> None:
        """A full count ``{group: {state: n}}`` of the tasks the scheduler holds."""
        self._clock += 1
        for name, counts in by_group.items():
            if not any(counts.get(s, 0) for s in STATES):
                continue
            g = self._get(name)
            g.scan = {s: int(counts.get(s, 0)) for s in STATES}
            g.finished_at_scan = g.finished
            g.erred_at_scan = g.erred
            g.absent = 0
        for name, g in self.groups.items():
            if name in by_group and any(by_group[name].get(s, 0) for s in STATES):
                continue
            g.scan = dict.fromkeys(STATES, 0)
            g.finished_at_scan, g.erred_at_scan = g.finished, g.erred
            g.absent += 1
        if len(self.groups) > self.max_groups:
            old = sorted((g.last_seen, name) for name, g in self.groups.items() if g.gone)
            for _, name in old[: len(self.groups) - self.max_groups]:
                del self.groups[name]

    def rows(self, colors: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """One row per group, unfinished groups first, then the most recent."""
        colors = colors or {}
        out = []
        for name, g in self.groups.items():
            scan = g.scan
            pending_then = scan["waiting"] + scan["ready"] + scan["processing"]
            since = (g.finished - g.finished_at_scan) + (g.erred - g.erred_at_scan)
            pending = max(0, pending_then - since, g.processing)
            processing = min(g.processing, pending)
            rest = pending - processing
            waiting = min(scan["waiting"], rest)
            ready = rest - waiting
            memory = scan["memory"]
            finished = max(g.finished, memory)  # scattered data is in memory unrun
            erred = max(g.erred, scan["erred"])
            done = finished + erred
            out.append({
                "name": name,
                "color": colors.get(name, OTHER_COLOR),
                "waiting": waiting,
                "ready": ready,
                "processing": processing,
                "memory": memory,
                "released": finished - min(memory, finished),
                "erred": erred,
                "done": done,
                "total": done + pending,
                "_order": (pending == 0, -g.last_seen, natural_key(name)),
            })
        out.sort(key=lambda row: row.pop("_order"))
        return out


def info_payload(table: list[dict], now: float, tasks_done: int, live: bool,
                 **more: Any) -> dict[str, Any]:
    """The body of ``/api/info`` for the workers ``table`` (:func:`worker_rows`): one
    builder for the live page and a saved report; ``more`` adds what only one knows."""
    return {
        "name": "shmdask",
        "live": live,
        "now": now,
        "workers": len(table),
        "threads": sum(w.get("nthreads") or 0 for w in table),
        "memory_limit": sum(w.get("memory_limit") or 0 for w in table),
        "tasks_done": int(tasks_done),
        "colors": PALETTE_INFO,
        **more,
    }


def progress_payload(rows: list[dict], now: float, tasks_done: int) -> dict[str, Any]:
    """The body of ``/api/progress``: the rows of :meth:`GroupProgress.rows` and their sums."""
    keys = ("waiting", "ready", "processing", "memory", "released", "erred", "done", "total")
    totals = dict.fromkeys(keys, 0)
    for row in rows:
        for k in keys:
            totals[k] += row[k]
    return {"now": now, "groups": rows, "totals": totals, "tasks_done": int(tasks_done)}


# ----------------------------------------------------------------------------- memory


class MemorySeries:
    """Shared memory, total worker memory and tasks done over time (last ``seconds``)."""

    def __init__(self, seconds: float = 600.0, max_samples: int = 20_000,
                 rate_span: float = 1.0):
        self.seconds = seconds
        self.max_samples = max_samples
        self.rate_span = rate_span  # tasks/s is measured over this many seconds
        self.first = 0
        self.time: list[float] = []
        self.shm: list[int] = []
        self.memory: list[int] = []
        self.done: list[int] = []
        self.rate: list[float] = []
        self._back = 0  # index of the sample the rate of the next one starts from

    @property
    def position(self) -> int:
        return self.first + len(self.time)

    def add(self, samples: Iterable[Mapping]) -> None:
        for s in samples:
            try:
                t = float(s["time"])
            except (KeyError, TypeError, ValueError):
                continue
            rss = s.get("rss") or {}
            done = int(s.get("done", 0) or 0)
            self.time.append(t)
            self.shm.append(int(s.get("shm_bytes", 0) or 0))
            self.memory.append(int(sum(v for v in rss.values() if isinstance(v, int | float))))
            self.done.append(done)
            i = len(self.time) - 1
            back = min(self._back, i)
            while back + 1 < i and self.time[back + 1] <= t - self.rate_span:
                back += 1
            self._back = back
            dt = t - self.time[back]
            self.rate.append(round(max(0, done - self.done[back]) / dt, 1) if dt > 0 else 0.0)
        self._trim()

    def _trim(self) -> None:
        if not self.time:
            return
        cutoff = self.time[-1] - self.seconds
        drop = max(0, len(self.time) - self.max_samples)
        while drop < len(self.time) - 1 and self.time[drop] < cutoff:
            drop += 1
        if drop:
            for column in (self.time, self.shm, self.memory, self.done, self.rate):
                del column[:drop]
            self.first += drop
            self._back = max(0, self._back - drop)

    def since(self, cursor: int | None) -> dict[str, Any]:
        i0 = 0 if cursor is None else max(0, cursor - self.first)
        return {
            "cursor": self.position,
            "time": [_r(t) for t in self.time[i0:]],
            "shm": self.shm[i0:],
            "memory": self.memory[i0:],
            "done": self.done[i0:],
            "rate": self.rate[i0:],
        }


# ----------------------------------------------------------------------------- workers


def worker_rows(workers: Mapping[str, Mapping],
                process_stats: Callable[[Mapping], Mapping] | None = None) -> list[dict]:
    """The workers table from ``scheduler_info()["workers"]``; ``process_stats(info)``
    may add what only this host can measure (``cpu``, ``memory``, ``private``)."""
    rows = []
    for wid, info in workers.items():
        metrics = info.get("metrics") or {}
        row = {
            "id": str(wid),
            "name": str(info.get("name", wid)),
            "pid": info.get("pid"),
            "host": info.get("host"),
            "kind": info.get("kind", "local"),
            "nthreads": info.get("nthreads"),
            "cpu": None,
            "memory": metrics.get("memory"),
            "private": None,
            "shm": metrics.get("shm_bytes"),
            "executing": metrics.get("executing", 0),
            "in_memory": metrics.get("in_memory", 0),
            "memory_limit": info.get("memory_limit"),
        }
        if process_stats is not None:
            row.update({k: v for k, v in process_stats(info).items() if v is not None})
        rows.append(row)
    rows.sort(key=lambda r: natural_key(r["id"]))
    return rows


# ----------------------------------------------------------------------------- graph


class GraphView:
    """The picture of one (small) task graph: layout once, states on every ask.

    Positions come from :mod:`shmdask.visualize`'s layout (the same layers and
    ordering as ``visualize()``); ``states`` colours its nodes from the
    scheduler's view of each key.
    """

    def __init__(self, graph_id: int, dsk: Mapping | int):
        self.id = graph_id
        self.n_tasks = dsk if isinstance(dsk, int) else len(dsk)
        self.status = "too-large" if self.n_tasks > MAX_GRAPH_TASKS else "ok"
        self.message = ""
        self.keys: list = []
        self.finished: set = set()
        self._nodes: dict[str, list] = {"x": [], "y": [], "kind": [], "label": [], "key": []}
        self._edges: list[list[float]] = []
        if self.status == "too-large":
            self.message = (f"the current graph has {self.n_tasks} tasks; graphs of up to "
                            f"{MAX_GRAPH_TASKS} tasks are drawn")
            return
        try:
            self._lay_out(dsk)  # type: ignore[arg-type]
        except Exception as exc:  # an exotic graph: say so, draw the rest of the page
            self.status = "error"
            self.message = f"this graph cannot be drawn: {type(exc).__name__}: {exc}"

    def _lay_out(self, dsk: Mapping) -> None:
        from shmdask.visualize import _layout, graph_structure

        nodes, edges, labels = graph_structure(dsk)
        positions, routes, _, _ = _layout(nodes, edges, "TB")
        index: dict = {}
        for kind, key in nodes:
            if key not in index:
                index[key] = len(self.keys)
                self.keys.append(key)
            x, y = positions[(kind, key)]
            self._nodes["x"].append(_r(x))
            self._nodes["y"].append(_r(y))
            self._nodes["kind"].append(0 if kind == "task" else 1)
            self._nodes["label"].append(labels[(kind, key)])
            self._nodes["key"].append(index[key])
        self._edges = [[_r(c) for point in route for c in point] for route in routes]
        self._key_set = set(self.keys)

    def add_records(self, records: Iterable[Mapping]) -> None:
        if self.status != "ok":
            return
        keys = self._key_set
        for rec in records:
            key = rec.get("key")
            try:
                if key in keys and rec.get("kind", "compute") != "transfer":
                    self.finished.add(key)
            except TypeError:  # an unhashable key cannot be one of ours
                continue

    def payload(self, state_of: Callable[[Any], str | None]) -> dict[str, Any]:
        """``state_of(key)`` is the scheduler's state of a key it holds, else None."""
        out: dict[str, Any] = {"id": self.id, "status": self.status, "n_tasks": self.n_tasks,
                               "message": self.message}
        if self.status != "ok":
            return out
        states = []
        for key in self.keys:
            state = state_of(key)
            if state is None:
                state = "released" if key in self.finished else "forgotten"
            states.append(state)
        out.update(nodes=self._nodes, edges=self._edges, states=states)
        return out


def no_graph() -> dict[str, Any]:
    return {"id": 0, "status": "none", "n_tasks": 0,
            "message": "no graph has been submitted yet"}
