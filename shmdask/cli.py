"""The ``shmdask`` command: run a script on a cluster, or hand-start a cluster over TCP.

In: a command line.  Out: an exit status, and on stderr a few lines a person reads.

``shmdask run SCRIPT [ARGS]...``
    Runs an unchanged dask-style script as ``python SCRIPT ARGS`` would, with a
    :class:`~shmdask.cluster.local_cluster.LocalCluster` started first and a
    ``Client`` on it set as the default scheduler, so every ``compute()`` in the
    script runs on worker processes.  When the script ends -- normally, by an
    exception, by ``sys.exit`` or by Ctrl-C -- the cluster is closed, the run's
    task stream is drawn (``plot_task_stream``) into the report directory, and a
    summary goes to stderr.  The exit status is the script's own (an uncaught
    exception is 1, Ctrl-C is 130, SIGTERM is 143), and the script's traceback is
    printed the way Python prints it: the frames of this runner are cut off.

``shmdask scheduler`` / ``shmdask worker ADDRESS``
    The hand-started cluster of dask's tutorial (``dask-scheduler`` and
    ``dask-worker``): thin wrappers over ``serve_scheduler`` and ``run_worker``
    of :mod:`shmdask.cluster.tcp` / :mod:`shmdask.cluster.remote_worker`.

Why shaped so: whatever the user got wrong (a missing script, a syntax error,
an unknown option, a bad address) is found before any process or shared
memory exists; what can only fail later (a port in use) stops whatever had
started.  Either way it is reported in one line (``shmdask: error: ...``) and
nothing is left behind.  Click's usage errors keep their exit status 2.  The
work proper sits in small functions (``load_script``, ``run_script``,
``format_summary``) that tests can call without a terminal.
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
from shmdask.units import format_bytes, format_seconds

DEFAULT_REPORT_DIR = "shmdask-report"
DEFAULT_PORT = 8786
DEFAULT_DASHBOARD = ":8787"
EXIT_INTERRUPTED = 128 + signal.SIGINT  # what a shell reports for a Ctrl-C'd program
EXIT_TERMINATED = 128 + signal.SIGTERM


def _err(message: str) -> None:
    """One line to the real stderr (the script may have replaced ``sys.stderr``)."""
    stream = sys.__stderr__ or sys.stderr
    if stream is None:  # pragma: no cover - no stderr at all (pythonw)
        return
    with contextlib.suppress(OSError, ValueError):
        stream.write(message + "\n")
        stream.flush()


class CliError(click.ClickException):
    """A mistake of the user's that is not a usage error: exit status 1 by default."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


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
    """The lines printed after a run.  ``summary`` is ``gantt.summarize(records)``."""
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
        from shmdask.diagnostics.gantt import plot_task_stream, summarize

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


# ----------------------------------------------------------------------------- addresses


def parse_address(address: str) -> tuple[str, str, int]:
    """``'127.0.0.1:8786'``, ``'tcp://host:port'`` or ``'tls://[::1]:port'`` ->
    ``(scheme, host, port)``.  Stricter than the transport's parser on purpose: on
    a command line a forgotten port is a mistake, not a wish for the default."""
    text = address.strip()
    scheme = "tcp"
    if "://" in text:
        scheme, text = text.split("://", 1)
        if scheme not in ("tcp", "tls"):
            raise ValueError(f"{address!r}: unknown scheme {scheme!r} (use tcp:// or tls://)")
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 host needs brackets
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{address!r} is not an address like 127.0.0.1:8786")
    return scheme, host, int(port_text)


def dashboard_option(text: str) -> str | None:
    """``--dashboard-address``: an address, or 'none' for no dashboard; checked now."""
    from shmdask.diagnostics.dashboard import parse_dashboard_address

    if text.strip().lower() in ("none", "off", "no", "false", ""):
        return None
    try:
        parse_dashboard_address(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--dashboard-address'") from None
    return text


def check_resolvable(host: str, port: int) -> None:
    """A host name that does not resolve is reported now, not after minutes of retries."""
    import socket

    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CliError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


# ----------------------------------------------------------------------------- click

EXAMPLES = """\b
Examples:
  shmdask run analysis.py --input data.npy    run a script on worker processes
  shmdask run --workers 4 --no-report job.py  four workers, no task-stream picture
  shmdask scheduler --port 8786               hand-start a scheduler ...
  shmdask worker 127.0.0.1:8786               ... and a worker joining it
"""


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(shmdask.__version__, "--version", "-V", prog_name="shmdask")
def cli() -> None:
    """shmdask: run dask-style Python on worker processes that share memory."""


RUN_EPILOG = """\b
Examples:
  shmdask run script.py                   as `python script.py`, on all cores
  shmdask run -w 2 script.py --its-flag   script options go after the script
  shmdask run --listen 0.0.0.0:8786 script.py   remote workers may join
"""


@cli.command(epilog=RUN_EPILOG, short_help="Run a Python script with a LocalCluster as scheduler.",
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
              metavar="ADDRESS", help="Where the live dashboard listens (host:port; ':0' any "
                                      "free port; 'none' for no dashboard).")
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


@cli.command(short_help="Start a scheduler that workers and clients join over TCP.",
             epilog="""\b
Examples:
  shmdask scheduler                          127.0.0.1:8786, this machine only
  shmdask scheduler --port 0 --workers 2     a free port, two local workers
  shmdask scheduler --host 0.0.0.0 --auth-key KEY   other hosts may join
""")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; 127.0.0.1 keeps the cluster on this machine.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--workers", "n_workers", type=click.IntRange(min=0), default=0,
              show_default=True, help="Local worker processes to start with the scheduler.")
