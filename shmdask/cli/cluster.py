"""``shmdask scheduler`` and ``shmdask worker ADDRESS``: dask's hand-started cluster.

In: options.  Out: a scheduler (a LocalCluster plus a TCP listener) serving
until Ctrl-C / SIGTERM, or worker processes that join one.  The banner says
where peers connect and how they prove they hold the cluster key (the key
itself is never printed).
"""

from __future__ import annotations

import signal
import ssl
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import click

from shmdask.cli.common import (
    DASHBOARD_HELP,
    DEFAULT_DASHBOARD,
    DEFAULT_PORT,
    CliError,
    check_resolvable,
    dashboard_option,
    parse_address,
    remote_hint,
)
from shmdask.logs import log_to_stderr


def serve_scheduler(host: str = "127.0.0.1", port: int = 8786, n_workers: int = 0,
                    auth_key: str | bytes | None = None,
                    ready_callback: Callable[[str], None] | None = None,
                    dashboard_address: Any = DEFAULT_DASHBOARD, **options: Any) -> None:
    """Run a scheduler (a LocalCluster with ``n_workers`` local workers) and a
    listener until SIGINT/SIGTERM; what ``shmdask scheduler`` runs."""
    from shmdask.cluster.address import format_address
    from shmdask.cluster.local_cluster import LocalCluster
    from shmdask.cluster.tcp_server import attach_listener
    from shmdask.diagnostics.dashboard import DashboardPortWarning
    from shmdask.diagnostics.dashboard.service import moved_note

    log_to_stderr()
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    with warnings.catch_warnings():  # a taken port is said in the banner below
        warnings.simplefilter("ignore", DashboardPortWarning)
        cluster = LocalCluster(n_workers=n_workers, dashboard_address=dashboard_address)
    try:
        listener = attach_listener(cluster, format_address("tcp", host, port), auth_key,
                                   **options)
        try:
            print(f"Scheduler started at {listener.address}", flush=True)
            print("\n".join(banner(listener.address, host, listener.key_path,
                                   options.get("tls_cert"))), flush=True)
            if cluster.dashboard_link:
                print(f"Dashboard at {cluster.dashboard_link}"
                      f"{moved_note(dashboard_address, cluster.dashboard_link)}", flush=True)
            if ready_callback is not None:
                ready_callback(listener.address)
            while not stop.wait(0.2):
                if cluster.closed:  # a client called shutdown()
                    break
            print("Scheduler stopping", flush=True)
        finally:
            listener.close()
    finally:
        cluster.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)





def banner(address: str, host: str, key_path: Any, tls_cert: str | None) -> list[str]:
    """What the scheduler says after its address: how peers connect, how they
    prove they hold the key, and whether the traffic is encrypted."""
    from shmdask.cli.common import is_loopback

    ca = f" --tls-ca {tls_cert}" if tls_cert else ""
    where = (f"key file {key_path}" if key_path
             else "the key you gave (auth_key / SHMDASK_AUTH_KEY)")
    lines = [f"Connect workers with:  shmdask worker {address}{ca}",
             f"Connect clients with:  Client({address!r})"
             + (f"  (with SHMDASK_TLS_CA={tls_cert})" if tls_cert else ""),
             f"Peers prove they hold the cluster key: {where}"]
    if tls_cert:
        lines.append("Traffic is encrypted with TLS.")
    elif not is_loopback(host):
        lines.append("Traffic is authenticated but NOT encrypted: anyone on the network "
                     "can read the data.  Use --tls-cert/--tls-key on untrusted networks.")
    return lines


def tls_options(fn: Callable) -> Callable:
    """--tls-cert/--tls-key/--tls-ca, also read from $SHMDASK_TLS_*."""
    for name, env, text in reversed([
        ("--tls-cert", "SHMDASK_TLS_CERT", "Certificate (PEM) this process presents; on a "
         "scheduler it turns TLS on."),
        ("--tls-key", "SHMDASK_TLS_KEY", "Private key of --tls-cert, if not in its file."),
        ("--tls-ca", "SHMDASK_TLS_CA", "CA certificate (PEM) that the other side's "
         "certificate must be signed by; a worker needs it for a tls:// address, a "
         "scheduler given one requires client certificates."),
    ]):
        fn = click.option(name, default=None, envvar=env, metavar="PEM",
                          type=click.Path(exists=True, dir_okay=False),
                          help=f"{text} [env: {env}]")(fn)
    return fn


@click.command(short_help="Start a scheduler that workers and clients join over TCP.",
             epilog="""\b
Examples:
  shmdask scheduler                          127.0.0.1:8786, this machine only
  shmdask scheduler --port 0 --workers 2     a free port, two local workers
  shmdask scheduler --host 0.0.0.0 --auth-key KEY   other hosts may join
  shmdask scheduler --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem   ... over TLS
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
              metavar="ADDRESS", help=DASHBOARD_HELP)
@tls_options
def scheduler(host: str, port: int, n_workers: int, auth_key: str | None,
              tls_cert: str | None, tls_key: str | None, tls_ca: str | None,
              dashboard_address: str) -> int:
    """Start a scheduler that workers and clients join over TCP; Ctrl-C stops it."""
    dashboard = dashboard_option(dashboard_address)

    def ready(address: str) -> None:
        # serve_scheduler has printed the address and how to connect on this host.
        for line in remote_hint(address, host, auth_key):
            click.echo(line)
        sys.stdout.flush()

    try:
        serve_scheduler(host, port, n_workers, auth_key, ready, tls_cert=tls_cert,
                        tls_key=tls_key, tls_ca=tls_ca, dashboard_address=dashboard)
    except ssl.SSLError as exc:
        raise CliError(f"cannot use the TLS certificate: {exc}", 2) from None
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc), 2) from None
    return 0


@click.command(short_help="Join a scheduler as a worker.", epilog="""\b
Examples:
  shmdask worker 127.0.0.1:8786                 one worker process
  shmdask worker 10.0.0.5:8786 --nworkers 2 --auth-key KEY
  shmdask worker tls://10.0.0.5:8786 --tls-ca ca.pem   a scheduler using TLS
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
@tls_options
def worker(address: str, nworkers: int, name: str | None, auth_key: str | None,
           nthreads: int, reconnect_timeout: float, tls_cert: str | None,
           tls_key: str | None, tls_ca: str | None) -> int:
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
        return run_worker(address, nworkers, name, auth_key, nthreads, reconnect_timeout,
                          tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
    except ssl.SSLError as exc:
        raise CliError(f"cannot use the TLS certificates: {exc}", 2) from None
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc), 2) from None
