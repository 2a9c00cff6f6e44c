"""One logging setup for everything shmdask reports that is not a user's mistake.

Library code logs to the ``shmdask`` logger tree (``shmdask.engine``,
``shmdask.cluster``, ``shmdask.tcp``, ``shmdask.worker``) and never prints;
user mistakes (a bad argument, a task that exceeds its memory limit) are
exceptions or warnings.  The command-line tools, which own their process's
stderr, call :func:`log_to_stderr` once to make those records visible.
"""

from __future__ import annotations

import logging
import sys

SCHEDULER_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
WORKER_FORMAT = "shmdask worker (pid %(process)d): %(message)s"


def log_to_stderr(fmt: str = SCHEDULER_FORMAT, level: int = logging.INFO) -> logging.Logger:
    """Send the ``shmdask`` logger tree to stderr with ``fmt`` (once per process)."""
    root = logging.getLogger("shmdask")
    if not any(getattr(h, "_shmdask_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._shmdask_cli = True
        handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)
        root.setLevel(level)
    return root