@click.option("--auth-key", default=None, envvar="SHMDASK_AUTH_KEY", metavar="KEY",
              help="Key peers must prove they hold [default: a new key, in a user-only key "
                   "file].  Prefer SHMDASK_AUTH_KEY: other users can read command lines.")
@click.option("--dashboard-address", default=DEFAULT_DASHBOARD, show_default=True,
              metavar="ADDRESS", help="Where the live dashboard listens (host:port; ':0' any "
                                      "free port; 'none' for no dashboard).")
def scheduler(host: str, port: int, n_workers: int, auth_key: str | None,
              dashboard_address: str) -> int:
    """Start a scheduler that workers and clients join over TCP; Ctrl-C stops it."""
    from shmdask.cluster.tcp import serve_scheduler

    dashboard = dashboard_option(dashboard_address)

    def ready(address: str) -> None:
        # serve_scheduler has printed the address and how to connect on this host.
        for line in remote_hint(address, host, auth_key):
            click.echo(line)
        sys.stdout.flush()

    try:
        serve_scheduler(host, port, n_workers, auth_key, ready, dashboard_address=dashboard)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc), 2) from None
    return 0


def remote_hint(address: str, host: str, auth_key: str | None) -> list[str]:
    """For a scheduler reachable from other hosts: how peers there join.

    On this host peers find the key by themselves; elsewhere they must be given
    it, and the key itself is never printed (terminals and logs are shared)."""
    if _is_loopback(host):
        return []
    import socket

    scheme, bound, port = parse_address(address)
    if bound in ("0.0.0.0", "::", ""):
        bound = socket.gethostname()
    there = f"{scheme}://{bound}:{port}" if ":" not in bound else f"{scheme}://[{bound}]:{port}"
    if auth_key is not None:
        key = "KEY being the key you gave"
    else:
        from shmdask.cluster.comm import key_file

        key = f"KEY being the contents of {key_file(host, port)}"
    return [f"From other hosts:      shmdask worker {there} --auth-key KEY  ({key}; "
            f"or set SHMDASK_AUTH_KEY=KEY there, which Client({there!r}) reads too)"]


@cli.command(short_help="Join a scheduler as a worker.", epilog="""\b
Examples:
  shmdask worker 127.0.0.1:8786                 one worker process
  shmdask worker 10.0.0.5:8786 --nworkers 2 --auth-key KEY
""")
@click.argument("address")
@click.option("--nworkers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes to start.")
@click.option("--name", default=None,
              help="Worker name (with --nworkers: NAME-0, NAME-1, ...) [default: given by "
                   "the scheduler].")
@click.option("--auth-key", default=None, envvar="SHMDASK_AUTH_KEY", metavar="KEY",
              help="The scheduler's key [default: this user's key file on the scheduler's "
                   "host].  Prefer SHMDASK_AUTH_KEY: other users can read command lines.")
@click.option("--nthreads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads per worker process.")
@click.option("--reconnect-timeout", type=click.FloatRange(min=0), default=60.0,
              show_default=True, metavar="SECONDS",
              help="How long to keep trying to reach the scheduler before giving up.")
def worker(address: str, nworkers: int, name: str | None, auth_key: str | None,
           nthreads: int, reconnect_timeout: float) -> int:
    """Join the scheduler at ADDRESS and run its tasks; Ctrl-C or SIGTERM leaves.

    The exit status is 0 after leaving on a signal, 1 if the scheduler could
    not be reached for --reconnect-timeout seconds, 2 if it refused the key.
    """
    try:
        _, host, port = parse_address(address)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'ADDRESS'") from None
    check_resolvable(host, port)
    from shmdask.cluster.remote_worker import run_worker

    try:
        # run_worker says on stderr, in one line, why it gives up.
        return run_worker(address, nworkers, name, auth_key, nthreads, reconnect_timeout)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc), 2) from None


# ----------------------------------------------------------------------------- entry


def main(argv: Sequence[str] | None = None, prog_name: str = "shmdask") -> None:
    """The console script: errors in one line, the command's status as exit status."""
    status = invoke(argv, prog_name)
    sys.exit(status)


def invoke(argv: Sequence[str] | None, prog_name: str = "shmdask") -> int:
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name=prog_name,
                      standalone_mode=False)
    except click.UsageError as exc:
        hint = ""
        if exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        _err(f"{prog_name}: error: {exc.format_message()}{hint}")
        return exc.exit_code
    except click.ClickException as exc:
        _err(f"{prog_name}: error: {exc.format_message()}")
        return exc.exit_code
    except click.Abort:
        _err(f"{prog_name}: interrupted")
        return EXIT_INTERRUPTED
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    main()
