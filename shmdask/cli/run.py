"""``shmdask run SCRIPT [ARGS]...``: a script on a LocalCluster, a picture and a summary after.

In: a script path and its arguments.  Out: the script's exit status; on stderr
a summary of what ran where, and the task-stream picture in the report
directory.  See the package docstring for the contract.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import CodeType, TracebackType
from typing import Any

import click

import shmdask
from shmdask.cli.common import (
    DASHBOARD_HELP,
    DEFAULT_DASHBOARD,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    CliError,
    _err,
    check_resolvable,
    dashboard_option,
    parse_address,
    remote_hint,
)
from shmdask.units import format_bytes, format_seconds

DEFAULT_REPORT_DIR = "shmdask-report"


# ----------------------------------------------------------------------------- scripts


def load_script(path: str) -> CodeType:
    """Read and compile a script; a missing file or bad syntax is a ``CliError``.

    Compiling up front means a syntax error costs no cluster start.  Exit
    statuses follow Python's: 2 for a file that cannot be opened, 1 for bad syntax.
    """
    if os.path.isdir(path):
        raise CliError(f"can't run {path!r}: it is a directory, not a Python script", 2)
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CliError(f"can't open file {path!r}: {reason}", 2) from None
    try:
        return compile(source, os.path.abspath(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f"{path}, line {exc.lineno}" if exc.lineno else path
        text = (exc.text or "").strip()
        shown = f": {text}" if text and len(text) <= 60 else ""
        raise CliError(f"syntax error in {where}: {exc.msg}{shown}", 1) from None
    except ValueError as exc:  # null bytes and the like
        raise CliError(f"can't compile {path!r}: {exc}", 1) from None


def trim_traceback(tb: TracebackType | None, filename: str) -> TracebackType | None:
    """Drop the runner's frames (this module, runpy) in front of the script's first one."""
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename != filename:
        first = first.tb_next
    return first if first is not None else tb


def exit_status(code: Any) -> int:
    """The process exit status for ``sys.exit(code)``, as Python computes it.

    A non-integer code is printed to stderr (Python's behaviour) and gives 1.
    """
    if code is None:
        return 0
    if isinstance(code, int) and not isinstance(code, bool):
        return code & 0xFF
    if isinstance(code, bool):
        return int(code)
    _err(str(code))
    return 1


def _shmdask_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(shmdask.__file__)))


def set_script_path(script: str) -> None:
    """``sys.path[0]`` becomes the script's directory, as with ``python SCRIPT``.

    The entry it replaces (the ``shmdask`` executable's directory, or the
    current directory under ``python -m shmdask``) may be where shmdask
    itself is imported from; then it moves to the end so that shmdask's lazily
    imported modules still resolve.
    """
    script_dir = os.path.dirname(os.path.realpath(script))
    old = sys.path[0] if sys.path else None
    if sys.path:
        sys.path[0] = script_dir
    else:
        sys.path.insert(0, script_dir)
    root = _shmdask_root()
    resolved = {os.path.realpath(p or os.getcwd()) for p in sys.path}
    if os.path.realpath(root) not in resolved and old is not None:
        sys.path.append(old)


@dataclass
class ScriptOutcome:
    """How a script ended: its exit status and what ended it."""

    status: int
    how: str  # "finished" | "exited" | "raised" | "interrupted" | "terminated"
    exception: BaseException | None = None


class _Terminated(BaseException):
    """SIGTERM during a run: unwinds the script like Ctrl-C does, so we clean up."""


def run_script(code: CodeType, script: str, args: Sequence[str]) -> ScriptOutcome:
    """Run compiled ``code`` as ``__main__`` with ``sys.argv[1:] = args``.

    ``runpy.run_path`` sets up the module namespace (``__file__`` is the
    script's absolute path, as in Python 3.9+) and makes ``sys.argv[0]`` that
    path too.
    Exceptions of the script are printed here, as Python would print them, and
    never escape; ``KeyboardInterrupt`` and SIGTERM end the script and give
    130 and 143.
    """
    import runpy

    filename = code.co_filename
    old_argv = sys.argv
    sys.argv = [script, *args]
    previous_term = _install_term_handler()
    try:
        runpy.run_path(filename, run_name="__main__")
    except SystemExit as exc:
        return ScriptOutcome(exit_status(exc.code), "exited", exc)
    except KeyboardInterrupt as exc:
        _print_exception(exc, filename)
        return ScriptOutcome(EXIT_INTERRUPTED, "interrupted", exc)
    except _Terminated as exc:
        return ScriptOutcome(EXIT_TERMINATED, "terminated", exc)
    except BaseException as exc:
        _print_exception(exc, filename)
        return ScriptOutcome(1, "raised", exc)
    else:
        return ScriptOutcome(0, "finished")
    finally:
        sys.argv = old_argv
        if previous_term is not None:
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGTERM, previous_term)


def _install_term_handler() -> Any:
    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated()

    try:
        return signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (tests calling run_script)
        return None


def _print_exception(exc: BaseException, filename: str) -> None:
    tb = trim_traceback(exc.__traceback__, filename)
    exc.__traceback__ = tb  # Python 3.11's excepthook prints the exception's own traceback
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    try:
        sys.excepthook(type(exc), exc, tb)
    except Exception:  # a broken hook of the script's: fall back to Python's own
        traceback.print_exception(type(exc), exc, tb, file=sys.__stderr__)


# ----------------------------------------------------------------------------- report


@dataclass
class RunReport:
    """What a run leaves behind: numbers for the summary, and where the plot went."""

    script: str
    wall: float
    outcome: ScriptOutcome
    records: list = field(default_factory=list)
    memory: list = field(default_factory=list)
    peak_shm: int | None = None
    plot: str | None = None
    plot_error: str | None = None
    page: str | None = None  # the same run as the dashboard page, offline


def report_filename(report_dir: str, started: float) -> str:
    """``DIR/run-YYYYmmdd-HHMMSS.png``; a suffix keeps two runs in one second apart."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    path = os.path.join(report_dir, f"run-{stamp}.png")
    n = 1
    while os.path.exists(path):
        path = os.path.join(report_dir, f"run-{stamp}-{n}.png")
        n += 1
    return path


def format_summary(report: RunReport, summary: Mapping[str, Any] | None) -> list[str]:
    """The lines printed after a run.  ``summary`` is ``summary.summarize(records)``."""
    name = os.path.basename(report.script)
    outcome = report.outcome
    ending = {
        "finished": "finished",
        "exited": (f"exited with status {outcome.status}" if outcome.status
                   else "finished (sys.exit(0))"),
        "raised": f"failed ({type(outcome.exception).__name__})",
        "interrupted": "was interrupted",
        "terminated": "was terminated",
    }[outcome.how]
    lines = [f"shmdask run: {name} {ending} after {format_seconds(report.wall)}"]
    if not summary or not summary.get("n_tasks"):
        lines.append("  no tasks were run")
        return lines
    n = summary["n_tasks"]
    line = (f"  {n} task{'s' if n != 1 else ''} on {summary['n_workers']} "
            f"worker{'s' if summary['n_workers'] != 1 else ''}, "
            f"busy over {format_seconds(summary['wall'])}, "
            f"utilisation {summary['utilisation']:.0%}")
    if summary.get("n_errors"):
        line += f", {summary['n_errors']} erred"
    lines.append(line)
    for worker, w in summary["workers"].items():
        where = " (remote)" if w.get("remote") else ""
        lines.append(f"    {worker}{where}: {w['tasks']} tasks, busy "
                     f"{format_seconds(w['busy'])}, utilisation {w['utilisation']:.0%}")
    if report.peak_shm is not None:
        lines.append(f"  peak shared memory: {format_bytes(report.peak_shm)}")
    if report.plot:
        lines.append(f"  task stream: {report.plot}")
    if report.page:
        lines.append(f"  dashboard of the run: {report.page}")
    elif report.plot_error:
        lines.append(f"  task stream not written: {report.plot_error}")
    return lines


# ----------------------------------------------------------------------------- run


def _start_cluster(workers: int | None, threads: int, memory_limit: Any,
                   listen: str | None, dashboard_address: Any = None) -> tuple[Any, Any]:
    from shmdask.cluster.local_cluster import LocalCluster
    from shmdask.diagnostics.dashboard import DashboardPortWarning
    from shmdask.distributed import Client

    with warnings.catch_warnings():
        # a taken port is said in the banner, in our words, not as a Python warning
        warnings.simplefilter("ignore", DashboardPortWarning)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads,
                               memory_limit=memory_limit, listen=listen,
                               dashboard_address=dashboard_address)
    try:
        client = Client(cluster)
    except BaseException:
        _close_quietly(cluster)
        raise
    return cluster, client


@contextlib.contextmanager
def _sigint_ignored():
    """Ctrl-C pressed again while we clean up must not leave things half-closed."""
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


def _close_quietly(*things: Any) -> None:
    """Close client, listener and cluster, in that order, whatever fails."""
    with _sigint_ignored():
        for thing in things:
            if thing is None:
                continue
            try:
                thing.close()
            except Exception as exc:  # report, and go on closing the rest
                _err(f"shmdask run: error while closing {type(thing).__name__}: {exc}")


def run_command(script: str, args: Sequence[str], *, workers: int | None, threads: int,
                memory_limit: Any, report_dir: str | None, listen: str | None,
                dashboard_address: Any = None) -> int:
    """``shmdask run``: the whole life of one run; returns the exit status."""
    code = load_script(script)
    if report_dir is not None:
        try:
            os.makedirs(report_dir, exist_ok=True)
        except OSError as exc:
            raise CliError(f"can't create report directory {report_dir!r}: "
                           f"{exc.strerror or exc}", 2) from None
        if not os.access(report_dir, os.W_OK):
            raise CliError(f"report directory {report_dir!r} is not writable", 2)
    from shmdask.cluster.local_cluster import parse_memory_limit

    try:
        parse_memory_limit(memory_limit, max(1, workers or 1))
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--memory-limit'") from None

    set_script_path(script)
    started = time.time()
    try:
        cluster, client = _start_cluster(workers, threads, memory_limit, listen,
                                         dashboard_address)
    except KeyboardInterrupt:
        _err("shmdask run: interrupted while starting the cluster")
        return EXIT_INTERRUPTED
    except OSError as exc:
        where = f" at {listen}" if listen is not None else ""
        raise CliError(f"could not start the cluster{where}: {exc.strerror or exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CliError(f"could not start the cluster: {exc}") from None
    workers_info: dict | None = None
    try:
        if getattr(cluster, "dashboard_link", None):
            from shmdask.diagnostics.dashboard.service import moved_note

            _err(f"shmdask run: dashboard at {cluster.dashboard_link}"
                 f"{moved_note(dashboard_address, cluster.dashboard_link)}")
        address = getattr(cluster, "scheduler_address", None)
        if listen is not None and address:
            _err(f"shmdask run: remote workers may join at {address}: "
                 f"shmdask worker {address}")
            given_key = os.environ.get("SHMDASK_AUTH_KEY") or None
            for line in remote_hint(address, parse_address(listen)[1], given_key):
                _err(f"shmdask run: {line}")
        t0 = time.perf_counter()
        outcome = run_script(code, script, args)
        wall = time.perf_counter() - t0
    finally:
        # However the run ended, the cluster goes (this also joins the engine
        # thread, so every task-stream record is in after it).  The workers are
        # described first, for the report.
        with _sigint_ignored():
            with contextlib.suppress(Exception):
                workers_info = cluster.scheduler_info().get("workers")
            _close_quietly(client, cluster)
    stream = cluster.engine.task_stream  # the cluster samples its memory into it
    records = stream.records_since(0)
    memory = stream.memory_since(0)
    with contextlib.suppress(Exception):
        sys.stdout.flush()

    report = RunReport(script, wall, outcome, records, memory)
    if hasattr(getattr(cluster, "store", None), "shm_bytes") and memory:
        report.peak_shm = max(int(s.get("shm_bytes", 0)) for s in memory)
    summary = None
    try:
        from shmdask.diagnostics.gantt import plot_task_stream
        from shmdask.diagnostics.summary import summarize

        summary = summarize(records)
        if report_dir is not None and records:
            filename = report_filename(report_dir, started)
            title = f"shmdask run {os.path.basename(script)}"
            plot_task_stream(records, memory, filename=filename, title=title)
            report.plot = filename
            from shmdask.diagnostics.dashboard import write_report

            report.page = write_report(os.path.splitext(filename)[0] + ".html", records,
                                       memory, workers_info, title=title)
    except KeyboardInterrupt:
        report.plot_error = "interrupted"
    except Exception as exc:  # the run itself is over: a failed picture is a note
        report.plot_error = f"{type(exc).__name__}: {exc}"
    for line in format_summary(report, summary):
        _err(line)
    return outcome.status



RUN_EPILOG = """\b
Examples:
  shmdask run script.py                   as `python script.py`, on all cores
  shmdask run -w 2 script.py --its-flag   script options go after the script
  shmdask run --listen 0.0.0.0:8786 script.py   remote workers may join
"""


@click.command(epilog=RUN_EPILOG,
               short_help="Run a Python script with a LocalCluster as scheduler.",
             context_settings={"ignore_unknown_options": False,
                               "allow_interspersed_args": False})
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: one per core].")
@click.option("-t", "--threads-per-worker", type=click.IntRange(min=1), default=1,
              show_default=True, help="Threads in each worker process.")
@click.option("--memory-limit", default="auto", show_default=True, metavar="SIZE",
              help="Per-worker memory limit: '2GB', a fraction of RAM like 0.5, "
                   "'auto' or 'none'; a worker above it is restarted.")
@click.option("--report", "report_dir", default=DEFAULT_REPORT_DIR, show_default=True,
              metavar="DIR", help="Where the run's task-stream picture is written.")
@click.option("--no-report", is_flag=True, help="Write no picture (the summary is printed).")
@click.option("--listen", default=None, metavar="ADDRESS",
              help="Also accept remote workers at this address (host:port).")
@click.option("--dashboard-address", default=DEFAULT_DASHBOARD, show_default=True,
              metavar="ADDRESS", help=DASHBOARD_HELP)
@click.argument("script", metavar="SCRIPT")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[ARGS]...")
def run(script: str, args: tuple[str, ...], workers: int | None, threads_per_worker: int,
        memory_limit: str, report_dir: str, no_report: bool, listen: str | None,
        dashboard_address: str) -> int:
    """Run SCRIPT as `python SCRIPT ARGS` would, with a LocalCluster as its scheduler.

    Every compute() of the script runs on the cluster's worker processes.  At
    the end the cluster is closed, the task stream drawn into the report
    directory and a summary printed to stderr; the exit status is the
    script's (130 after Ctrl-C).
    """
    if listen is not None:
        try:
            _, host, port = parse_address(listen)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--listen'") from None
        check_resolvable(host, port)
    limit: Any = memory_limit
    if memory_limit.strip().lower() in ("none", "0", "unlimited"):
        limit = None
    else:
        with contextlib.suppress(ValueError):
            number = float(memory_limit)  # a plain number: bytes, or a fraction if <= 1
            limit = number if number <= 1 else int(number)
    return run_command(script, args, workers=workers, threads=threads_per_worker,
                       memory_limit=limit, report_dir=None if no_report else report_dir,
                       listen=listen, dashboard_address=dashboard_option(dashboard_address))
