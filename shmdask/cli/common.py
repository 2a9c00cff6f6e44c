"""What every ``shmdask`` command shares: one-line errors, exit statuses, addresses."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys

import click

from shmdask.cluster import address

EXIT_INTERRUPTED = 128 + signal.SIGINT  # what a shell reports for a Ctrl-C'd program
EXIT_TERMINATED = 128 + signal.SIGTERM
DEFAULT_PORT = address.DEFAULT_PORT


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



DEFAULT_DASHBOARD = ":8787"
DASHBOARD_HELP = ("Where the live dashboard listens (host:port; ':0' any free port; 'none' for "
                  "no dashboard).")


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


def parse_address(text: str) -> tuple[str, str, int]:
    """A scheduler address given on a command line -> ``(scheme, host, port)``;
    stricter than in Python: a forgotten host or port is a mistake here."""
    return address.parse_address(text, require_port=True)


def check_resolvable(host: str, port: int) -> None:
    """A host name that does not resolve is reported now, not after minutes of retries."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CliError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def remote_hint(address: str, host: str, auth_key: str | None) -> list[str]:
    """For a scheduler reachable from other hosts: how peers there join.

    On this host peers find the key by themselves; elsewhere they must be given
    it, and the key itself is never printed (terminals and logs are shared)."""
    if is_loopback(host):
        return []

    scheme, bound, port = parse_address(address)
    if bound in ("0.0.0.0", "::", ""):
        bound = socket.gethostname()
    there = f"{scheme}://{bound}:{port}" if ":" not in bound else f"{scheme}://[{bound}]:{port}"
    if auth_key is not None:
        key = "KEY being the key you gave"
    else:
        from shmdask.cluster.auth import key_file

        key = f"KEY being the contents of {key_file(host, port)}"
    return [f"From other hosts:      shmdask worker {there} --auth-key KEY  ({key}; "
            f"or set SHMDASK_AUTH_KEY=KEY there, which Client({there!r}) reads too)"]
