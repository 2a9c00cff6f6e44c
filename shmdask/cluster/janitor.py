"""The janitor: a tiny process that removes a cluster's shared memory if the client dies.

In: a cluster id (and optionally the cluster's spill folder) on the command
line, and the read end of a pipe as stdin whose only writer is the client
process.  Out: nothing but unlinked files.

A SIGKILLed (or crashed) client runs no ``finally`` and no ``atexit``, so its
segments would stay in /dev/shm until reboot.  The kernel closes the client's
end of the pipe whatever the cause of death; the janitor then sees EOF and
unlinks every ``/dev/shm/shmdask-<cluster_id>-*``.  Worker processes exit on
their own EOF, but one may still be finishing a task and create a segment
after the first sweep, so it sweeps a few more times over a few seconds.  A
client that closes its cluster normally writes a goodbye byte first: one sweep.
The spill folder goes with the last sweep (it lives on disk: after a crash
it would outlive even a reboot).

Started as ``python -I -S .../janitor.py CLUSTER_ID [SPILL_DIR]`` (by file path, so neither
the shmdask package nor numpy is imported: it costs a bare interpreter).  It
ignores SIGINT: Ctrl-C in a terminal hits the whole process group, and the
janitor must outlive a client that dies of it.
"""

import os
import shutil
import signal
import sys
import time

SHM_DIR = "/dev/shm"
SWEEP_DELAYS = (0.0, 0.2, 0.5, 1.0, 2.0)  # seconds after EOF
GOODBYE = b"x"  # written by a client that closed its cluster normally


def sweep(prefix: str) -> int:
    """Unlink every /dev/shm entry that starts with ``prefix``; how many went."""
    removed = 0
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def wait_for_eof(fd: int) -> bool:
    """Block until the client's end closes; True if it said goodbye first."""
    said_goodbye = False
    while True:
        try:
            data = os.read(fd, 4096)
        except InterruptedError:
            continue
        except OSError:
            return said_goodbye
        if not data:
            return said_goodbye
        said_goodbye = said_goodbye or GOODBYE in data


def remove_spill_dir(path: str | None, cluster_id: str) -> None:
    """Remove the cluster's spill folder (only one named after this cluster)."""
    if path and os.path.basename(path) == f"shmdask-{cluster_id}-spill":
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list) -> int:
    if len(argv) not in (2, 3) or not argv[1].isalnum():
        sys.stderr.write("usage: janitor.py CLUSTER_ID (alphanumeric) [SPILL_DIR]\n")
        return 2
    cluster_id = argv[1]
    spill_dir = argv[2] if len(argv) == 3 else None
    prefix = f"shmdask-{cluster_id}-"

    def clean_all() -> None:
        sweep(prefix)
        remove_spill_dir(spill_dir, cluster_id)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Being terminated means the cluster is going down with us: clean up first.
    signal.signal(signal.SIGTERM, lambda *_: (clean_all(), os._exit(0)))
    if wait_for_eof(0):
        clean_all()  # the client cleaned up; this is a formality
        return 0
    start = time.monotonic()
    for delay in SWEEP_DELAYS:
        time.sleep(max(0.0, start + delay - time.monotonic()))
        clean_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
