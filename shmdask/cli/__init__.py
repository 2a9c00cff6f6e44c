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
    of :mod:`shmdask.cli.cluster` / :mod:`shmdask.cluster.remote_worker`.

Why shaped so: whatever the user got wrong (a missing script, a syntax error,
an unknown option, a bad address) is found before any process or shared
memory exists; what can only fail later (a port in use) stops whatever had
started.  Either way it is reported in one line (``shmdask: error: ...``) and
nothing is left behind.  Click's usage errors keep their exit status 2.  The
work proper sits in small functions (``load_script``, ``run_script``,
``format_summary``) that tests can call without a terminal.

Modules: :mod:`.common` (errors, addresses), :mod:`.run` (``shmdask run``),
:mod:`.cluster` (``shmdask scheduler``, ``shmdask worker``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

import shmdask
from shmdask.cli.cluster import scheduler, serve_scheduler, worker
from shmdask.cli.common import (
    EXIT_INTERRUPTED,
    CliError,
    _err,
    check_resolvable,
    parse_address,
    remote_hint,
)
from shmdask.cli.run import (
    RunReport,
    ScriptOutcome,
    exit_status,
    format_summary,
    load_script,
    report_filename,
    run,
    run_script,
    trim_traceback,
)

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

cli.add_command(run)
cli.add_command(scheduler)
cli.add_command(worker)


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


__all__ = ["cli", "main", "invoke", "CliError", "RunReport", "ScriptOutcome", "check_resolvable",
           "exit_status", "format_summary", "load_script", "parse_address", "remote_hint",
           "report_filename", "run_script", "serve_scheduler", "trim_traceback"]
